"""The label-issue queue: rows of the current dataset whose given label is likely wrong.

The current dataset is the latest committed version of the dataset the champion's card names
(the newest version's card while nothing is champion), the version the next harvest builds
on. Its rows get out-of-sample class probabilities from 5-fold cross-validation
(``cross_val_predict`` of a logistic regression, C=0.1, on the features: numbers imputed
with the column mean and standardized, categories one-hot; on digits with 10% flipped labels
C=0.1 finds them with precision ~0.89 where C=1 has ~0.78), and cleanlab's
``find_label_issues`` (Apache-2.0) picks the rows whose label disagrees with them, ranked by
self-confidence (the probability the model gives the row's own label), lowest first. That
takes a couple of seconds on digits and is done once per dataset version (kept in
``studio.cache``).

A row leaves the queue once somebody has looked at it: this studio sent a label for it, or
the ledger holds a labelled prediction whose inputs equal the row's features (compared by
content, as the harvest's merge compares them, after the harvest's own mapping of each
serving version's inputs onto the dataset's features).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from datawheel.data import versions as ds
from datawheel.data.categorical import encode_frame
from datawheel.flywheel.harvest import current_dataset
from datawheel.flywheel.ledger_join import join_predictions, read_labels
from datawheel.flywheel.merge import content_keys
from datawheel.flywheel.rows import production_rows
from datawheel.serving.ledger.segments import segment_prefix
from datawheel.studio.context import Studio
from datawheel.studio.review_queue import sent_ids

__all__ = [
    "Issues",
    "find_issues",
    "issue_page",
    "model_matrix",
    "row_id",
]

_FOLDS = 5
_LOCK = threading.Lock()  # one cross-validation at a time per process


@dataclass(frozen=True)
class Issues:
    """The likely label errors of one dataset version, most likely first."""

    order: np.ndarray  # row indices, ranked by self-confidence (lowest first)
    quality: np.ndarray  # per row of the dataset: the probability of its given label
    pred_probs: np.ndarray  # [rows, classes] out-of-sample probabilities
    seconds: float  # how long finding them took
    note: str = ""  # why there are none, when cross-validation could not run


def row_id(dv: ds.DatasetVersion, index: int) -> str:
    return f"row:{dv.name}:{dv.version}:{index}"


def model_matrix(
    frame: pd.DataFrame, features: list[str], vocab: dict[str, list[str]]
) -> np.ndarray:
    """What the cross-validated model sees: numbers standardized (NaN -> the column mean),
    each categorical feature one-hot over its codes (0: missing or other)."""
    coded = encode_frame(frame, features, vocab).astype(np.float64)
    blocks = []
    for j, f in enumerate(features):
        col = coded[:, j]
        if f in vocab:
            codes = np.nan_to_num(col, nan=0.0).astype(np.int64)
            blocks.append(np.eye(len(vocab[f]) + 1)[np.clip(codes, 0, len(vocab[f]))])
            continue
        with np.errstate(all="ignore"):
            mean = np.nanmean(col) if np.isfinite(col).any() else 0.0
        col = np.where(np.isfinite(col), col, mean)
        std = col.std()
        blocks.append(((col - mean) / (std if std > 1e-12 else 1.0))[:, None])
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))


def find_issues(x: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0) -> Issues:
    """cleanlab's label issues of (``x``, ``labels`` as class indices) on 5-fold
    cross-validated probabilities."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    start = time.perf_counter()
    counts = np.bincount(labels, minlength=n_classes)
    folds = min(_FOLDS, int(counts[counts > 0].min()) if len(labels) else 0)
    empty = np.zeros(0, np.int64)
    if folds < 2 or (counts > 0).sum() < 2:
        note = "too few rows per class to cross-validate (every class needs at least 2 rows)"
        return Issues(empty, np.ones(len(labels)), np.zeros((len(labels), n_classes)), 0.0, note)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    model = LogisticRegression(C=0.1, max_iter=500)  # standardized features: regularize
    found = cross_val_predict(model, x, labels, cv=cv, method="predict_proba")
    probs = np.zeros((len(labels), n_classes))
    probs[:, np.flatnonzero(counts > 0)] = found  # classes without rows get probability 0
    order = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = probs[np.arange(len(labels)), labels]
    return Issues(np.asarray(order, np.int64), quality, probs, time.perf_counter() - start)


def _issues(studio: Studio, dv: ds.DatasetVersion) -> tuple[pd.DataFrame, Issues]:
    """The dataset's frame and its issues, computed once per version."""
    cache: dict[str, tuple[pd.DataFrame, Issues]] = studio.cache.setdefault("label_issues", {})
    key = f"{dv.name}@{dv.version}"
    with _LOCK:
        if key not in cache:
            frame = ds.read_frame(studio.store, dv)
            index = {c: i for i, c in enumerate(dv.classes)}
            given = frame[dv.label].astype(str).map(index)
            known = given.notna().to_numpy()
            labels = given.fillna(0).to_numpy(np.int64)
            x = model_matrix(frame, dv.features, dv.categories)
            found = find_issues(x[known], labels[known], len(dv.classes))
            rows = np.flatnonzero(known)  # back to row indices of the whole frame
            quality = np.ones(len(frame))
            quality[rows] = found.quality
            probs = np.zeros((len(frame), len(dv.classes)))
            probs[rows] = found.pred_probs
            cache[key] = (
                frame,
                Issues(rows[found.order], quality, probs, found.seconds, found.note),
            )
        return cache[key]


@dataclass
class _Seen:
    """The content keys of the labelled predictions joined so far, for one dataset version."""

    version: str
    feedback: frozenset[str] = frozenset()  # feedback segments taken into account
    predictions: frozenset[str] = frozenset()
    ids: set[str] = field(default_factory=set)  # labelled predictions already joined
    keys: set[bytes] = field(default_factory=set)
    unmatched: int = 0  # labels whose prediction was not in the ledger yet


def _seen_keys(studio: Studio, dv: ds.DatasetVersion) -> set[bytes]:
    """Content keys (the dataset's feature order and categories) of every labelled prediction
    in the ledger. Incremental: only labels not joined before are joined (reading the
    prediction segments from the day their ids were issued), when a feedback segment is new,
    or a prediction segment is new while some label still had no prediction."""
    store, model = studio.store, studio.model
    seen = studio.cache.get("label_issues_seen")
    if not isinstance(seen, _Seen) or seen.version != dv.version:
        seen = studio.cache["label_issues_seen"] = _Seen(dv.version)
    feedback = frozenset(store.list(segment_prefix("feedback", model)))
    predictions = frozenset(store.list(segment_prefix("predictions", model)))
    if feedback == seen.feedback and (not seen.unmatched or predictions == seen.predictions):
        return seen.keys
    until = time.time() + 60.0
    labels = read_labels(store, model, None, until)
    labels.frame = labels.frame[~labels.frame["id"].isin(seen.ids)].reset_index(drop=True)
    joined = join_predictions(store, model, labels, until)
    vocab = {f: list(c) for f, c in dv.categories.items()}
    rows = production_rows(store, model, joined, dv.features, dv.classes, vocab)
    if len(rows):
        seen.keys |= {bytes(k) for k in content_keys(rows.x)}
    for meta, _ in joined.blocks.values():
        seen.ids.update(meta["id"].astype(str))
    seen.feedback, seen.predictions, seen.unmatched = feedback, predictions, joined.unmatched
    return seen.keys


def issue_page(
    studio: Studio, limit: int, offset: int, dv: ds.DatasetVersion | None = None
) -> dict[str, Any]:
    """One page of the label-issue queue of ``dv`` (default: the model's current dataset)."""
    dv = dv if dv is not None else current_dataset(studio.store, studio.model)
    frame, issues = _issues(studio, dv)
    order = issues.order
    sent = sent_ids(studio)
    if sent:
        order = order[[row_id(dv, int(i)) not in sent for i in order]]
    seen = _seen_keys(studio, dv)
    if seen and len(order):
        x = encode_frame(frame.iloc[order], dv.features, dv.categories)
        order = order[[bytes(k) not in seen for k in content_keys(x)]]
    picked = order[offset : offset + limit]
    items = []
    for i in picked.tolist():
        probs = issues.pred_probs[i]
        row = frame.iloc[i]
        items.append(
            {
                "id": row_id(dv, i),
                "index": i,
                "version": f"{dv.name}@{dv.version}",
                "inputs": [_value(row[f]) for f in dv.features],
                "features": dv.features,
                "given": str(row[dv.label]),
                "predicted": dv.classes[int(np.argmax(probs))],
                "probabilities": [float(p) for p in probs],
                "classes": dv.classes,
                "confidence": float(probs.max()),
                "quality": float(issues.quality[i]),
                "score": float(issues.quality[i]),
            }
        )
    return {
        "items": items,
        "total": len(order),
        "dataset": {"name": dv.name, "version": dv.version, "rows": len(frame)},
        "found": len(issues.order),
        "seconds": round(issues.seconds, 3),
        "note": issues.note,
    }


def _value(v: Any) -> Any:
    """A cell as JSON: a number (None for NaN) or text (None when missing)."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
        return None if isinstance(v, float) and v != v else v
    return v if isinstance(v, int | float | str | bool) else str(v)
