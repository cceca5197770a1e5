"""What a dataset version's manifest says about its rows: schema, per-feature stats, labels.

:func:`describe` is the one place those facts are computed, for a candidate version at
ingest and for a source in the pre-flight checks, so both are judged by the same numbers.
The result is standard JSON: a statistic that is not finite is ``null``, and infinite
values are counted (``infinite``) instead of poisoning ``min``/``max``/``mean``. A
categorical feature (a text column, :mod:`datawheel.data.categorical`) is ``"kind":
"categorical"`` in the schema, and its stats are its categories with their row counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from datawheel.data.categorical import category_counts

__all__ = ["FLOAT32_MAX", "describe", "is_missing_label"]

FLOAT32_MAX = float(np.finfo(np.float32).max)  # ~3.4e38: training casts features to float32

# What a missing label looks like once it has been through CSV parsing and ``astype(str)``.
_MISSING_LABEL_TEXT = frozenset({"", "nan", "none", "null", "<na>", "nat", "n/a", "na"})


def is_missing_label(value: object) -> bool:
    """True for a label that names no class: NaN, None, an empty or "nan"-like string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if pd.isna(value):  # type: ignore[call-overload]
            return True
    except (TypeError, ValueError):
        pass
    return str(value).strip().lower() in _MISSING_LABEL_TEXT


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _column_stats(values: np.ndarray) -> dict[str, Any]:
    nan = np.isnan(values)
    inf = np.isinf(values)
    finite = values[~nan & ~inf]
    with np.errstate(over="ignore", invalid="ignore"):
        stats = {
            "min": float(finite.min()) if finite.size else math.nan,
            "max": float(finite.max()) if finite.size else math.nan,
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
        }
    return {
        **{k: _finite_or_none(v) for k, v in stats.items()},
        "missing": int(nan.sum()),
        "infinite": int(inf.sum()),
    }


def _categorical_stats(values: pd.Series) -> dict[str, Any]:
    counts = category_counts(values.tolist())
    return {
        "kind": "categorical",
        "distinct": len(counts),
        "categories": counts,
        "missing": int(values.isna().sum()),
        "infinite": 0,
    }


def _is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series)


def describe(frame: pd.DataFrame, label: str) -> dict[str, Any]:
    """Schema, per-feature stats and label distribution of a frame (standard JSON only).

    ``label_distribution`` and ``classes`` name real classes only; rows whose label is
    missing are counted in ``missing_labels``.
    """
    features = [c for c in frame.columns if c != label]
    stats = {
        str(col): _categorical_stats(frame[col])
        if _is_text(frame[col])
        else _column_stats(frame[col].to_numpy(dtype=np.float64, na_value=np.nan))
        for col in features
    }
    labels = frame[label]
    missing = labels.map(is_missing_label).to_numpy(dtype=bool)
    counts = labels[~missing].astype(str).value_counts().sort_index()
    return {
        "schema": {
            "features": [
                {"name": str(c), "dtype": "string", "kind": "categorical"}
                if _is_text(frame[c])
                else {"name": str(c), "dtype": str(frame[c].dtype), "kind": "numeric"}
                for c in features
            ],
            "label": {"name": label, "dtype": "string"},
        },
        "rows": len(frame),
        "stats": stats,
        "label_distribution": {str(k): int(v) for k, v in counts.items()},
        "classes": sorted(str(k) for k in counts.index),
        "missing_labels": int(missing.sum()),
    }
