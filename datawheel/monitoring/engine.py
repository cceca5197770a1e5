"""The drift engine: compare a reference with a current sample, feature by feature.

``compare(reference, current)`` returns a :class:`DriftReport`. The reference is a
:class:`PreparedReference` (from :func:`prepare_reference`, reusable across windows), a
frame or array of raw reference rows (prepared on the fly: exact statistics), or a saved
:class:`~datawheel.monitoring.baseline.DriftReference` (statistics against its sketch,
with the error bound reported). The current sample is a frame, an array, a dict of columns,
a Parquet path (streamed row group by row group) or an iterable of such chunks (streamed).

The rule (defaults; docs/DRIFT.md compares them with Evidently's):

* A numeric feature drifts when its KS test is significant after Benjamini-Hochberg
  across all the dataset's feature tests at false-discovery rate ``alpha`` (0.05) AND its
  effect is large: PSI >= ``psi_threshold`` (0.1) or Wasserstein-1 / reference std >=
  ``w1_threshold`` (0.1). A categorical one: chi-square significant after the same
  correction AND Jensen-Shannon distance >= ``js_threshold`` (0.1).
* A feature also drifts when its missing rate moves by >= ``missing_threshold`` (0.1) with
  a chi-square p <= ``alpha`` on (present, missing).
* The dataset drifts when the share of drifted features is >= ``dataset_share``, and with
  the default 0 that means when any one feature drifts: one broken feature is never
  averaged away among many good ones.
* Fewer than ``min_rows`` (20) non-missing current values: statistics, but no verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from datawheel.errors import DatawheelError
from datawheel.monitoring.baseline import DriftReference, count_labels, feature_reference
from datawheel.monitoring.feature_drift import (
    CategoricalAccumulator,
    Measured,
    NumericAccumulator,
    class_shift,
)
from datawheel.monitoring.streaming import (
    Grid,
    grid_from_sketch,
    grid_from_sorted,
    parquet_batches,
)
from datawheel.monitoring.verdict import (
    DriftConfig,
    DriftReport,
    FeatureDrift,
    judge,
    judge_classes,
)

__all__ = [
    "DriftConfig",
    "DriftReport",
    "FeatureDrift",
    "PreparedReference",
    "compare",
    "prepare_reference",
]

Chunk: TypeAlias = pd.DataFrame | np.ndarray | dict[str, np.ndarray]
Current: TypeAlias = Chunk | str | Path | Iterable[Chunk]


@dataclass(frozen=True)
class PreparedReference:
    """A reference ready to compare against: its summary, its grids, and (from raw rows)
    its sorted values, which make KS and small-sample W1 exact."""

    summary: DriftReference
    grids: dict[str, Grid]
    sorted: dict[str, np.ndarray] = field(default_factory=dict)


def _pool(config: DriftConfig) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, config.workers))


def _columns(chunk: Chunk, features: Sequence[str], what: str) -> list[np.ndarray]:
    if isinstance(chunk, pd.DataFrame | dict):
        absent = [f for f in features if f not in chunk]
        if absent:
            raise DatawheelError(
                f"the {what} has no column {absent[0]!r} ({len(absent)} features missing)",
                "give it every feature of the reference",
            )
        if isinstance(chunk, dict):
            return [np.asarray(chunk[f]) for f in features]
        return [_column(chunk[f]) for f in features]
    arr = np.asarray(chunk)
    if arr.ndim != 2 or arr.shape[1] != len(features):
        raise DatawheelError(
            f"the {what} has shape {arr.shape}, expected [rows, {len(features)}]",
            "pass one column per reference feature, in the reference's order",
        )
    return [arr[:, i] for i in range(arr.shape[1])]


def _column(col: pd.Series) -> np.ndarray:  # type: ignore[type-arg]
    """A frame column as numpy: plain numeric dtypes as they are (NaN stays NaN), nullable
    numerics as float64 with NaN, anything else as objects."""
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(object)
    if isinstance(col.dtype, np.dtype):
        return col.to_numpy()
    return col.to_numpy(np.float64, na_value=np.nan)


def prepare_reference(
    reference: DriftReference | pd.DataFrame | np.ndarray,
    features: Sequence[str] | None = None,
    *,
    config: DriftConfig | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    labels: Sequence[Any] | np.ndarray | None = None,
    predictions: Sequence[Any] | np.ndarray | None = None,
) -> PreparedReference:
    """Sort each numeric reference feature once and build its grid (see the module doc)."""
    cfg = config or DriftConfig()
    if isinstance(reference, DriftReference):
        grids = {}
        for f in reference.features:
            if f.kind == "numeric" and len(f.quantiles) >= 2:
                grids[f.name] = grid_from_sketch(f.quantiles, f.rows)
        return PreparedReference(reference, grids)
    if features is None:
        if not isinstance(reference, pd.DataFrame):
            raise DatawheelError("an array reference needs feature names", "pass features=")
        features = [str(c) for c in reference.columns]
    names = list(features)
    if len(reference) == 0:
        raise DatawheelError("the reference has no rows", "use the training split's rows")
    cols = _columns(reference, names, "reference")
    cat, num = set(categorical), set(numeric)

    def one(i: int) -> tuple[Any, np.ndarray | None, Grid | None]:
        ref, v = feature_reference(
            names[i], cols[i], cfg.bins, categorical=names[i] in cat, numeric=names[i] in num
        )
        ok = ref.kind == "numeric" and v is not None and v.size > 0
        grid = grid_from_sorted(v, cfg.grid_points) if ok and v is not None else None
        return ref, v if ok else None, grid

    with _pool(cfg) as pool:
        done = list(pool.map(one, range(len(names))))
    summary = DriftReference(
        [d[0] for d in done],
        len(reference),
        cfg.bins,
        count_labels(labels),
        count_labels(predictions),
    )
    grids = {n: d[2] for n, d in zip(names, done, strict=True) if d[2] is not None}
    kept = {n: d[1] for n, d in zip(names, done, strict=True) if d[1] is not None}
    return PreparedReference(summary, grids, kept)


def _chunks(current: Current, names: list[str], batch_rows: int) -> tuple[Iterator[Chunk], bool]:
    """The current sample as chunks, and whether it is one chunk held in memory."""
    if isinstance(current, str | Path):
        path = Path(current)
        if path.suffix.lower() == ".csv":
            return iter([pd.read_csv(path)]), True
        return iter(parquet_batches(path, names, batch_rows=batch_rows)), False
    if isinstance(current, pd.DataFrame | np.ndarray | dict):
        return iter([current]), True
    return iter(current), False


def compare(
    reference: PreparedReference | DriftReference | pd.DataFrame | np.ndarray,
    current: Current,
    *,
    config: DriftConfig | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    reference_labels: Sequence[Any] | np.ndarray | None = None,
    reference_predictions: Sequence[Any] | np.ndarray | None = None,
    current_labels: Sequence[Any] | np.ndarray | None = None,
    current_predictions: Sequence[Any] | np.ndarray | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference``; see the module docstring for the rule."""
    cfg = config or DriftConfig()
    prepared = (
        reference
        if isinstance(reference, PreparedReference)
        else prepare_reference(
            reference,
            features,
            config=cfg,
            categorical=categorical,
            numeric=numeric,
            labels=reference_labels,
            predictions=reference_predictions,
        )
    )
    summary = prepared.summary
    refs = summary.features
    if features is not None and isinstance(reference, PreparedReference | DriftReference):
        wanted = set(features)
        refs = [f for f in refs if f.name in wanted]
    names = [f.name for f in refs]
    accs: list[NumericAccumulator | CategoricalAccumulator] = [
        NumericAccumulator(f, prepared.grids.get(f.name))
        if f.kind == "numeric"
        else CategoricalAccumulator(f)
        for f in refs
    ]
    chunks, in_memory = _chunks(current, names, cfg.batch_rows)
    rows = 0
    with _pool(cfg) as pool:
        for chunk in chunks:
            cols = _columns(chunk, names, "current sample")
            rows += len(cols[0]) if cols else len(chunk)
            list(pool.map(_add, accs, cols))
        if rows == 0:
            raise DatawheelError(
                "the current sample has no rows", "compare a window with at least one row"
            )

        def finish(acc: NumericAccumulator | CategoricalAccumulator) -> Measured:
            if isinstance(acc, CategoricalAccumulator):
                return acc.finish()
            return acc.finish(prepared.sorted.get(acc.ref.name) if in_memory else None)

        measured = list(pool.map(finish, accs))
    report_features, dataset_drift, rule, notes = judge(measured, rows, cfg)
    prediction = _classes("prediction", summary.predictions, current_predictions, cfg)
    label = _classes("label", summary.labels, current_labels, cfg)
    return DriftReport(
        report_features,
        [f.name for f in report_features if f.drifted],
        dataset_drift,
        rule,
        summary.rows,
        rows,
        prediction,
        label,
        notes,
        cfg,
    )


def _add(acc: NumericAccumulator | CategoricalAccumulator, col: np.ndarray) -> None:
    try:
        acc.add(col)
    except (TypeError, ValueError):
        raise DatawheelError(
            f"feature {acc.ref.name!r} is numeric in the reference but not in the current sample",
            "give it numbers (missing values as empty cells or NaN)",
        ) from None


def _classes(
    name: str, ref: dict[str, int], cur: Sequence[Any] | np.ndarray | None, cfg: DriftConfig
) -> FeatureDrift | None:
    """Prediction or label drift: current class counts against the reference's."""
    if cur is None or not ref:
        return None
    counts = count_labels(cur)
    chi2, p, js, new, hist = class_shift(ref, counts)
    return judge_classes(name, sum(counts.values()), chi2, p, js, new, hist, cfg)
