"""Prediction ids that any replica can verify: no shared state, one shared key.

An id is ``VERSION.TIME.CLASS.NONCE.TAG``, e.g.
``v3.18f3a2b4c5d.7.55f519a98febe519.ef5e759b0d35474e4a6efe8e4091832d``:

* ``VERSION``: the model version that made the prediction;
* ``TIME``: when it was made, milliseconds since the epoch, in hex;
* ``CLASS``: the index of the predicted class in that version's classes;
* ``NONCE``: 64 random bits, so two ids never collide;
* ``TAG``: a 128-bit keyed BLAKE2b MAC (RFC 7693's keyed mode, a MAC by design, three
  times cheaper per row than HMAC-SHA256) of the model name and everything before it.

So a replica that did not make a prediction can still accept feedback for it and learn
the version and predicted class, and nobody without the key can make up an id. The key
(:func:`load_id_key`) is ``$DATAWHEEL_FEEDBACK_KEY``, the file
``$DATAWHEEL_FEEDBACK_KEY_FILE`` names (a mounted Secret; a file that does not exist counts
as unset), or else a random key kept in the store at ``serving/NAME/prediction-id.key``,
created by whichever replica comes first. Ids of the format before this one (32 hex
characters, :func:`is_legacy_id`) carry nothing: only the process that knows them (its
prediction index) can accept them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from datawheel.errors import DatawheelError
from datawheel.storage import Store, validate_name

__all__ = [
    "KEY_ENV",
    "IssuedId",
    "PredictionIds",
    "id_key_path",
    "is_legacy_id",
    "load_id_key",
]

KEY_ENV = "DATAWHEEL_FEEDBACK_KEY"
_MIN_KEY_BYTES = 16
_NONCE_BYTES = 8
_TAG_BYTES = 16
_ID_RE = re.compile(
    r"(v[1-9][0-9]{0,8})\.([0-9a-f]{1,12})\.(0|[1-9][0-9]{0,5})\.[0-9a-f]{16}\.[0-9a-f]{32}"
)
_LEGACY_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class IssuedId:
    """What a verified id says about its prediction."""

    version: str
    issued_at: float  # seconds since the epoch
    class_index: int


def is_legacy_id(pid: str) -> bool:
    """An id of the earlier format: 128 random bits, 32 hex characters, nothing to verify."""
    return _LEGACY_RE.fullmatch(pid) is not None


class PredictionIds:
    """Issues and verifies the prediction ids of one model with one key."""

    def __init__(self, model: str, key: bytes, *, source: str = "this process alone") -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise DatawheelError(
                f"the prediction id key is {len(key)} bytes, fewer than {_MIN_KEY_BYTES}",
                f"use a random key of 32 bytes or more, e.g. {KEY_ENV}=$(openssl rand -hex 32)",
            )
        self.model = validate_name(model, "model name")
        self.source = source  # where the key came from, for the start-up line
        # the model name is part of what is signed, so one key can serve several models
        self._mac = hashlib.blake2b(key=key, digest_size=_TAG_BYTES, person=b"datawheel-id")
        self._mac.update(self.model.encode() + b"\0")

    def _tag(self, body: str) -> str:
        mac = self._mac.copy()
        mac.update(body.encode())
        return mac.hexdigest()

    def issue(self, version: str, ts: float, class_indices: Sequence[int]) -> list[str]:
        """One id per row predicted at ``ts`` by ``version``: one ``os.urandom`` per call."""
        nonces = os.urandom(_NONCE_BYTES * len(class_indices)).hex()
        prefix = f"{version}.{int(ts * 1000):x}."
        base, ids = self._mac, []
        for k, index in enumerate(class_indices):
            body = f"{prefix}{index}.{nonces[16 * k : 16 * k + 16]}"
            mac = base.copy()
            mac.update(body.encode())
            ids.append(f"{body}.{mac.hexdigest()}")
        return ids

    def verify(self, pid: str) -> IssuedId | None:
        """What ``pid`` says, if this key issued it for this model; else None."""
        found = _ID_RE.fullmatch(pid)
        if found is None:
            return None
        body, tag = pid[: -2 * _TAG_BYTES - 1], pid[-2 * _TAG_BYTES :]
        if not hmac.compare_digest(self._tag(body), tag):
            return None
        version, ms, index = found.groups()
        return IssuedId(version, int(ms, 16) / 1000, int(index))


def id_key_path(model: str) -> str:
    """The store key of ``model``'s prediction id key (when no key is configured)."""
    return f"serving/{validate_name(model, 'model name')}/prediction-id.key"


def _configured_key(environ: Mapping[str, str]) -> tuple[bytes, str] | None:
    """``$DATAWHEEL_FEEDBACK_KEY`` or the file ``$DATAWHEEL_FEEDBACK_KEY_FILE`` names.

    A file that does not exist is no key: that is how Kubernetes mounts an optional Secret
    that was not created. Any other reason it cannot be read is an error.
    """
    value = environ.get(KEY_ENV, "").strip()
    if value:
        return value.encode(), f"${KEY_ENV}"
    path = environ.get(f"{KEY_ENV}_FILE", "").strip()
    if not path:
        return None
    try:
        value = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DatawheelError(
            f"{KEY_ENV}_FILE={path!r} cannot be read ({reason})",
            f"mount the Secret at that path or unset {KEY_ENV}_FILE",
        ) from None
    if not value:
        raise DatawheelError(
            f"{KEY_ENV}_FILE={path!r} is empty",
            "put a random key in the Secret, e.g. $(openssl rand -hex 32)",
        )
    return value.encode(), f"{KEY_ENV}_FILE={path}"


def load_id_key(
    store: Store, model: str, environ: Mapping[str, str] = os.environ
) -> tuple[bytes, str]:
    """The key prediction ids are signed with, and where it came from.

    Every replica of a model must use the same key, or feedback for one replica's ids is
    refused (404) by the others. Without ``$DATAWHEEL_FEEDBACK_KEY`` or
    ``$DATAWHEEL_FEEDBACK_KEY_FILE``, the key is the text kept in the store at
    :func:`id_key_path`, created (exclusively, so concurrent first starts agree) by the first
    replica: whoever may read the store may already write the ledger. Copying that text into
    a Secret later keeps every id issued so far valid.
    """
    configured = _configured_key(environ)
    if configured is not None:
        return configured
    key = id_key_path(model)
    store.create_bytes(key, os.urandom(32).hex().encode())  # False: another replica was first
    text = store.get_bytes(key).strip()
    if len(text) < _MIN_KEY_BYTES:
        raise DatawheelError(
            f"the prediction id key at {store.uri} {key} is {len(text)} bytes",
            f"delete it to have a new one made (ids signed with it stop verifying), or set "
            f"{KEY_ENV}",
        )
    source = f"the store ({store.uri} {key})"
    if path := environ.get(f"{KEY_ENV}_FILE", "").strip():
        source += f"; {KEY_ENV}_FILE={path} does not exist (no Secret)"
    return text, source
