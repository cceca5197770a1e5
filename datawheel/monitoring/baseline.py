"""What the reference (a model's training split) looks like, in a small serialisable record.

A :class:`DriftReference` carries, per feature, what drift needs without the raw rows: the
quantile bin edges and the reference share per bin (PSI, live or batch), a 1001-point
quantile sketch (KS and Wasserstein-1 against a saved reference), mean and std, the missing
count, and for categorical features the count per category. It is saved as
``drift_reference.json`` (:data:`REFERENCE_FILE`) next to a model version's files.

Which features are categorical: a non-numeric column (strings, booleans), a name in
``categorical``, or a numeric column whose non-missing values are all integers with at most
:data:`MAX_CATEGORIES` distinct values ("low cardinality"), unless its name is in
``numeric``. Category keys are strings (an integer value 3.0 is ``"3"``). A categorical
feature whose values are numbers also gets ``edges`` at the midpoints between consecutive
values and ``proportions`` per value, so the server's live PSI bins it like any other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datawheel.errors import DatawheelError
from datawheel.monitoring.stats import bin_counts, quantile_edges, sorted_quantiles

__all__ = [
    "FORMAT",
    "MAX_CATEGORIES",
    "REFERENCE_FILE",
    "SKETCH_POINTS",
    "DriftReference",
    "FeatureReference",
    "build_reference",
    "category_keys",
    "count_labels",
]

REFERENCE_FILE = "drift_reference.json"  # file name inside a model version's folder
FORMAT = "datawheel.drift_reference/1"
MAX_CATEGORIES = 20  # an all-integer numeric column with at most this many values is categorical
SKETCH_POINTS = 1001  # quantiles at k/1000, k = 0..1000


@dataclass(frozen=True)
class FeatureReference:
    name: str
    kind: str  # "numeric" | "categorical"
    rows: int  # non-missing reference rows
    missing: int
    mean: float | None = None
    std: float | None = None
    edges: list[float] = field(default_factory=list)  # inner quantile edges (or midpoints)
    proportions: list[float] = field(default_factory=list)  # share per bin, len(edges) + 1
    quantiles: list[float] = field(default_factory=list)  # SKETCH_POINTS-point sketch
    categories: dict[str, int] = field(default_factory=dict)  # categorical: count per key


@dataclass(frozen=True)
class DriftReference:
    features: list[FeatureReference]
    rows: int
    bins: int = 10
    labels: dict[str, int] = field(default_factory=dict)  # training label counts
    predictions: dict[str, int] = field(default_factory=dict)  # model's test-split predictions

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftReference:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DatawheelError(
                "this is not a datawheel drift reference (format "
                f"{d.get('format') if isinstance(d, dict) else None!r}, expected {FORMAT!r})",
                "build it again with datawheel.monitoring.baseline.build_reference",
            )
        try:
            features = [FeatureReference(**f) for f in d["features"]]
            return cls(
                features=features,
                rows=int(d["rows"]),
                bins=int(d.get("bins", 10)),
                labels={str(k): int(v) for k, v in d.get("labels", {}).items()},
                predictions={str(k): int(v) for k, v in d.get("predictions", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatawheelError(
                f"the drift reference is malformed ({type(exc).__name__}: {exc})",
                "build it again with datawheel.monitoring.baseline.build_reference",
            ) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), allow_nan=False))

    @classmethod
    def load(cls, path: str | Path) -> DriftReference:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DatawheelError(
                f"cannot read the drift reference {path} ({exc})", "check the path"
            ) from None
        return cls.from_dict(data)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def category_keys(values: np.ndarray) -> np.ndarray:
    """Values as category keys: numbers that are integers print without ".0"; missing -> ""."""
    v = np.asarray(values)
    if np.issubdtype(v.dtype, np.number) or v.dtype == bool:
        f = v.astype(np.float64)
        ints = np.isfinite(f) & (f == np.round(f))
        out = np.where(ints, np.char.mod("%d", np.where(ints, f, 0).astype(np.int64)), "")
        rest = ~ints & ~np.isnan(f)
        if rest.any():
            out = out.astype(object)
            out[rest] = [repr(float(x)) for x in f[rest]]
        return np.where(np.isnan(f), "", out).astype(str)
    s = pd.Series(v, dtype=object)
    return np.where(s.isna().to_numpy(), "", s.astype(str).to_numpy()).astype(str)


def count_labels(values: Sequence[Any] | np.ndarray | None) -> dict[str, int]:
    """Counts per class key (see :func:`category_keys`), missing values left out."""
    if values is None:
        return {}
    keys = category_keys(np.asarray(values))
    uniq, counts = np.unique(keys[keys != ""], return_counts=True)
    return {str(k): int(c) for k, c in zip(uniq, counts, strict=True)}


def _is_low_cardinality(finite: np.ndarray) -> bool:
    if finite.size == 0 or not np.all(finite == np.round(finite)):
        return False
    return np.unique(finite).size <= MAX_CATEGORIES


def _numeric(name: str, col: np.ndarray, bins: int) -> FeatureReference:
    nan = np.isnan(col) | np.isinf(col)
    v = np.sort(col[~nan])
    if v.size == 0:
        return FeatureReference(name, "numeric", 0, int(nan.sum()))
    edges = quantile_edges(v, bins, assume_sorted=True)
    props = bin_counts(v, edges) / v.size
    sketch = sorted_quantiles(v, np.linspace(0.0, 1.0, SKETCH_POINTS))
    return FeatureReference(
        name,
        "numeric",
        int(v.size),
        int(nan.sum()),
        _finite(float(v.mean(dtype=np.float64))),
        _finite(float(v.std(dtype=np.float64))),
        edges.tolist(),
        props.tolist(),
        sketch.tolist(),
    )


def _categorical(name: str, col: np.ndarray) -> FeatureReference:
    keys = category_keys(col)
    present = keys != ""
    counts = count_labels(col)
    mean = std = None
    edges: list[float] = []
    props: list[float] = []
    if np.issubdtype(col.dtype, np.number) and present.any():
        f = col.astype(np.float64)[present]
        mean, std = _finite(float(f.mean())), _finite(float(f.std()))
        if np.all(np.isfinite(f)):
            values, n = np.unique(f, return_counts=True)
            edges = ((values[1:] + values[:-1]) / 2).tolist()
            props = (n / n.sum()).tolist()
    return FeatureReference(
        name,
        "categorical",
        int(present.sum()),
        int((~present).sum()),
        mean,
        std,
        edges,
        props,
        [],
        counts,
    )


def _columns(x: np.ndarray | pd.DataFrame, features: list[str]) -> list[np.ndarray]:
    if isinstance(x, pd.DataFrame):
        missing = [f for f in features if f not in x.columns]
        if missing:
            raise DatawheelError(
                f"the reference has no column {missing[0]!r}", "pass the model's feature names"
            )
        out = []
        for f in features:
            col = x[f]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                out.append(col.to_numpy(np.float64, na_value=np.nan))
            else:
                out.append(col.to_numpy(object))
        return out
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != len(features):
        raise DatawheelError(
            f"the reference has shape {arr.shape}, expected [rows, {len(features)}]",
            "pass one column per feature name",
        )
    return [arr[:, i] for i in range(arr.shape[1])]


def build_reference(
    x: np.ndarray | pd.DataFrame,
    features: list[str],
    *,
    bins: int = 10,
    labels: Sequence[Any] | None = None,
    predictions: Sequence[Any] | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> DriftReference:
    """Summarise reference rows (the training split) for drift: see the module docstring."""
    if bins < 2:
        raise DatawheelError(f"bins={bins} is too few", "use at least 2 bins (10 is the default)")
    forced_cat, forced_num = set(categorical), set(numeric)
    out = []
    for name, col in zip(features, _columns(x, features), strict=True):
        is_num = col.dtype != object
        if is_num:
            col = col.astype(np.float64)
        if name in forced_num and not is_num:
            raise DatawheelError(f"feature {name!r} is not numeric", "drop it from numeric=")
        finite = col[np.isfinite(col)] if is_num else col
        cat = not is_num or name in forced_cat
        cat = cat or (name not in forced_num and _is_low_cardinality(finite))
        out.append(_categorical(name, col) if cat else _numeric(name, col, bins))
    rows = len(x)
    return DriftReference(out, rows, bins, count_labels(labels), count_labels(predictions))
