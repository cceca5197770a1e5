"""Model versions in the store: register, list, resolve and fetch, safe under concurrency.

Layout::

    models/NAME/versions/vN/claim.json     <- created exclusively: reserves number N
    models/NAME/versions/vN/<files>        model.ts, model.onnx, model_int8.onnx, model.pt, ...
    models/NAME/versions/vN/card.json      <- created exclusively, last: the commit marker

A version exists once its card exists. Two writers never get the same number, because a
number is taken by an exclusive create of its claim; a writer that loses moves on to the
next. Registering is idempotent, keyed by the model's identity (its weights and transform,
:mod:`datawheel.registry.identity`; ``model.ts`` itself differs on every export): a retry
after a partial success finds its own claim (or its committed card) and completes or
returns it, and a re-run that trained the same model again gets the version that holds it
(``reused``), so neither makes a second, identical version. A write that fails (a full
disk) removes what it uploaded and its claim, so the store is left as it was. The card
lists every file's SHA-256, and :func:`fetch` refuses a version whose bytes do not match.
A number whose writer died before its card stays a gap; it is never shown.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datawheel
from datawheel.errors import DatawheelError
from datawheel.registry.identity import model_identity
from datawheel.registry.parsing import (
    VERSION_RE,
    CorruptRecordError,
    parse_record,
    version_number,
)
from datawheel.storage import (
    KeyNotFoundError,
    Store,
    StoreError,
    delete_quietly,
    to_json_bytes,
    validate_key,
    validate_name,
)
from datawheel.storage.files import sha256_file

__all__ = [
    "ChecksumError",
    "ModelVersion",
    "code_version",
    "fetch",
    "find_version",
    "list_models",
    "list_versions",
    "read_card",
    "register",
]

_MAX_CLAIM_TRIES = 1000


class ChecksumError(DatawheelError):
    """A model's bytes do not match its card; it is never loaded."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    card: dict[str, Any]
    reused: bool = dataclasses.field(default=False, compare=False)  # register found it

    @property
    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.card.get("metrics", {}).items()}


def code_version() -> str:
    """datawheel's version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{datawheel.__version__}+{sha}" if sha else datawheel.__version__


def _prefix(name: str, version: str) -> str:
    return f"models/{name}/versions/{version}"


def _card_fix(name: str, version: str) -> str:
    return (
        f"restore {_prefix(name, version)}/card.json from a backup, or delete the folder "
        f"{_prefix(name, version)} to drop that version"
    )


def read_card(store: Store, name: str, version: str) -> ModelVersion:
    """The committed version ``name:version``; KeyNotFoundError if it has no card."""
    key = f"{_prefix(name, version)}/card.json"
    card = parse_record(
        store,
        key,
        store.get_bytes(key),
        required={"version": str, "files": dict, "checksum": str},
        fix=_card_fix(name, version),
    )
    if card["version"] != version:
        raise CorruptRecordError(
            f"{store.uri.rstrip('/')}/{key} says it is {card['version']!r}, not {version!r}",
            _card_fix(name, version),
        )
    return ModelVersion(name, version, card)


def _numbers(store: Store, name: str) -> dict[str, set[str]]:
    """Every version folder of ``name`` and the files in it (claims and gaps included)."""
    found: dict[str, set[str]] = {}
    for key in store.list(f"models/{name}/versions"):
        parts = key.split("/")
        if len(parts) == 5 and VERSION_RE.match(parts[3]):
            found.setdefault(parts[3], set()).add(parts[4])
    return found


def list_versions(store: Store, name: str) -> list[ModelVersion]:
    """Committed versions of ``name``, oldest first; a corrupt card is a one-line error."""
    folders = _numbers(store, name)
    out = [read_card(store, name, v) for v, files in folders.items() if "card.json" in files]
    return sorted(out, key=lambda m: version_number(m.version))


def list_models(store: Store) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list("models") if k.count("/") >= 3})


def find_version(store: Store, name: str, checksum: str, identity: str = "") -> ModelVersion | None:
    """The committed version whose ``model.ts`` has SHA-256 ``checksum``, or whose card's
    ``identity`` is ``identity`` (the same weights and transform), if any."""
    for version, files in sorted(_numbers(store, name).items(), key=lambda i: version_number(i[0])):
        if "card.json" not in files:
            continue
        try:
            mv = read_card(store, name, version)
        except (CorruptRecordError, KeyNotFoundError):
            continue  # a corrupt neighbour does not block registering
        if mv.card["checksum"] == checksum or (identity and mv.card.get("identity") == identity):
            return mv
    return None


def _claim_owner(store: Store, name: str, version: str) -> str | None:
    try:
        data = store.get_bytes(f"{_prefix(name, version)}/claim.json")
        claim = parse_record(store, "claim", data, required={"checksum": str}, fix="")
    except (KeyNotFoundError, CorruptRecordError):
        return None
    return str(claim.get("identity") or claim["checksum"])


def _claim(store: Store, name: str, checksum: str, identity: str) -> str:
    """A version number for the model ``identity``: its own earlier claim, or the next free
    one."""
    folders = _numbers(store, name)
    for version in sorted(folders, key=version_number):
        if "card.json" not in folders[version] and _claim_owner(store, name, version) == identity:
            return version  # a retry of a register that died before its card: resume it
    n = max((version_number(v) for v in folders), default=0) + 1
    claim = to_json_bytes(
        {
            "checksum": checksum,
            "identity": identity,
            "claimed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "by": f"{socket.gethostname()}:{os.getpid()}",
        }
    )
    for _ in range(_MAX_CLAIM_TRIES):
        version = f"v{n}"
        if store.create_bytes(f"{_prefix(name, version)}/claim.json", claim):
            return version
        if _claim_owner(store, name, version) == identity:
            return version  # an identical register is running (or our own PUT was retried)
        n += 1
    raise StoreError(
        f"could not claim a version number for model {name!r} in {_MAX_CLAIM_TRIES} tries",
        "too many registrations at once; retry the register step",
    )


def register(
    store: Store,
    name: str,
    model_dir: str | Path,
    *,
    card: dict[str, Any],
    extra_files: Mapping[str, Path] | None = None,
) -> ModelVersion:
    """Upload every file in ``model_dir`` (plus ``extra_files``, stored under the given names)
    as a new version, the card last; or return the version that already holds this model
    (the same weights and transform), marked ``reused``.
    """
    validate_name(name, "model name")
    src = Path(model_dir)
    uploads = {p.name: p for p in sorted(src.iterdir()) if p.is_file() and p.name != "card.json"}
    uploads.update({validate_key(k): Path(v) for k, v in (extra_files or {}).items()})
    uploads.pop("claim.json", None)
    if "model.ts" not in uploads:
        raise DatawheelError(f"{src} has no model.ts", "export the model before registering it")
    checksums = {fname: sha256_file(path) for fname, path in uploads.items()}
    identity = model_identity(uploads)
    existing = find_version(store, name, checksums["model.ts"], identity)
    if existing is not None:
        return dataclasses.replace(existing, reused=True)
    version = _claim(store, name, checksums["model.ts"], identity)
    prefix = _prefix(name, version)
    full = {
        **card,
        "name": name,
        "version": version,
        "files": checksums,
        "checksum": checksums["model.ts"],
        "identity": identity,
        "code_version": card.get("code_version") or code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _upload(store, prefix, uploads)
    if not store.create_bytes(f"{prefix}/card.json", to_json_bytes(full)):
        mv = read_card(store, name, version)  # an identical register committed it first
        if mv.card.get("identity", mv.card["checksum"]) not in (identity, checksums["model.ts"]):
            raise StoreError(
                f"model {name}:{version} was committed by another writer",
                "retry the register step; it will take the next version",
            )
        return mv
    return ModelVersion(name, version, full)


def _upload(store: Store, prefix: str, uploads: Mapping[str, Path]) -> None:
    """Put every file under ``prefix``; if one fails (a full disk, a lost store), remove
    what was put and the claim, so a failed register leaves nothing that takes space."""
    done = []
    try:
        for fname, path in uploads.items():
            done.append(f"{prefix}/{fname}")
            store.put_file(done[-1], path)
    except StoreError:
        delete_quietly(store, [*done, f"{prefix}/claim.json"])
        raise


def fetch(
    store: Store, model: ModelVersion, dest: str | Path, *, only: Iterable[str] | None = None
) -> Path:
    """Download a version's files (or just those named in ``only``) into ``dest`` and
    verify every checksum."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    prefix = _prefix(model.name, model.version)
    files: dict[str, str] = model.card["files"]
    wanted = files if only is None else {f: files[f] for f in only if f in files}
    for fname, digest in wanted.items():
        target = out / fname
        try:
            store.get_file(f"{prefix}/{fname}", target)
        except KeyNotFoundError:
            raise ChecksumError(
                f"model {model.name}:{model.version} file {fname} is missing from the store",
                "promote another version or re-register the model",
            ) from None
        if sha256_file(target) != digest:
            target.unlink(missing_ok=True)
            raise ChecksumError(
                f"model {model.name}:{model.version} file {fname} does not match its checksum",
                "the stored copy is corrupt; promote another version or re-register the model",
            )
    return out
