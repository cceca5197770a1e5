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
from datawheel.monitoring.stats import quantile_edges, sorted_quantiles
from datawheel.monitoring.streaming import count_below

__all__ = [
    "FORMAT",
    "MAX_CATEGORIES",
    "REFERENCE_FILE",
    "SKETCH_POINTS",
    "DriftReference",
    "FeatureReference",
    "build_reference",
    "categorical_from_sorted",
    "categorical_from_values",
    "category_keys",
    "count_labels",
    "feature_reference",
    "low_cardinality",
    "numeric_from_sorted",
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


def low_cardinality(sorted_finite: np.ndarray) -> bool:
    """All integers, at most :data:`MAX_CATEGORIES` distinct values (input sorted, finite)."""
    v = sorted_finite
    if v.size == 0 or not np.array_equal(v[::997], np.round(v[::997])):  # cheap rejection first
        return False
    if not np.array_equal(v, np.round(v)):
        return False
    return 1 + int(np.count_nonzero(v[1:] != v[:-1])) <= MAX_CATEGORIES


def mean_std(v: np.ndarray) -> tuple[float, float]:
    """Mean and population std in float64: one widening copy, centred, and a dot product
    (half the time of ``v.std(dtype=float64)``, which makes two float64 temporaries)."""
    w = v.astype(np.float64)  # always a copy: centred in place below
    mean = float(w.mean())
    w -= mean
    return mean, math.sqrt(float(np.dot(w, w)) / w.size)


def numeric_from_sorted(name: str, v: np.ndarray, missing: int, bins: int) -> FeatureReference:
    """A numeric feature's reference from its sorted finite values."""
    if v.size == 0:
        return FeatureReference(name, "numeric", 0, missing)
    edges = quantile_edges(v, bins, assume_sorted=True)
    props = np.diff(np.r_[0, count_below(v, edges, "left"), v.size]) / v.size
    sketch = sorted_quantiles(v, np.linspace(0.0, 1.0, SKETCH_POINTS))
    mean, std = mean_std(v)
    return FeatureReference(
        name,
        "numeric",
        int(v.size),
        missing,
        _finite(mean),
        _finite(std),
        edges.tolist(),
        props.tolist(),
        sketch.tolist(),
    )


def categorical_from_sorted(name: str, v: np.ndarray, missing: int) -> FeatureReference:
    """A numeric-valued categorical feature's reference from its sorted finite values."""
    if v.size == 0:
        return FeatureReference(name, "categorical", 0, missing)
    values, n = np.unique(v, return_counts=True)
    keys = category_keys(values)
    return FeatureReference(
        name,
        "categorical",
        int(v.size),
        missing,
        _finite(float(v.mean(dtype=np.float64))),
        _finite(float(v.std(dtype=np.float64))),
        ((values[1:] + values[:-1]) / 2).astype(np.float64).tolist(),
        (n / v.size).tolist(),
        [],
        {str(k): int(c) for k, c in zip(keys, n, strict=True)},
    )


def categorical_from_values(name: str, col: np.ndarray) -> FeatureReference:
    """A categorical feature's reference from values of any type (missing: None/NaN/"")."""
    keys = category_keys(col)
    missing = int(np.count_nonzero(keys == ""))
    return FeatureReference(
        name, "categorical", len(keys) - missing, missing, categories=count_labels(col)
    )


def feature_reference(
    name: str, col: np.ndarray, bins: int, *, categorical: bool = False, numeric: bool = False
) -> tuple[FeatureReference, np.ndarray | None]:
    """One feature's reference, and its sorted finite values when it is numeric-valued.

    ``categorical``/``numeric`` force the kind; otherwise the module docstring's rule.
    Infinite values count as missing.
    """
    if col.dtype == object or col.dtype == bool:
        if numeric:
            raise DatawheelError(f"feature {name!r} is not numeric", "drop it from numeric=")
        return categorical_from_values(name, col), None
    f = col if np.issubdtype(col.dtype, np.floating) else col.astype(np.float64)
    finite = np.isfinite(f)
    missing = int(f.size - np.count_nonzero(finite))
    v = np.sort(f[finite] if missing else f)
    if categorical or (not numeric and low_cardinality(v)):
        return categorical_from_sorted(name, v, missing), v
    return numeric_from_sorted(name, v, missing, bins), v


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
    labels: Sequence[Any] | np.ndarray | None = None,
    predictions: Sequence[Any] | np.ndarray | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> DriftReference:
    """Summarise reference rows (the training split) for drift: see the module docstring."""
    if bins < 2:
        raise DatawheelError(f"bins={bins} is too few", "use at least 2 bins (10 is the default)")
    forced_cat, forced_num = set(categorical), set(numeric)
    out = [
        feature_reference(
            name, col, bins, categorical=name in forced_cat, numeric=name in forced_num
        )[0]
        for name, col in zip(features, _columns(x, features), strict=True)
    ]
    return DriftReference(out, len(x), bins, count_labels(labels), count_labels(predictions))
