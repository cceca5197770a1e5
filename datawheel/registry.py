"""Model registry in the store: versions, a card per version, and aliases.

Layout::

    models/NAME/versions/vN/<files>        model.ts, model_int8.ts, model.pt, transform.json
    models/NAME/versions/vN/card.json      <- written last: the commit marker
    models/NAME/aliases/ALIAS.json         {"version": "vN", "history": [...], ...}

A version exists once its card exists. The card lists every file's SHA-256, and
:func:`fetch` refuses a version whose bytes do not match. An alias update is one
atomic object write; its history makes ``rollback`` possible.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import datawheel
from datawheel.errors import DatawheelError
from datawheel.store import (
    KeyNotFoundError,
    Store,
    delete_quietly,
    get_json,
    put_json,
    validate_key,
    validate_name,
)

__all__ = [
    "ALIASES",
    "ChecksumError",
    "ModelVersion",
    "code_version",
    "fetch",
    "get_alias",
    "list_models",
    "list_versions",
    "parse_ref",
    "promote",
    "register",
    "resolve",
    "rollback",
]

ALIASES = ("champion", "challenger")


class ChecksumError(DatawheelError):
    """A model's bytes do not match its card; it is never loaded."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    card: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.card.get("metrics", {}).items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _version_num(v: str) -> int:
    return int(v[1:]) if re.fullmatch(r"v\d+", v) else 0


def list_versions(store: Store, name: str) -> list[ModelVersion]:
    """Committed versions of ``name``, oldest first."""
    out = []
    for key in store.list(f"models/{name}/versions"):
        parts = key.split("/")
        if len(parts) == 5 and parts[4] == "card.json":
            out.append(ModelVersion(name, parts[3], cast(dict[str, Any], get_json(store, key))))
    return sorted(out, key=lambda m: _version_num(m.version))


def list_models(store: Store) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list("models") if k.count("/") >= 3})


def register(
    store: Store,
    name: str,
    model_dir: str | Path,
    *,
    card: dict[str, Any],
    alias: str | None = None,
    extra_files: Mapping[str, Path] | None = None,
) -> ModelVersion:
    """Upload every file in ``model_dir`` (plus ``extra_files``, stored under the given names)
    as the next version; the card last; then the alias."""
    validate_name(name, "model name")
    src = Path(model_dir)
    uploads = {p.name: p for p in sorted(src.iterdir()) if p.is_file() and p.name != "card.json"}
    uploads.update({validate_key(k): Path(v) for k, v in (extra_files or {}).items()})
    if "model.ts" not in uploads:
        raise DatawheelError(f"{src} has no model.ts", "export the model before registering it")
    existing = list_versions(store, name)
    version = f"v{(_version_num(existing[-1].version) if existing else 0) + 1}"
    prefix = f"models/{name}/versions/{version}"
    checksums = {fname: _sha256(path) for fname, path in uploads.items()}
    full = {
        **card,
        "name": name,
        "version": version,
        "files": checksums,
        "checksum": checksums["model.ts"],
        "code_version": card.get("code_version") or code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    written: list[str] = []
    try:
        for fname, path in uploads.items():
            store.put_file(f"{prefix}/{fname}", path)
            written.append(f"{prefix}/{fname}")
        put_json(store, f"{prefix}/card.json", full)
    except BaseException:
        delete_quietly(store, written)
        raise
    mv = ModelVersion(name, version, full)
    if alias:
        promote(store, name, version, alias=alias)
    return mv


def get_alias(store: Store, name: str, alias: str) -> dict[str, Any] | None:
    try:
        return cast(dict[str, Any], get_json(store, f"models/{name}/aliases/{alias}.json"))
    except KeyNotFoundError:
        return None


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME``, ``NAME@alias`` or ``NAME:version`` -> (name, alias-or-version)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias
    if ":" in ref:
        name, version = ref.split(":", 1)
        return name, version
    return ref, "champion"


def resolve(store: Store, name: str, ref: str = "champion") -> ModelVersion:
    """A version by id (``v3``) or alias (``champion``); DatawheelError if missing."""
    version = ref
    if not re.fullmatch(r"v\d+", ref):
        record = get_alias(store, name, ref)
        if record is None:
            raise DatawheelError(
                f"model {name!r} has no {ref!r} alias",
                "run the training pipeline first, or list versions with 'datawheel models list'",
            )
        version = str(record["version"])
    try:
        card = cast(dict[str, Any], get_json(store, f"models/{name}/versions/{version}/card.json"))
    except KeyNotFoundError as exc:
        raise DatawheelError(
            f"model {name}:{version} is not in the registry",
            "list versions with 'datawheel models list'",
        ) from exc
    return ModelVersion(name, version, card)


def promote(
    store: Store, name: str, version: str, *, alias: str = "champion", reason: str = ""
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` with one atomic write; keep the old target in history."""
    target = resolve(store, name, version)
    current = get_alias(store, name, alias)
    history = list(current.get("history", [])) if current else []
    if current and current["version"] != target.version:
        history.append(current["version"])
    record = {
        "alias": alias,
        "version": target.version,
        "history": history[-50:],
        "reason": reason,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    put_json(store, f"models/{name}/aliases/{alias}.json", record)
    return record


def rollback(store: Store, name: str, *, alias: str = "champion") -> dict[str, Any]:
    """Point ``alias`` back at the version it had before the last promotion."""
    current = get_alias(store, name, alias)
    if not current or not current.get("history"):
        raise DatawheelError(
            f"model {name!r} alias {alias!r} has no earlier version to roll back to",
            "promote a specific version with 'datawheel models promote NAME VERSION'",
        )
    history = list(current["history"])
    previous = history.pop()
    record = {
        "alias": alias,
        "version": previous,
        "history": history,
        "reason": f"rollback from {current['version']}",
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    put_json(store, f"models/{name}/aliases/{alias}.json", record)
    return record


def fetch(
    store: Store, model: ModelVersion, dest: str | Path, *, only: Iterable[str] | None = None
) -> Path:
    """Download a version's files (or just those named in ``only``) into ``dest`` and
    verify every checksum."""
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"models/{model.name}/versions/{model.version}"
    files: dict[str, str] = model.card["files"]
    wanted = files if only is None else {f: files[f] for f in only if f in files}
    for fname, digest in wanted.items():
        target = out / fname
        store.get_file(f"{prefix}/{fname}", target)
        if _sha256(target) != digest:
            target.unlink(missing_ok=True)
            raise ChecksumError(
                f"model {model.name}:{model.version} file {fname} does not match its checksum",
                "the stored copy is corrupt; promote another version or re-register the model",
            )
    return out
