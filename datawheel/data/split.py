"""Train/val/test split by a fixed threshold on each row's content hash, and the fitted transform.

A row's split is a fixed function of its feature values and the split seed alone: its
canonical float32 bytes (and the text of its categorical values, never their codes, so no
vocabulary moves a row) are hashed with BLAKE2b salted by the seed, the first 8 bytes map to
``u`` uniform in [0, 1), and ``u < test_fraction`` goes to test, ``u < test_fraction +
val_fraction`` to val, anything else to train. So adding or removing rows never moves another
row, identical rows always share a split, and each class lands in each split in proportion
(up to binomial noise) without any count-based cut. A class too small to reach every split is
reported (:class:`~datawheel.data.split_report.SplitReport`), not dropped.

The split is written as ``splits.npz`` with RAW features (the exported model
carries its own transform, so the champion and the challenger score the same raw
test rows; a categorical feature is its code under the categories fitted on train) and
``transform.json`` fitted on the training rows only. Rows that came from
production (a harvested version's ``production_rows``) are split by the same hash like any
other; ``test_production`` marks which test rows they are, so the evaluation can score the
reference and the production slices apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from datawheel.data.categorical import categorical_features, encode_frame, fit_categories
from datawheel.data.split_report import SPLIT_NAMES, SplitReport
from datawheel.data.transform import Transform, fit_transform
from datawheel.errors import DatawheelError

__all__ = [
    "SPLIT_NAMES",
    "SplitPlan",
    "SplitReport",
    "Splits",
    "assign_splits",
    "frame_hashes",
    "load_splits",
    "plan_split",
    "row_hashes",
    "split_frame",
    "write_splits",
]

TRAIN, VAL, TEST = 0, 1, 2  # codes in SplitPlan.assignment, in SPLIT_NAMES order
_PERSON = b"datawheel.split"  # BLAKE2b personalization: these hashes are for splitting only


def _no_rows() -> np.ndarray:
    return np.zeros(0, np.bool_)


@dataclass(frozen=True)
class Splits:
    """The split rows. ``test_production`` is True for each test row that came from
    production; left out (or empty), every test row is a reference row."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    transform: Transform
    test_production: np.ndarray = field(default_factory=_no_rows)

    def __post_init__(self) -> None:
        flags = np.asarray(self.test_production, np.bool_)
        if flags.size == 0:
            flags = np.zeros(len(self.y_test), np.bool_)
        if flags.shape != (len(self.y_test),):
            raise ValueError(
                f"test_production has shape {flags.shape}, not one flag per test row "
                f"({len(self.y_test)})"
            )
        object.__setattr__(self, "test_production", flags)


def row_hashes(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A uint64 per row: BLAKE2b of the row's canonical float32 bytes, salted by ``seed``.

    Canonical: little-endian float32, ``-0.0`` as ``0.0`` and every NaN as the one quiet NaN,
    so rows equal as the model sees them hash equal.
    """
    rows = np.asarray(x)
    if rows.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {rows.shape}")
    canon = rows.astype(np.float32) + np.float32(0.0)  # a fresh copy; -0.0 + 0.0 == +0.0
    canon[np.isnan(canon)] = np.nan
    canon = np.ascontiguousarray(canon, dtype="<f4")  # the same bytes on every platform
    salt = hashlib.blake2b(str(int(seed)).encode(), digest_size=16).digest()
    n, width = canon.shape[0], canon.shape[1] * 4
    if n == 0:
        return np.zeros(0, np.uint64)
    if width == 0:
        one = hashlib.blake2b(b"", digest_size=8, salt=salt, person=_PERSON).digest()
        return np.full(n, np.frombuffer(one, "<u8")[0], np.uint64)
    buf = canon.data.cast("B")  # zero-copy; slices of it are hashed in place
    digests = b"".join(
        hashlib.blake2b(buf[i : i + width], digest_size=8, salt=salt, person=_PERSON).digest()
        for i in range(0, n * width, width)
    )
    return np.frombuffer(digests, "<u8").astype(np.uint64)


def assign_splits(
    x: np.ndarray, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2
) -> np.ndarray:
    """Each row's split code (TRAIN, VAL, TEST) by a fixed threshold on its salted hash."""
    return _assign(row_hashes(x, seed), val_fraction, test_fraction)


def frame_hashes(
    frame: pd.DataFrame, features: list[str], categorical: list[str], seed: int = 0
) -> np.ndarray:
    """:func:`row_hashes` of a frame with categorical (text) features: each row's numeric
    values as canonical float32 bytes, then each categorical value as its UTF-8 text
    (length-prefixed; a missing value is its own marker). Without categorical features this
    is ``row_hashes`` of the numbers, so a numeric dataset's split never changed."""
    numeric = [f for f in features if f not in categorical]
    numbers = frame[numeric].to_numpy(np.float32, na_value=np.nan)
    if not categorical:
        return row_hashes(numbers, seed)
    canon = numbers + np.float32(0.0)
    canon[np.isnan(canon)] = np.nan
    canon = np.ascontiguousarray(canon, dtype="<f4")
    salt = hashlib.blake2b(str(int(seed)).encode(), digest_size=16).digest()
    texts = frame[categorical].to_numpy(dtype=object)
    digests = []
    for i in range(len(frame)):
        parts = [canon[i].tobytes()]
        for value in texts[i]:
            if value is None or (isinstance(value, float) and value != value):
                parts.append(b"\xff\xff\xff\xff")
            else:
                data = str(value).encode()
                parts.append(len(data).to_bytes(4, "little") + data)
        digest = hashlib.blake2b(b"".join(parts), digest_size=8, salt=salt, person=_PERSON)
        digests.append(digest.digest())
    return np.frombuffer(b"".join(digests), "<u8").astype(np.uint64)


def _assign(hashes: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    _check_fractions(val_fraction, test_fraction)
    u = (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    codes = np.full(len(u), TRAIN, np.int8)
    codes[u < test_fraction + val_fraction] = VAL
    codes[u < test_fraction] = TEST
    return codes


@dataclass(frozen=True)
class SplitPlan:
    """A frame's rows encoded and each row's split decided, before anything is fitted."""

    x: np.ndarray  # float32 features, one row per frame row
    y: np.ndarray  # int64 class index into ``classes``
    assignment: np.ndarray  # int8 split code per row: TRAIN, VAL or TEST
    classes: list[str]
    features: list[str]
    seed: int
    val_fraction: float
    test_fraction: float
    production: np.ndarray = field(default_factory=_no_rows)  # bool per row; empty: none
    categories: dict[str, list[str]] = field(default_factory=dict)  # fitted on the train rows

    def report(self) -> SplitReport:
        k = len(SPLIT_NAMES)
        cells = np.bincount(self.y * k + self.assignment, minlength=len(self.classes) * k)
        counts = cells.reshape(len(self.classes), k).astype(np.int64)
        return SplitReport(self.classes, counts, self.seed, self.val_fraction, self.test_fraction)

    def splits(self, image_shape: list[int] | None = None) -> Splits:
        """The split rows and the transform fitted on train; raises if training cannot use it."""
        self.report().raise_if_unusable()
        train, val, test = (np.flatnonzero(self.assignment == code) for code in (TRAIN, VAL, TEST))
        transform = fit_transform(
            self.x[train], self.features, self.classes, image_shape, self.categories
        )
        x, y = self.x, self.y
        production = self.production[test] if self.production.size else _no_rows()
        return Splits(x[train], y[train], x[val], y[val], x[test], y[test], transform, production)


def plan_split(
    frame: pd.DataFrame,
    *,
    label: str,
    features: list[str],
    classes: list[str],
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    production: np.ndarray | None = None,
) -> SplitPlan:
    """Encode ``frame`` and assign every row to a split by its content hash.

    ``production`` (bool per frame row, from :func:`datawheel.data.versions.production_mask`)
    marks the rows that came from production; they are split like the others and flagged
    in the test split.
    """
    _check_fractions(val_fraction, test_fraction)
    flags = _no_rows() if production is None else np.asarray(production, np.bool_)
    if flags.size and flags.shape != (len(frame),):
        raise ValueError(f"production has shape {flags.shape}, not one flag per row")
    index = {c: i for i, c in enumerate(classes)}
    y = frame[label].astype(str).map(index)
    if y.isna().any():
        raise DatawheelError(
            "rows carry labels outside the class list", "validate the dataset first"
        )
    categorical = categorical_features(frame, features)
    hashes = frame_hashes(frame, features, categorical, seed)
    assignment = _assign(hashes, val_fraction, test_fraction)
    categories = fit_categories(frame.iloc[np.flatnonzero(assignment == TRAIN)], categorical)
    x = encode_frame(frame, features, categories)
    return SplitPlan(
        x,
        y.to_numpy(np.int64),
        assignment,
        list(classes),
        list(features),
        seed,
        val_fraction,
        test_fraction,
        flags,
        categories,
    )


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
    """Split by row content: a row lands in the same split in every version.

    ``seed`` salts the row hash; it is the *split* seed, independent of training's
    seed, so a challenger and the champion are always scored on rows neither saw.
    Raises :class:`DatawheelError` if train, val or test would be unusable (see
    :meth:`SplitReport.raise_if_unusable`).
    """
    plan = plan_split(
        frame,
        label=label,
        features=features,
        classes=classes,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    return plan.splits(image_shape)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatawheelError(
            f"split fractions val={val_fraction} test={test_fraction} are not valid",
            "pick fractions in (0, 1) that sum to less than 1",
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
        test_production=splits.test_production,
    )
    splits.transform.save(out / "transform.json")


def load_splits(in_dir: str | Path) -> Splits:
    """The splits ``write_splits`` wrote; one written before ``test_production`` existed
    loads with every test row a reference row."""
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
        arrays.get("test_production", _no_rows()),
    )
