"""Categorical feature columns: which columns are categorical, their categories, their codes.

A dataset version stores a categorical column as text (a category is a string; a missing
value is null), so its content never depends on any vocabulary. Which columns are
categorical is decided once, at ingest (:func:`categorize`): strings, booleans, and integer
columns with at most :data:`MAX_INT_CATEGORIES` distinct values. Booleans are spelled
``True``/``False`` and integers in decimal, as the server spells a JSON ``true`` or ``3``.

Training codes a categorical value by the categories fitted on the training split
(:func:`fit_categories`): code ``i + 1`` is ``categories[i]`` (most frequent first) and code
``0`` is "other", for a missing value and for any category training never saw. The codes
travel as float32 in the same rows as the numeric features; the network's first module turns
them into one-hot vectors or learned embeddings (:mod:`datawheel.training.encoder`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MAX_CATEGORIES",
    "MAX_INT_CATEGORIES",
    "OTHER",
    "categorical_features",
    "categorize",
    "category_counts",
    "decode_column",
    "encode_column",
    "encode_frame",
    "fit_categories",
    "is_categorical",
    "recode_column",
]

MAX_INT_CATEGORIES = 10  # an integer column with at most this many distinct values is categorical
MAX_CATEGORIES = 1000  # categories kept per feature (the most frequent in train); the rest: other
OTHER = 0.0  # the code of a missing value and of a category training never saw


def is_categorical(series: pd.Series) -> bool:
    """Whether an ingested column is categorical: text, boolean or a low-cardinality integer."""
    if pd.api.types.is_bool_dtype(series):
        return True
    if pd.api.types.is_integer_dtype(series):
        distinct = int(series.nunique(dropna=True))
        return distinct <= MAX_INT_CATEGORIES and len(series) >= 5 * distinct
    return not pd.api.types.is_numeric_dtype(series)


def _spelled(value: Any) -> str | None:
    """One categorical value as text; None when it is missing."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_text(series: pd.Series) -> pd.Series:
    """``series`` as an object column of str (None for missing)."""
    return pd.Series([_spelled(v) for v in series.tolist()], index=series.index, dtype=object)


def categorize(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """Type ``frame``'s feature columns in place: categorical ones become text, every other one
    float32. Returns the categorical feature names, in column order."""
    categorical = [str(c) for c in features if is_categorical(frame[c])]
    for c in features:
        frame[c] = as_text(frame[c]) if c in categorical else frame[c].astype(np.float32)
    return categorical


def categorical_features(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """The categorical features of a stored dataset frame: its text (object) columns."""
    return [str(c) for c in features if not pd.api.types.is_numeric_dtype(frame[c])]


def category_counts(values: Iterable[Any]) -> dict[str, int]:
    """Each category's row count, most frequent first (ties by name); missing not counted."""
    counts: dict[str, int] = {}
    for v in values:
        text = _spelled(v)
        if text is not None:
            counts[text] = counts.get(text, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def fit_categories(
    frame: pd.DataFrame, columns: Sequence[str], limit: int = MAX_CATEGORIES
) -> dict[str, list[str]]:
    """Each column's categories as seen in ``frame`` (the training rows): the ``limit`` most
    frequent, most frequent first; the others will code as "other"."""
    return {c: list(category_counts(frame[c].tolist()))[:limit] for c in columns}


def encode_column(values: Iterable[Any], categories: Sequence[str]) -> np.ndarray:
    """float32 codes: ``i + 1`` for ``categories[i]``, 0 for missing or unseen values."""
    index = {c: float(i + 1) for i, c in enumerate(categories)}
    out = [index.get(t, OTHER) if (t := _spelled(v)) is not None else OTHER for v in values]
    return np.asarray(out, np.float32)


def decode_column(codes: np.ndarray, categories: Sequence[str]) -> list[str | None]:
    """The inverse of :func:`encode_column`: code 0, NaN or out of range -> None (missing)."""
    out: list[str | None] = []
    k = len(categories)
    for code in np.asarray(codes, np.float64).tolist():
        i = int(code) if code == code and float(code).is_integer() else 0
        out.append(categories[i - 1] if 1 <= i <= k else None)
    return out


def encode_frame(
    frame: pd.DataFrame, features: Sequence[str], categories: dict[str, list[str]]
) -> np.ndarray:
    """The float32 rows of ``frame``'s features: numbers as they are, categories coded."""
    out = np.empty((len(frame), len(features)), np.float32)
    for i, f in enumerate(features):
        cats = categories.get(f)
        if cats is not None:
            out[:, i] = encode_column(frame[f].tolist(), cats)
        else:
            out[:, i] = frame[f].to_numpy(np.float32, na_value=np.nan)
    return out


def recode_column(codes: np.ndarray, source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Codes under ``source``'s categories as codes under ``target``'s: a category ``target``
    lacks, and anything that is not a code of ``source``, become 0 ("other")."""
    where = {c: i + 1 for i, c in enumerate(target)}
    table = np.asarray([OTHER] + [where.get(c, OTHER) for c in source], np.float64)
    values = np.asarray(codes, np.float64)
    ok = np.isfinite(values) & (values >= 0) & (values < len(table))
    index = np.where(ok, values, 0.0)
    ok &= index == np.floor(index)
    return np.where(ok, table[index.astype(np.int64)], OTHER)
