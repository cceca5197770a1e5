"""The Store seam: every dataset, model and ledger byte goes through it.

Two implementations share one contract: :class:`datawheel.storage.local.LocalStore`
(``file://``, the embedded default ``./.datawheel``) and
:class:`datawheel.storage.s3.S3Store` (``s3://bucket/prefix`` through the ``minio`` SDK).

- Every ``put`` is atomic: a reader sees the whole old object or the whole new one.
- ``create_bytes`` is an exclusive create and ``replace_bytes`` a compare-and-swap against
  the tag ``get_tagged`` returned. Whatever creates or moves something shared (a model
  version number, an alias, a dataset's reference) goes through them, so two writers
  never silently overwrite each other.
- Multi-object writes (a dataset or model version) are made atomic one level up by
  writing a commit marker last.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Protocol, runtime_checkable

from datawheel.errors import DatawheelError

__all__ = [
    "DEFAULT_STORE_URI",
    "KeyNotFoundError",
    "Store",
    "StoreError",
    "delete_quietly",
    "get_json",
    "put_json",
    "to_json_bytes",
]

DEFAULT_STORE_URI = "file://.datawheel"


class StoreError(DatawheelError):
    """The store could not be reached or refused an operation."""


class KeyNotFoundError(StoreError):
    """A key that was asked for does not exist."""


@runtime_checkable
class Store(Protocol):
    """A flat key/value object store with ``/``-separated keys."""

    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (recursively), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        ...

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None: ...

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None: ...

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet; ``False`` (nothing written) if it does."""
        ...

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and a tag that changes whenever the object does."""
        ...

    def replace_bytes(self, key: str, data: bytes, tag: str) -> bool:
        """Overwrite ``key`` only if its tag is still ``tag``, else ``False`` (nothing written)."""
        ...


def to_json_bytes(obj: object) -> bytes:
    """Pretty, key-sorted, standard JSON: ``NaN`` and ``Infinity`` are refused, not written."""
    try:
        return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False).encode()
    except ValueError as exc:
        raise StoreError(
            f"refusing to write non-standard JSON ({exc})",
            "replace NaN and infinite values with null before writing",
        ) from None


def put_json(store: Store, key: str, obj: object) -> None:
    """Write ``obj`` as pretty, key-sorted JSON (atomic, like every put)."""
    store.put_bytes(key, to_json_bytes(obj))


def get_json(store: Store, key: str) -> object:
    """Read a JSON document; a document that does not parse is a one-line :class:`StoreError`."""
    data = store.get_bytes(key)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"{store.uri.rstrip('/')}/{key} is not valid JSON ({exc})",
            "the record is corrupt; restore it, or delete it and re-create it with datawheel",
        ) from None


def delete_quietly(store: Store, keys: list[str]) -> None:
    """Best-effort cleanup after a failed multi-object write; never raises."""
    for key in keys:
        with contextlib.suppress(Exception):
            store.delete(key)
