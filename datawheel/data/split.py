"""Deterministic stratified train/val/test split and the fitted transform.

The split is written as ``splits.npz`` with RAW features (the exported model
carries its own transform, so the champion and the challenger score the same raw
test rows) and ``transform.json`` fitted on the training rows only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datawheel.data.transform import Transform, fit_transform
from datawheel.errors import DatawheelError

__all__ = ["Splits", "load_splits", "split_frame", "write_splits"]


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    transform: Transform


def split_frame(
    frame: pd.DataFrame,
    *,
    label: str,
    features: list[str],
    classes: list[str],
    image_shape: list[int] | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Splits:
    """Stratified split by row content: a row lands in the same split in every version.

    ``seed`` salts the row hash; it is the *split* seed, independent of training's
    seed, so a challenger and the champion are always scored on rows neither saw.
    """

    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatawheelError(
            f"split fractions val={val_fraction} test={test_fraction} are not valid",
            "pick fractions in (0, 1) that sum to less than 1",
        )
    index = {c: i for i, c in enumerate(classes)}
    y = frame[label].astype(str).map(index)
    if y.isna().any():
        raise DatawheelError(
            "rows carry labels outside the class list", "validate the dataset first"
        )
    x = frame[features].to_numpy(np.float32)
    yy = y.to_numpy(np.int64)
    counts = np.bincount(yy, minlength=len(classes))
    if counts.min() < 3:
        rare = [classes[i] for i in np.flatnonzero(counts < 3)][:5]
        raise DatawheelError(
            f"class(es) {', '.join(rare)} have fewer than 3 rows, too few to split",
            "add rows for those classes or drop them",
        )
    train, val, test = _hash_split(x, yy, seed, val_fraction, test_fraction)
    transform = fit_transform(x[train], features, classes, image_shape)
    return Splits(x[train], yy[train], x[val], yy[val], x[test], yy[test], transform)


def _hash_split(
    x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    salt = np.uint64(seed * 0x9E3779B97F4A7C15 % (1 << 64))
    rows = np.ascontiguousarray(np.nan_to_num(x, nan=-1.0).astype(np.float32))
    keys = np.array(
        [hashlib.blake2b(r.tobytes() + salt.tobytes(), digest_size=8).digest() for r in rows]
    )
    train, val, test = [], [], []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        members = members[np.argsort(keys[members], kind="stable")]
        n = len(members)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        test.append(members[:n_test])
        val.append(members[n_test : n_test + n_val])
        train.append(members[n_test + n_val :])
    return (
        np.sort(np.concatenate(train)),
        np.sort(np.concatenate(val)),
        np.sort(np.concatenate(test)),
    )


def write_splits(splits: Splits, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(
        out / "splits.npz",
        x_train=splits.x_train,
        y_train=splits.y_train,
        x_val=splits.x_val,
        y_val=splits.y_val,
        x_test=splits.x_test,
        y_test=splits.y_test,
    )
    splits.transform.save(out / "transform.json")


def load_splits(in_dir: str | Path) -> Splits:
    src = Path(in_dir)
    with np.load(src / "splits.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return Splits(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_val"],
        arrays["y_val"],
        arrays["x_test"],
        arrays["y_test"],
        Transform.load(src / "transform.json"),
    )
