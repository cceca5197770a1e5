"""Input drift: how far recent inputs have moved from the training distribution.

The served model's transform carries the training split's per-feature mean and
standard deviation. Each batch updates an exponentially weighted mean of the
standardized inputs (half-life in rows); the drift score is the mean absolute
standardized shift over features: 0 when recent inputs are centred where training
data was, 1 when features have moved by one training standard deviation on average.
Missing values count as the training mean (that is what the model imputes). With
no drift, the score's noise floor is about 0.8/sqrt(rows) for the rows in the window.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["DriftMonitor"]


class DriftMonitor:
    def __init__(self, mean: list[float], std: list[float], *, half_life_rows: int = 1000) -> None:
        if len(mean) != len(std):
            raise ValueError("mean and std must have one value per feature")
        self._mean = np.asarray(mean, np.float64)
        self._std = np.asarray(std, np.float64)
        self._half_life = float(half_life_rows)
        self._shift = np.zeros(len(mean), np.float64)
        self._rows = 0
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        """Rows seen so far."""
        return self._rows

    def observe(self, rows: np.ndarray) -> None:
        """Fold one batch of raw float rows [n, n_features] into the running shift."""
        n = len(rows)
        if n == 0:
            return
        missing = np.isnan(rows)
        if missing.any():
            rows = np.where(missing, self._mean, rows)
        z = (rows.mean(axis=0, dtype=np.float64) - self._mean) / self._std
        with self._lock:
            self._shift += (1.0 - 0.5 ** (n / self._half_life)) * (z - self._shift)
            self._rows += n

    def score(self) -> float:
        """Mean absolute standardized shift over features (0 before any input)."""
        with self._lock:
            if not self._rows:
                return 0.0
            # bias-corrected like Adam's moments: the average starts at 0, not at the data
            weight = 1.0 - 0.5 ** (self._rows / self._half_life)
            return float(np.abs(self._shift / weight).mean())
