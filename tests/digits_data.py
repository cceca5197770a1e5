"""scikit-learn's digits split once for the training and export tests."""

from __future__ import annotations

import functools

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@functools.cache
def raw_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RAW train/val rows and labels, plus the train mean and std (std 0 becomes 1)."""
    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean = xt.mean(axis=0)
    std = xt.std(axis=0)
    std[std < 1e-8] = 1.0
    return xt, yt, xv, yv, mean, std


def normalized_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/val rows standardized with the train statistics."""
    xt, yt, xv, yv, mean, std = raw_split()
    return (xt - mean) / std, yt, (xv - mean) / std, yv
