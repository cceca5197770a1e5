"""Labelled predictions as dataset rows: each serving version's inputs in the dataset's order.

A ledger row's ``inputs`` are in the feature order of the model version that served it,
which its ``transform.json`` in the registry names (checked against the card's SHA-256).
Each is mapped onto the dataset's feature columns by name. The label must be one of that
version's classes; a label outside them is skipped and counted, never written.

A version no longer in the registry (deleted, or its card unreadable) still has its rows
in the ledger, so nothing is lost. Versions are trained on the dataset's feature columns
in the dataset's order (prep splits ``manifest.schema.features``), so when its rows have
exactly as many inputs as the dataset has features they are used in that order, with the
dataset's classes as the label space, and the report names the version; rows whose width
does not match are skipped and counted.

A categorical feature's input is its code under the serving version's categories (its
``transform.json``); each is recoded into ``vocab``, the categories of the dataset, so rows
from versions trained on other categories line up (code 0, "other", stays 0: a missing
value). A category a version knew but ``vocab`` lacks is added to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from datawheel import registry
from datawheel.data.categorical import recode_column
from datawheel.flywheel.ledger_join import Joined, store_failure
from datawheel.storage import KeyNotFoundError, Store, StoreError
from datawheel.storage.files import sha256_bytes

__all__ = ["ProductionRows", "ServedVersion", "production_rows", "served_version"]


@dataclass(frozen=True)
class ServedVersion:
    """What the registry says about a version that served: its features and classes."""

    version: str
    features: list[str] | None = None  # None: not in the registry (or unreadable)
    classes: list[str] | None = None
    note: str = ""
    categories: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ProductionRows:
    """The usable labelled rows, oldest label first, features in the dataset's order."""

    x: np.ndarray  # [n, n_features] float64
    labels: np.ndarray  # object: the label given
    predicted: np.ndarray  # object: what the model answered
    ts: np.ndarray  # when the label was given
    ids: np.ndarray  # object: prediction ids
    model_versions: dict[str, int] = field(default_factory=dict)  # labels used per version
    outside_classes: int = 0
    outside_examples: list[str] = field(default_factory=list)
    mismatched: int = 0  # rows whose inputs do not map onto the dataset's features
    unregistered: dict[str, int] = field(default_factory=dict)  # used, version not registered
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def corrections(self) -> int:
        return int((self.labels != self.predicted).sum())

    @property
    def confirmations(self) -> int:
        return len(self) - self.corrections


def served_version(store: Store, model: str, version: str) -> ServedVersion:
    """The features and classes of ``model:version`` from its registered transform."""
    try:
        mv = registry.read_card(store, model, version)
    except KeyNotFoundError:
        return ServedVersion(version, note=f"{model}:{version} is not in the registry")
    except registry.CorruptRecordError as exc:
        return ServedVersion(version, note=f"{model}:{version} has an unreadable card ({exc})")
    except (StoreError, OSError) as exc:
        raise store_failure(store, f"reading the card of {model}:{version}", exc) from None
    key = f"models/{model}/versions/{version}/transform.json"
    try:
        data = store.get_bytes(key)
    except KeyNotFoundError:
        return ServedVersion(version, note=f"{model}:{version} has no transform.json")
    except (StoreError, OSError) as exc:
        raise store_failure(store, f"reading {key}", exc) from None
    if sha256_bytes(data) != mv.card.get("files", {}).get("transform.json"):
        return ServedVersion(version, note=f"{key} does not match its checksum")
    try:
        doc = json.loads(data)
        features, classes = [str(f) for f in doc["features"]], [str(c) for c in doc["classes"]]
        found = doc.get("categories") or {}
        categories = {str(f): [str(c) for c in cats] for f, cats in found.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return ServedVersion(version, note=f"{key} is not a transform")
    return ServedVersion(version, features, classes, categories=categories)


def _recode(
    x: np.ndarray, sv: ServedVersion, features: list[str], vocab: dict[str, list[str]]
) -> np.ndarray:
    """``x`` (dataset order) with each categorical code moved from ``sv``'s categories into
    ``vocab``'s (extended in place by categories it lacks)."""
    for f, target in vocab.items():
        known = set(target)
        target += [c for c in sv.categories.get(f, []) if c not in known]
        j = features.index(f)
        x[:, j] = recode_column(x[:, j], sv.categories.get(f, []), target)
    return x


def _mapping(sv: ServedVersion, width: int, features: list[str]) -> list[int] | None:
    """Column indices of ``features`` in the version's inputs, or None if they do not map."""
    if sv.features is None:
        return list(range(width)) if width == len(features) else None
    if width != len(sv.features) or not set(features) <= set(sv.features):
        return None
    where = {f: i for i, f in enumerate(sv.features)}
    return [where[f] for f in features]


def production_rows(
    store: Store,
    model: str,
    joined: Joined,
    features: list[str],
    classes: list[str],
    vocab: dict[str, list[str]] | None = None,
) -> ProductionRows:
    """The rows of ``joined`` that fit the dataset (``features``; labels in the serving
    version's classes, or ``classes`` for a version the registry no longer has), with
    categorical codes recoded into ``vocab`` (see the module docstring)."""
    served: dict[str, ServedVersion] = {}
    none = np.zeros(0, object)
    out = ProductionRows(np.zeros((0, len(features))), none, none, np.zeros(0), none)
    metas, xs = [], []
    for (version, width), (meta, x) in joined.blocks.items():
        sv = served.get(version) or served.setdefault(
            version, served_version(store, model, version)
        )
        cols = _mapping(sv, width, features)
        if cols is None:
            out.mismatched += len(meta)
            out.notes.append(
                f"{len(meta)} label(s) for {model}:{version} skipped: its {width} inputs do not "
                f"map onto the dataset's {len(features)} features"
                + (f" ({sv.note})" if sv.note else "")
            )
            continue
        allowed = set(sv.classes if sv.classes is not None else classes)
        labels = meta["label"].astype(str).to_numpy(dtype=object)
        ok = np.fromiter((lab in allowed for lab in labels), bool, len(labels))
        if (~ok).any():
            out.outside_classes += int((~ok).sum())
            seen = set(out.outside_examples)
            out.outside_examples += sorted({str(v) for v in labels[~ok]} - seen)[:5]
        if not ok.any():
            continue
        if sv.features is None:
            out.unregistered[version] = out.unregistered.get(version, 0) + int(ok.sum())
        out.model_versions[version] = out.model_versions.get(version, 0) + int(ok.sum())
        metas.append(meta[ok].assign(label=labels[ok]))
        rows = np.array(x[ok][:, cols], np.float64)
        xs.append(_recode(rows, sv, features, vocab) if vocab else rows)
    for version, n in sorted(out.unregistered.items()):
        out.notes.append(
            f"{n} label(s) for {model}:{version} used although that version is no longer in "
            f"the registry ({served[version].note}): its inputs match the dataset's features"
        )
    if metas:
        meta = pd.concat(metas, ignore_index=True)
        order = np.lexsort((meta["id"].to_numpy(dtype=object).astype(str), meta["ts"].to_numpy()))
        meta = meta.iloc[order]
        out.x = np.concatenate(xs)[order]
        out.labels = meta["label"].to_numpy(dtype=object)
        out.predicted = meta["predicted"].astype(str).to_numpy(dtype=object)
        out.ts = meta["ts"].to_numpy(dtype=np.float64)
        out.ids = meta["id"].to_numpy(dtype=object)
    return out
