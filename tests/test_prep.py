"""The hash-ordered stratified split and the transform fitted on the training rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datawheel.data.sources import load_source
from datawheel.data.split import Splits, load_splits, split_frame, write_splits
from datawheel.data.transform import Transform, fit_transform
from datawheel.errors import DatawheelError

CLASSES = [str(i) for i in range(10)]
FEATURES = [f"px_{i}" for i in range(64)]


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return load_source("digits").frame


def _split(frame: pd.DataFrame, seed: int = 0) -> Splits:
    return split_frame(
        frame, label="label", features=FEATURES, classes=CLASSES, image_shape=[1, 8, 8], seed=seed
    )


def _assignment(splits: Splits) -> dict[tuple[bytes, int], str]:
    """Which split each row (identified by its content and label) landed in."""
    out = {}
    for name, x, y in (
        ("train", splits.x_train, splits.y_train),
        ("val", splits.x_val, splits.y_val),
        ("test", splits.x_test, splits.y_test),
    ):
        for row, label in zip(x, y, strict=True):
            out[(row.tobytes(), int(label))] = name
    return out


@pytest.fixture(scope="module")
def splits(digits: pd.DataFrame) -> Splits:
    return _split(digits)


def test_sizes_disjoint_and_complete(digits: pd.DataFrame, splits: Splits) -> None:
    n = len(digits)
    assert digits.duplicated().sum() == 0  # so rows can be identified by content
    sizes = {"train": len(splits.x_train), "val": len(splits.x_val), "test": len(splits.x_test)}
    assert sum(sizes.values()) == n
    assert sizes["train"] / n == pytest.approx(0.65, abs=0.01)
    assert sizes["val"] / n == pytest.approx(0.15, abs=0.01)
    assert sizes["test"] / n == pytest.approx(0.20, abs=0.01)
    for x, y in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val)):
        assert len(x) == len(y)
    assert len(splits.x_test) == len(splits.y_test)
    assignment = _assignment(splits)
    assert len(assignment) == n  # no row in two splits, none lost
    all_rows = {
        (r.tobytes(), CLASSES.index(lbl))
        for r, lbl in zip(digits[FEATURES].to_numpy(np.float32), digits["label"], strict=True)
    }
    assert set(assignment) == all_rows
    assert splits.x_train.dtype == np.float32
    assert splits.y_train.dtype == np.int64


def test_stratified(digits: pd.DataFrame, splits: Splits) -> None:
    overall = digits["label"].map(CLASSES.index).value_counts(normalize=True).sort_index()
    for y in (splits.y_test, splits.y_val, splits.y_train):
        share = np.bincount(y, minlength=10) / len(y)
        np.testing.assert_allclose(share, overall.to_numpy(), atol=0.02)


def test_deterministic(digits: pd.DataFrame, splits: Splits) -> None:
    again = _split(digits.copy())
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(splits, name))
    assert again.transform == splits.transform


def test_row_order_does_not_matter(digits: pd.DataFrame, splits: Splits) -> None:
    shuffled = digits.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert _assignment(_split(shuffled)) == _assignment(splits)


def test_split_seed_changes_split(digits: pd.DataFrame, splits: Splits) -> None:
    other = _split(digits, seed=1)
    a, b = _assignment(splits), _assignment(other)
    assert len(other.x_test) == len(splits.x_test)  # same sizes, different rows
    moved = sum(a[k] != b[k] for k in a)
    assert moved > 0.3 * len(a)


def test_split_stable_across_versions(digits: pd.DataFrame, splits: Splits) -> None:
    """A new version without 10% of the rows keeps almost every remaining row in place."""
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(digits), int(len(digits) * 0.9), replace=False))
    smaller = _split(digits.iloc[keep].reset_index(drop=True))
    before, after = _assignment(splits), _assignment(smaller)
    assert set(after) <= set(before)
    same = sum(before[k] == after[k] for k in after)
    assert same / len(after) >= 0.95
    was_test = [k for k in after if before[k] == "test"]
    left_test = sum(after[k] != "test" for k in was_test)
    assert left_test <= 0.05 * len(was_test)


def test_transform_fitted_on_train_only(digits: pd.DataFrame, splits: Splits) -> None:
    t = splits.transform
    assert t.features == FEATURES
    assert t.classes == CLASSES
    assert t.image_shape == [1, 8, 8]
    train_mean = splits.x_train.astype(np.float64).mean(axis=0)
    full_mean = digits[FEATURES].to_numpy(np.float64).mean(axis=0)
    np.testing.assert_allclose(t.mean, train_mean, rtol=1e-9, atol=1e-12)
    assert np.abs(np.asarray(t.mean) - full_mean).max() > 1e-3
    std = splits.x_train.astype(np.float64).std(axis=0)
    nonzero = std > 1e-8
    np.testing.assert_allclose(np.asarray(t.std)[nonzero], std[nonzero])


def test_zero_variance_std_is_one(splits: Splits) -> None:
    assert np.all(splits.x_train[:, 0] == 0.0)  # digits' corner pixel is always blank
    assert splits.transform.std[0] == 1.0
    out = splits.transform.apply(splits.x_test)
    assert np.all(np.isfinite(out))
    assert np.all(out[:, 0] == 0.0)


def test_transform_apply_imputes_and_standardizes() -> None:
    x_train = np.array([[1.0, 10.0, 5.0], [3.0, np.nan, 5.0], [5.0, 30.0, 5.0]], np.float32)
    t = fit_transform(x_train, ["a", "b", "c"], ["x", "y"])
    assert t.mean == pytest.approx([3.0, 20.0, 5.0])
    assert t.std == pytest.approx([np.sqrt(8 / 3), 10.0, 1.0])
    out = t.apply(np.array([[np.nan, 40.0, 7.0], [3.0, np.nan, np.nan]], np.float32))
    assert out.dtype == np.float32
    expected = np.array([[0.0, 2.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # nanmean/nanstd of an all-NaN column
def test_transform_all_nan_column() -> None:
    t = fit_transform(np.array([[np.nan, 1.0], [np.nan, 2.0]]), ["a", "b"], ["x"])
    assert t.mean[0] == 0.0
    assert t.std[0] == 1.0
    np.testing.assert_array_equal(t.apply(np.array([[np.nan, 1.5]]))[0], [0.0, 0.0])


def test_write_load_roundtrip(tmp_path: Path, splits: Splits) -> None:
    write_splits(splits, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["splits.npz", "transform.json"]
    loaded = load_splits(tmp_path / "out")
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(splits, name))
        assert getattr(loaded, name).dtype == getattr(splits, name).dtype
    assert loaded.transform == splits.transform
    assert isinstance(Transform.load(tmp_path / "out" / "transform.json"), Transform)


def test_class_with_too_few_rows(digits: pd.DataFrame) -> None:
    frame = pd.concat([digits[digits["label"] != "7"], digits[digits["label"] == "7"].head(2)])
    with pytest.raises(DatawheelError, match=r"class\(es\) 7 have fewer than 3 rows"):
        _split(frame)


def test_three_rows_per_class_is_enough(digits: pd.DataFrame) -> None:
    frame = digits.groupby("label").head(3)
    s = _split(frame)
    assert len(s.y_test) == len(s.y_val) == len(s.y_train) == 10


def test_label_outside_classes(digits: pd.DataFrame) -> None:
    with pytest.raises(DatawheelError, match="outside the class list"):
        split_frame(digits, label="label", features=FEATURES, classes=CLASSES[:9])


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_invalid_fractions(digits: pd.DataFrame, val: float, test: float) -> None:
    with pytest.raises(DatawheelError, match="split fractions"):
        split_frame(
            digits,
            label="label",
            features=FEATURES,
            classes=CLASSES,
            val_fraction=val,
            test_fraction=test,
        )
