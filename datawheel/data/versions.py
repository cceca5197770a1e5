"""Content-addressed dataset versions in the store, each with a manifest.

Layout (``NAME`` is the dataset name, ``V`` the version id)::

    datasets/NAME/versions/V/data.parquet
    datasets/NAME/versions/V/manifest.json   <- written last: the commit marker

A version exists only once its manifest exists, so a reader never sees half a
version; a failed ingest deletes what it wrote. The version id is the first 16
hex digits of the SHA-256 of the Parquet bytes, so ingesting the same content
twice gives the same version and writes nothing new.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from datawheel.data.sources import Loaded, load_source
from datawheel.errors import DatawheelError
from datawheel.storage import (
    KeyNotFoundError,
    Store,
    delete_quietly,
    get_json,
    put_json,
    validate_name,
)
from datawheel.storage.files import sha256_bytes

__all__ = [
    "DatasetVersion",
    "default_name",
    "describe",
    "get_version",
    "ingest",
    "ingest_frame",
    "latest_version",
    "list_datasets",
    "list_versions",
    "quarantine",
    "read_frame",
]


@dataclass(frozen=True)
class DatasetVersion:
    """One committed dataset version and its manifest."""

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


def _prefix(name: str, version: str) -> str:
    return f"datasets/{name}/versions/{version}"


def default_name(source: str) -> str:
    """A dataset name derived from a source: ``digits``, a file stem, a folder name."""
    if source in ("digits", "builtin:digits"):
        return "digits"
    stem = source.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0].lower()
    stem = re.sub(r"[^a-z0-9_.-]+", "-", stem).strip("-.") or "dataset"
    return stem[:63]


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    # No pandas index and a fixed compression keep the bytes a pure function of the content.
    frame.to_parquet(buf, index=False, compression="zstd", engine="pyarrow")
    return buf.getvalue()


def describe(frame: pd.DataFrame, label: str) -> dict[str, Any]:
    """Schema, per-feature stats and label distribution of a frame."""
    features = [c for c in frame.columns if c != label]
    stats: dict[str, dict[str, float]] = {}
    for col in features:
        values = frame[col].to_numpy(dtype=np.float64)
        finite = values[~np.isnan(values)]
        stats[str(col)] = {
            "min": float(finite.min()) if finite.size else float("nan"),
            "max": float(finite.max()) if finite.size else float("nan"),
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std()) if finite.size else float("nan"),
            "missing": int(values.size - finite.size),
        }
    counts = frame[label].value_counts().sort_index()
    return {
        "schema": {
            "features": [{"name": str(c), "dtype": str(frame[c].dtype)} for c in features],
            "label": {"name": label, "dtype": "string"},
        },
        "rows": len(frame),
        "stats": stats,
        "label_distribution": {str(k): int(v) for k, v in counts.items()},
        "classes": sorted(str(k) for k in counts.index),
    }


def ingest(
    store: Store, source: str, *, name: str = "", label: str = "label", image_size: int = 16
) -> DatasetVersion:
    """Read ``source`` and commit it as a dataset version (see :func:`ingest_frame`)."""
    return ingest_frame(store, load_source(source, label=label, image_size=image_size), name=name)


def ingest_frame(store: Store, loaded: Loaded, *, name: str = "") -> DatasetVersion:
    """Commit an already-loaded source as a content-addressed dataset version."""
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
    parent = latest_version(store, name)
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "sha256": digest,
        "format": "parquet",
        "source": loaded.source,
        "parent": parent.version if parent else None,
        # Microseconds: list_versions orders by created_at, and versions ingested within
        # the same second must not fall back to hash order.
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "image_shape": list(loaded.image_shape) if loaded.image_shape else None,
        **describe(frame, loaded.label),
    }
    prefix = _prefix(name, version)
    try:
        store.put_bytes(f"{prefix}/data.parquet", data)
        put_json(store, f"{prefix}/manifest.json", manifest)
    except BaseException:
        delete_quietly(store, [f"{prefix}/manifest.json", f"{prefix}/data.parquet"])
        raise
    return DatasetVersion(name, version, manifest)


def _try_get(store: Store, name: str, version: str) -> DatasetVersion | None:
    try:
        manifest = cast(dict[str, Any], get_json(store, f"{_prefix(name, version)}/manifest.json"))
    except KeyNotFoundError:
        return None
    return DatasetVersion(name, version, manifest)


def get_version(store: Store, name: str, version: str = "latest") -> DatasetVersion:
    """A committed version, or the latest one; raises DatawheelError if there is none."""
    found = latest_version(store, name) if version == "latest" else _try_get(store, name, version)
    if found is None:
        raise DatawheelError(
            f"dataset {name}@{version} is not in the store",
            "list versions with 'datawheel datasets list' or ingest the source first",
        )
    return found


def list_versions(store: Store, name: str) -> list[DatasetVersion]:
    """Committed versions of ``name``, oldest first."""
    found = []
    for key in store.list(f"datasets/{name}/versions"):
        parts = key.split("/")
        if len(parts) == 5 and parts[4] == "manifest.json":
            got = _try_get(store, name, parts[3])
            if got is not None:
                found.append(got)
    return sorted(found, key=lambda v: (v.manifest["created_at"], v.version))


def latest_version(store: Store, name: str) -> DatasetVersion | None:
    versions = list_versions(store, name)
    return versions[-1] if versions else None


def list_datasets(store: Store) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list("datasets") if k.count("/") >= 2})


def read_frame(store: Store, version: DatasetVersion) -> pd.DataFrame:
    """The rows of a version; the bytes are checked against the content address."""
    data = store.get_bytes(f"{_prefix(version.name, version.version)}/data.parquet")
    if sha256_bytes(data) != version.manifest["sha256"]:
        raise DatawheelError(
            f"dataset {version.name}@{version.version} does not match its checksum",
            "the stored copy is corrupt; ingest the source again",
        )
    return pd.read_parquet(io.BytesIO(data))


def quarantine(store: Store, version: DatasetVersion, report: str) -> str:
    """Withdraw a version that failed validation: keep its report, delete its data.

    The manifest goes first, so the version stops existing before its data does.
    Returns the key of the kept report.
    """
    prefix = _prefix(version.name, version.version)
    report_key = f"datasets/{version.name}/rejected/{version.version}/report.md"
    store.put_bytes(report_key, report.encode())
    put_json(
        store, f"datasets/{version.name}/rejected/{version.version}/manifest.json", version.manifest
    )
    store.delete(f"{prefix}/manifest.json")
    store.delete(f"{prefix}/data.parquet")
    return report_key
