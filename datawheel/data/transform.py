"""The fitted input transform: imputation, standardization and the label map.

It is fitted on the training split only, saved as JSON next to the model, and
baked into the exported TorchScript so serving applies exactly the same maths.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["Transform", "fit_transform"]


@dataclass(frozen=True)
class Transform:
    features: list[str]
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_shape: list[int] | None = None

    @property
    def n_features(self) -> int:
        return len(self.features)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Impute NaN with the training mean, then standardize; float32 out."""
        mean = np.asarray(self.mean, np.float32)
        x = np.where(np.isnan(x), mean, x.astype(np.float32))
        return ((x - mean) / np.asarray(self.std, np.float32)).astype(np.float32)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Transform:
        return cls(**json.loads(Path(path).read_text()))


def fit_transform(
    x_train: np.ndarray,
    features: list[str],
    classes: list[str],
    image_shape: list[int] | None = None,
) -> Transform:
    """Fit on training rows only: per-feature mean and std (std 0 becomes 1)."""
    mean = np.nanmean(x_train.astype(np.float64), axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    std = np.nanstd(x_train.astype(np.float64), axis=0)
    std = np.where((std < 1e-8) | np.isnan(std), 1.0, std)
    return Transform(features, classes, mean.tolist(), std.tolist(), image_shape)
