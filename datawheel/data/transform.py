"""The fitted input transform: category codes, imputation, standardization and the label map.

It is fitted on the training split only, saved as JSON next to the model, and baked into
the exported TorchScript so serving applies exactly the same maths. A categorical feature's
column holds its code (:mod:`datawheel.data.categorical`); its mean is 0 and its std 1, so
standardization leaves codes as they are and a missing code (NaN) becomes 0, "other".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datawheel.data.categorical import decode_column, encode_frame, recode_column

__all__ = ["Transform", "fit_transform"]


@dataclass(frozen=True)
class Transform:
    features: list[str]
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_shape: list[int] | None = None
    categories: dict[str, list[str]] = field(default_factory=dict)  # categorical feature -> its
    low: list[float | None] | None = None  # per-feature train min (None for categorical)
    high: list[float | None] | None = None  # per-feature train max

    @property
    def n_features(self) -> int:
        return len(self.features)

    def cardinalities(self) -> dict[int, int]:
        """Column index -> number of categories, for each categorical feature."""
        cats = self.categories
        return {i: len(cats[f]) for i, f in enumerate(self.features) if f in cats}

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """The float32 rows of ``frame``'s features: numbers as they are, categories coded."""
        return encode_frame(frame, self.features, self.categories)

    def decode_frame(self, rows: np.ndarray) -> pd.DataFrame:
        """The inverse of :meth:`encode_frame`: categorical codes back to text ("other" -> None)."""
        rows = np.asarray(rows, np.float32)
        data: dict[str, Any] = {}
        for i, f in enumerate(self.features):
            cats = self.categories.get(f)
            data[f] = (
                pd.Series(decode_column(rows[:, i], cats), dtype=object)
                if cats is not None
                else rows[:, i]
            )
        return pd.DataFrame(data, columns=self.features)

    def recode(self, x: np.ndarray, target: Transform) -> np.ndarray:
        """Rows coded by this transform (its feature order), with every categorical code
        moved into ``target``'s categories (one ``target`` never saw becomes 0, "other")."""
        out = np.array(x, np.float32)
        for j, f in enumerate(self.features):
            source, wanted = self.categories.get(f), target.categories.get(f)
            if source is None or wanted is None or source == wanted:
                continue
            out[:, j] = recode_column(out[:, j], source, wanted)
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Impute NaN with the training mean, then standardize; float32 out."""
        mean = np.asarray(self.mean, np.float32)
        x = np.where(np.isnan(x), mean, x.astype(np.float32))
        return ((x - mean) / np.asarray(self.std, np.float32)).astype(np.float32)

    def feature_schema(self) -> list[dict[str, Any]]:
        """Each feature's name and type, with its categories or its training range."""
        low = self.low or [None] * self.n_features
        high = self.high or [None] * self.n_features
        out: list[dict[str, Any]] = []
        for i, f in enumerate(self.features):
            if f in self.categories:
                out.append(
                    {
                        "name": f,
                        "type": "categorical",
                        "categories": list(self.categories[f]),
                        "other": "a missing value or any other category",
                    }
                )
            else:
                out.append({"name": f, "type": "numeric", "range": [low[i], high[i]]})
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Transform:
        return cls(**json.loads(Path(path).read_text()))


def _bound(values: np.ndarray, fn: Any) -> list[float | None]:
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(values), values, np.nan)
        got = [fn(col) if np.isfinite(col).any() else np.nan for col in finite.T]
    return [float(v) if np.isfinite(v) else None for v in got]


def fit_transform(
    x_train: np.ndarray,
    features: list[str],
    classes: list[str],
    image_shape: list[int] | None = None,
    categories: dict[str, list[str]] | None = None,
) -> Transform:
    """Fit on training rows only: per-feature mean and std (std 0 becomes 1), and the train
    range; a categorical feature (in ``categories``) keeps its codes: mean 0, std 1."""
    x = x_train.astype(np.float64)
    cats = dict(categories or {})
    coded = np.asarray([f in cats for f in features], np.bool_)
    with np.errstate(all="ignore"):
        mean = np.nanmean(x, axis=0) if len(x) else np.full(len(features), np.nan)
        std = np.nanstd(x, axis=0) if len(x) else np.full(len(features), np.nan)
    mean = np.where(np.isnan(mean) | coded, 0.0, mean)
    std = np.where((std < 1e-8) | np.isnan(std) | coded, 1.0, std)
    low = [None if c else v for c, v in zip(coded, _bound(x, np.nanmin), strict=True)]
    high = [None if c else v for c, v in zip(coded, _bound(x, np.nanmax), strict=True)]
    if image_shape:  # pixels: the range of each of them says nothing a client needs
        low = high = None  # type: ignore[assignment]
    return Transform(features, classes, mean.tolist(), std.tolist(), image_shape, cats, low, high)
