"""Content-addressed dataset versions in the store: candidates, committed versions, rejects.

Layout (``NAME`` is the dataset name, ``V`` the version id)::

    datasets/NAME/candidates/V/data.parquet   <- ingest writes a candidate...
    datasets/NAME/candidates/V/manifest.json
    datasets/NAME/versions/V/data.parquet     <- ...validation commits it:
    datasets/NAME/versions/V/report.md
    datasets/NAME/versions/V/manifest.json    <- exclusive create, last: the commit marker
    datasets/NAME/rejected/V/manifest.json    <- ...or rejects it, with its report
    datasets/NAME/rejected/V/report.md
    datasets/NAME/reference.json              <- see datawheel.data.reference

Only committed versions are ever listed, found by :func:`get_version` or named as a
``parent``: a candidate is invisible until :mod:`datawheel.data.gate` has validated it.
The version id is the first 16 hex digits of the SHA-256 of the Parquet bytes, so the
same content always has the same id: ingesting content that is already committed finds
that version again and writes nothing. Nothing under ``versions/`` is ever deleted, so
two writers of the same content can never destroy each other's committed copy (a failed
commit may leave an unlisted ``data.parquet``, rewritten with the same bytes next time).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from datawheel.data.http_source import display_url
from datawheel.data.naming import default_name
from datawheel.data.profile import describe
from datawheel.data.sources import Loaded, load_source
from datawheel.errors import DatawheelError
from datawheel.storage import (
    KeyNotFoundError,
    Store,
    delete_quietly,
    put_json,
    to_json_bytes,
    validate_name,
)
from datawheel.storage.files import sha256_bytes

__all__ = [
    "DatasetVersion",
    "commit",
    "default_name",
    "describe",
    "discard_candidate",
    "get_candidate",
    "get_version",
    "ingest",
    "ingest_frame",
    "is_committed",
    "latest_version",
    "list_datasets",
    "list_versions",
    "production_mask",
    "production_ranges",
    "read_frame",
    "reject",
    "rejected_report_key",
]


@dataclass(frozen=True)
class DatasetVersion:
    """One dataset version (committed, or a candidate awaiting validation) and its manifest."""

    name: str
    version: str
    manifest: dict[str, Any]

    @property
    def label(self) -> str:
        return str(self.manifest["schema"]["label"]["name"])

    @property
    def features(self) -> list[str]:
        return [str(f["name"]) for f in self.manifest["schema"]["features"]]

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.manifest["classes"]]

    @property
    def categories(self) -> dict[str, list[str]]:
        """Every category of each categorical feature, from the manifest's stats."""
        stats = self.manifest.get("stats", {})
        return {
            f: [str(c) for c in stats[f].get("categories", {})]
            for f in self.features
            if stats.get(f, {}).get("kind") == "categorical"
        }


def _prefix(name: str, version: str, area: str = "versions") -> str:
    return f"datasets/{name}/{area}/{version}"


def rejected_report_key(name: str, version: str) -> str:
    return f"{_prefix(name, version, 'rejected')}/report.md"


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    # No pandas index and a fixed compression keep the bytes a pure function of the content.
    frame.to_parquet(buf, index=False, compression="zstd", engine="pyarrow")
    return buf.getvalue()


def _now() -> str:
    # Microseconds: versions ordered by time must not fall back to hash order within a second.
    return datetime.now(UTC).isoformat(timespec="microseconds")


def ingest(
    store: Store, source: str, *, name: str = "", label: str = "label", image_size: int = 16
) -> DatasetVersion:
    """Read ``source`` and write it as a candidate version (see :func:`ingest_frame`)."""
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 -> float32 inf: validation says so
        loaded = load_source(source, label=label, image_size=image_size)
    return ingest_frame(store, loaded, name=name)


_LATEST: Any = object()  # ingest_frame's default parent: the latest committed version


def ingest_frame(
    store: Store,
    loaded: Loaded,
    *,
    name: str = "",
    parent: DatasetVersion | None = _LATEST,
    extra_manifest: dict[str, Any] | None = None,
) -> DatasetVersion:
    """Write an already-loaded source as a candidate version; validation commits it.

    If the same content is already committed, that version is returned and nothing is
    written. Ingest judges nothing but emptiness: bad data is refused by validation.
    ``parent`` names the version these rows were derived from (default: the latest
    committed one); ``extra_manifest`` adds fields (a harvest's ``lineage`` and
    ``production_rows``) and may not override the computed ones.
    """
    name = validate_name(name or default_name(loaded.source), "dataset name")
    frame = loaded.frame
    if len(frame) == 0:
        raise DatawheelError(
            f"source {loaded.source!r} has no rows", "ingest a file with at least one data row"
        )
    data = _parquet_bytes(frame)
    digest = sha256_bytes(data)
    version = digest[:16]
    existing = _try_get(store, name, version)
    if existing is not None:
        return existing
    if parent is _LATEST:
        parent = latest_version(store, name)
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "sha256": digest,
        "format": "parquet",
        "source": display_url(loaded.source)
        if loaded.source.startswith(("http://", "https://"))
        else loaded.source,
        "parent": parent.version if parent else None,
        "created_at": _now(),
        "image_shape": list(loaded.image_shape) if loaded.image_shape else None,
        **describe(frame, loaded.label),
    }
    if clash := set(extra_manifest or {}) & set(manifest):
        raise ValueError(f"extra_manifest may not override {sorted(clash)}")
    manifest.update(extra_manifest or {})
    prefix = _prefix(name, version, "candidates")
    try:
        store.put_bytes(f"{prefix}/data.parquet", data)
        put_json(store, f"{prefix}/manifest.json", manifest)
    except BaseException:
        delete_quietly(store, [f"{prefix}/manifest.json", f"{prefix}/data.parquet"])
        raise
    return DatasetVersion(name, version, manifest)


def _read(store: Store, name: str, version: str, area: str) -> DatasetVersion | None:
    key = f"{_prefix(name, version, area)}/manifest.json"
    try:
        data = store.get_bytes(key)
    except KeyNotFoundError:
        return None
    return DatasetVersion(name, version, _parse_manifest(store, key, data, area))


def _parse_manifest(store: Store, key: str, data: bytes, area: str) -> dict[str, Any]:
    """The manifest at ``key``; a corrupt one is a one-line error naming it and the fix."""
    where = f"the stored manifest {store.uri.rstrip('/')}/{key}"
    folder = key.rsplit("/", 1)[0]
    again = "run the ingest again" if area == "candidates" else "ingest the source again"
    fix = f"restore it from a backup, or delete the folder {folder} and {again}"
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatawheelError(f"{where} is not valid JSON ({exc})", fix) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("schema"), dict):
        raise DatawheelError(f"{where} is not a dataset manifest (it has no schema)", fix)
    return cast(dict[str, Any], manifest)


def _try_get(store: Store, name: str, version: str) -> DatasetVersion | None:
    return _read(store, name, version, "versions")


def is_committed(store: Store, name: str, version: str) -> bool:
    return store.exists(f"{_prefix(name, version)}/manifest.json")


def get_candidate(store: Store, name: str, version: str) -> DatasetVersion | None:
    """The candidate ``version`` awaiting validation, or ``None``."""
    return _read(store, name, version, "candidates")


def get_version(store: Store, name: str, version: str = "latest") -> DatasetVersion:
    """A committed version, or the latest one; raises DatawheelError if there is none."""
    found = latest_version(store, name) if version == "latest" else _try_get(store, name, version)
    if found is None:
        hint = "list versions with 'datawheel datasets list' or ingest the source first"
        if version != "latest" and store.exists(rejected_report_key(name, version)):
            hint = f"it failed validation: read {rejected_report_key(name, version)} in the store"
        elif version != "latest" and get_candidate(store, name, version) is not None:
            hint = "it is a candidate that has not passed validation yet: run the validate step"
        raise DatawheelError(f"dataset {name}@{version} is not in the store", hint)
    return found


def _order(v: DatasetVersion) -> tuple[str, str]:
    return (str(v.manifest.get("committed_at") or v.manifest["created_at"]), v.version)


def list_versions(store: Store, name: str) -> list[DatasetVersion]:
    """Committed versions of ``name``, in the order they were committed."""
    found = []
    for key in store.list(f"datasets/{name}/versions"):
        parts = key.split("/")
        if len(parts) == 5 and parts[4] == "manifest.json":
            got = _try_get(store, name, parts[3])
            if got is not None:
                found.append(got)
    return sorted(found, key=_order)


def latest_version(store: Store, name: str) -> DatasetVersion | None:
    versions = list_versions(store, name)
    return versions[-1] if versions else None


def list_datasets(store: Store) -> list[str]:
    """Names with at least one committed version."""
    names = set()
    for key in store.list("datasets"):
        parts = key.split("/")
        if len(parts) == 5 and parts[2] == "versions" and parts[4] == "manifest.json":
            names.add(parts[1])
    return sorted(names)


def _checked(data: bytes, dv: DatasetVersion) -> bytes:
    if sha256_bytes(data) != dv.manifest["sha256"]:
        raise DatawheelError(
            f"dataset {dv.name}@{dv.version} does not match its checksum",
            "the stored copy is corrupt; ingest the source again",
        )
    return data


def read_frame(store: Store, version: DatasetVersion) -> pd.DataFrame:
    """The rows of a committed version; the bytes are checked against the content address."""
    data = store.get_bytes(f"{_prefix(version.name, version.version)}/data.parquet")
    return pd.read_parquet(io.BytesIO(_checked(data, version)))


def production_mask(manifest: dict[str, Any], rows: int) -> np.ndarray:
    """True for each of the ``rows`` rows of data.parquet that came from production.

    ``production_rows`` in the manifest is a sorted list of half-open ``[start, stop]``
    ranges; absent or empty means none. Ranges that are unsorted, overlap or leave
    ``[0, rows]`` are a corrupt manifest, said as such.
    """
    mask = np.zeros(rows, np.bool_)
    end = 0
    for item in manifest.get("production_rows") or []:
        ok = isinstance(item, (list, tuple)) and len(item) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        start, stop = (int(item[0]), int(item[1])) if ok else (-1, -1)
        if not end <= start <= stop <= rows:
            raise DatawheelError(
                f"the dataset manifest's production_rows entry {item!r} is not a sorted, "
                f"non-overlapping [start, stop] range within the {rows} rows",
                "harvest that version again, or remove production_rows from its manifest",
            )
        mask[start:stop] = True
        end = stop
    return mask


def production_ranges(mask: np.ndarray) -> list[list[int]]:
    """The inverse of :func:`production_mask`: the sorted half-open ranges of True rows."""
    flags = np.concatenate([[False], np.asarray(mask, np.bool_), [False]])
    edges = np.flatnonzero(flags[1:] != flags[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def commit(
    store: Store, candidate: DatasetVersion, *, report: str, reference: str | None
) -> DatasetVersion:
    """Make a validated candidate a version: data first, the manifest last (exclusive create).

    If the version is committed already (by a concurrent writer of the same content), that
    version is returned; either way the candidate is discarded afterwards.
    """
    found = _try_get(store, candidate.name, candidate.version)
    if found is None:
        found = _commit_new(store, candidate, report, reference)
    discard_candidate(store, candidate.name, candidate.version)
    return found


def _commit_new(
    store: Store, candidate: DatasetVersion, report: str, reference: str | None
) -> DatasetVersion:
    name, version = candidate.name, candidate.version
    try:
        data = store.get_bytes(f"{_prefix(name, version, 'candidates')}/data.parquet")
    except KeyNotFoundError:
        found = _try_get(store, name, version)  # a concurrent commit took the candidate
        if found is not None:
            return found
        raise DatawheelError(
            f"candidate {name}@{version} has no data in the store",
            "ingest the source again, then validate",
        ) from None
    prefix = _prefix(name, version)
    # Same bytes as any concurrent committer writes (content-addressed): overwriting is safe.
    store.put_bytes(f"{prefix}/data.parquet", _checked(data, candidate))
    store.put_bytes(f"{prefix}/report.md", report.encode())
    # A version derived from a named parent (a harvest: parent rows + production rows) keeps
    # it; any other is the child of whatever was latest when it was committed.
    if "lineage" in candidate.manifest:
        parent = candidate.manifest.get("parent")
    else:
        latest = latest_version(store, name)
        parent = latest.version if latest else None
    manifest = {
        **candidate.manifest,
        "parent": parent,
        "committed_at": _now(),
        "validated_against": reference,
    }
    if store.create_bytes(f"{prefix}/manifest.json", to_json_bytes(manifest)):
        return DatasetVersion(name, version, manifest)
    found = _try_get(store, name, version)
    if found is None:  # the marker, once created, is never deleted
        raise DatawheelError(
            f"dataset {name}@{version} vanished while committing", "validate again"
        )
    return found


def discard_candidate(store: Store, name: str, version: str) -> None:
    """Delete a candidate, manifest first: it stops being a candidate before its data goes."""
    prefix = _prefix(name, version, "candidates")
    store.delete(f"{prefix}/manifest.json")
    store.delete(f"{prefix}/data.parquet")


def reject(store: Store, candidate: DatasetVersion, report: str) -> str:
    """Move a candidate that failed validation to ``rejected/``: its manifest and report stay,
    its data goes. Returns the key of the kept report. A committed copy is never touched."""
    name, version = candidate.name, candidate.version
    report_key = rejected_report_key(name, version)
    store.put_bytes(report_key, report.encode())
    put_json(store, f"{_prefix(name, version, 'rejected')}/manifest.json", candidate.manifest)
    discard_candidate(store, name, version)
    return report_key
