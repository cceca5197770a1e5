"""The flywheel page's time series, from the ledger: live accuracy and drift per time bucket.

* **Live accuracy**: the feedback rows (the latest label per prediction id, as the
  watcher's :mod:`~datawheel.flywheel.observe` counts them), bucketed by when the label
  was given; per model version, the share whose label equals the predicted class.
* **Drift**: no drift report is kept in the store (the pipeline's drift-report step writes
  KFP artifacts, the server's live drift is a Prometheus gauge), so the studio runs the
  drift engine itself: each version's drift reference (its ``drift_reference.json``, as
  ``datawheel drift --model`` reads it) against the rows it served in each bucket, the
  same comparison ``datawheel drift --model NAME:vN`` makes for one window. A finished
  bucket's result is cached by (version, bucket, rows).

Buckets adapt to the span of the data: the smallest of 1 min, 5 min, 15 min, 1 h, 6 h,
1 day and 1 week that gives at most :data:`MAX_BUCKETS` buckets.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from datawheel.errors import DatawheelError
from datawheel.monitoring.baseline import DriftReference
from datawheel.orchestration.drift_inputs import utc_days
from datawheel.storage import Store

__all__ = [
    "DRIFT_DAYS",
    "AccuracyPoint",
    "DriftBucket",
    "DriftHistory",
    "accuracy_history",
    "bucket_size",
    "drift_history",
    "window_report",
]

MAX_BUCKETS = 24
_SIZES = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
DRIFT_DAYS = 7  # drift is computed over the last week of served rows at most
MIN_ROWS = 20  # a bucket with fewer rows gets no drift point (the engine gives no verdict)
MAX_VERSIONS = 3  # the versions with the most served rows in the window


def bucket_size(span: float) -> int:
    """Seconds per bucket for data spanning ``span`` seconds."""
    for size in _SIZES:
        if span / size <= MAX_BUCKETS:
            return size
    return _SIZES[-1]


@dataclass(frozen=True)
class AccuracyPoint:
    start: float  # bucket start, seconds since the epoch
    accuracy: float
    labels: int


def accuracy_history(store: Store, model: str) -> tuple[dict[str, list[AccuracyPoint]], int]:
    """Per model version, live accuracy per bucket; and the bucket size in seconds."""
    from datawheel.serving.ledger import read_ledger

    cols = ("id", "ts", "version", "label", "predicted")
    fb = read_ledger(store, model=model, kind="feedback", columns=cols)
    if fb.empty:
        return {}, 0
    latest = fb.sort_values("ts", kind="stable").drop_duplicates("id", keep="last")
    size = bucket_size(float(latest["ts"].max() - latest["ts"].min()))
    latest = latest.assign(
        bucket=(latest["ts"] // size) * size,
        ok=latest["label"].astype(str) == latest["predicted"].astype(str),
    )
    out: dict[str, list[AccuracyPoint]] = {}
    for key, group in latest.groupby(["version", "bucket"], sort=True):
        version, start = cast(tuple[str, float], key)
        out.setdefault(str(version), []).append(
            AccuracyPoint(float(start), float(group["ok"].mean()), len(group))
        )
    return out, size


@dataclass(frozen=True)
class DriftBucket:
    start: float
    end: float
    rows: int
    drifted: list[str]  # the features the engine says drifted
    severity: dict[str, float]  # per feature: statistic / threshold (>= 1: a large effect)
    dataset_drift: bool


@dataclass
class DriftHistory:
    version: str
    size: int
    buckets: list[DriftBucket] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def top_features(self, n: int = 5) -> list[str]:
        """The features with the highest severity in any bucket, worst first."""
        worst: dict[str, float] = {}
        for b in self.buckets:
            for name, s in b.severity.items():
                if math.isfinite(s):
                    worst[name] = max(worst.get(name, 0.0), s)
        return sorted(worst, key=lambda k: (-worst[k], k))[:n]


def _served(store: Store, model: str, start: float, end: float) -> pd.DataFrame:
    from datawheel.serving.ledger import read_ledger

    cols = ("ts", "version", "inputs", "label")
    parts = [read_ledger(store, model=model, date=d, columns=cols) for d in utc_days(start, end)]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=list(cols))
    rows = pd.concat(parts, ignore_index=True)
    return rows[(rows["ts"] >= start) & (rows["ts"] < end)]


def _reference(store: Store, model: str, version: str, cache: dict[str, Any]) -> Any:
    """The version's prepared drift reference and its feature names (immutable: cached)."""
    key = f"ref:{model}:{version}"
    if key not in cache:
        from datawheel.monitoring.engine import prepare_reference
        from datawheel.orchestration.drift_inputs import model_reference

        sample, _ = model_reference(store, f"{model}:{version}")
        assert isinstance(sample.data, DriftReference)  # a model's reference is a summary
        cache[key] = (prepare_reference(sample.data, sample.features), sample.features, sample)
    return cache[key]


def _compare(prepared: Any, features: list[str], x: np.ndarray) -> Any:
    from datawheel.monitoring.engine import compare

    return compare(prepared, pd.DataFrame(x, columns=features), features=features)


def drift_history(
    store: Store, model: str, cache: dict[str, Any], now: float | None = None
) -> list[DriftHistory]:
    """Drift per bucket of the last :data:`DRIFT_DAYS` days, for the versions that served
    the most rows (at most :data:`MAX_VERSIONS`)."""
    end = time.time() if now is None else now
    rows = _served(store, model, end - DRIFT_DAYS * 86400, end + 1)
    if rows.empty:
        return []
    size = bucket_size(float(rows["ts"].max() - rows["ts"].min()))
    counts = rows["version"].value_counts()
    out = []
    for version in [str(v) for v in counts.index[:MAX_VERSIONS]]:
        history = DriftHistory(version, size)
        out.append(history)
        try:
            prepared, features, _ = _reference(store, model, version, cache)
        except DatawheelError as exc:
            history.notes.append(f"no drift reference for {model}:{version}: {exc}")
            continue
        mine = rows[rows["version"] == version]
        for start, group in mine.groupby((mine["ts"] // size) * size, sort=True):
            if len(group) < MIN_ROWS:
                continue
            x = np.vstack(list(group["inputs"]))
            if x.shape[1] != len(features):
                history.notes.append(
                    f"rows of {model}:{version} have {x.shape[1]} values, its reference "
                    f"{len(features)} features"
                )
                break
            key = f"drift:{model}:{version}:{start}:{size}:{len(group)}"
            if key not in cache:
                report = _compare(prepared, features, x)
                cache[key] = DriftBucket(
                    float(start),
                    float(start) + size,
                    len(group),
                    list(report.drifted_features),
                    {f.name: float(f.severity) for f in report.features},
                    bool(report.dataset_drift),
                )
            history.buckets.append(cache[key])
        if not history.buckets and not history.notes:
            history.notes.append(
                f"fewer than {MIN_ROWS} rows of {model}:{version} in every bucket so far"
            )
    return out


def window_report(
    store: Store, model: str, version: str, start: float, end: float, cache: dict[str, Any]
) -> tuple[Any, str, str]:
    """The drift engine's report of ``model:version``'s rows served in ``[start, end)``
    (with their predictions and feedback labels), its reference's and its window's names."""
    from datawheel.orchestration.drift_inputs import ledger_sample
    from datawheel.orchestration.drift_report import compare_samples

    _, features, reference = _reference(store, model, version, cache)
    current = ledger_sample(
        store,
        model,
        version,
        features,
        start,
        until=end,
        where=f"window {_iso(start)} to {_iso(end)}",
        fix="pick a window from the flywheel page's drift table",
    )
    return compare_samples(reference, current), reference.name, current.name


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
