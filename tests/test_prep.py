"""The content-hash split (a fixed threshold per row), its report, and the fitted transform."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datawheel.data.sources import Loaded, load_source
from datawheel.data.split import (
    SPLIT_NAMES,
    Splits,
    assign_splits,
    load_splits,
    plan_split,
    split_frame,
    write_splits,
)
from datawheel.data.transform import Transform, fit_transform
from datawheel.errors import DatawheelError

CLASSES = [str(i) for i in range(10)]
FEATURES = [f"px_{i}" for i in range(64)]
TARGET = {"train": 0.65, "val": 0.15, "test": 0.20}  # the default fractions


def _sigma_bound(p: float, n: int) -> float:
    """Tolerance for an observed share of ``n`` rows whose expected share is ``p``.

    Each row lands in a split independently with probability ``p`` (its hash is uniform), so
    the count is Binomial(n, p); 4 standard deviations fail a fair hash with probability
    about 6e-5 per check.
    """
    return 4 * math.sqrt(p * (1 - p) / n)


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


def _moved(before: dict[tuple[bytes, int], str], after: dict[tuple[bytes, int], str]) -> int:
    """Rows of ``before`` that are in ``after`` under another split (all must be there)."""
    assert set(before) <= set(after)
    return sum(before[k] != after[k] for k in before)


@pytest.fixture(scope="module")
def splits(digits: pd.DataFrame) -> Splits:
    return _split(digits)


@pytest.fixture(scope="module")
def grown(digits: pd.DataFrame) -> pd.DataFrame:
    """Digits grown 10x: nine new distinct noisy copies of every row appended."""
    rng = np.random.default_rng(7)
    x = digits[FEATURES].to_numpy(np.float32)
    parts = [digits]
    for _ in range(9):
        noisy = np.clip(x + rng.normal(0, 0.05, x.shape).astype(np.float32), 0, 1)
        part = pd.DataFrame(noisy, columns=FEATURES)
        part["label"] = digits["label"].to_numpy()
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    assert len(frame) == 10 * len(digits)
    assert frame[FEATURES].duplicated().sum() == 0  # every appended row is new
    return frame


def test_sizes_disjoint_and_complete(digits: pd.DataFrame, splits: Splits) -> None:
    n = len(digits)
    assert digits.duplicated().sum() == 0  # so rows can be identified by content
    sizes = {"train": len(splits.x_train), "val": len(splits.x_val), "test": len(splits.x_test)}
    assert sum(sizes.values()) == n
    for name, p in TARGET.items():
        assert abs(sizes[name] / n - p) <= _sigma_bound(p, n), name
    assignment = _assignment(splits)  # its strict zip checks that each x matches its y
    assert len(assignment) == n  # no row in two splits, none lost
    all_rows = {
        (r.tobytes(), CLASSES.index(lbl))
        for r, lbl in zip(digits[FEATURES].to_numpy(np.float32), digits["label"], strict=True)
    }
    assert set(assignment) == all_rows
    assert splits.x_train.dtype == np.float32 and splits.y_train.dtype == np.int64


@pytest.mark.parametrize("which", ["digits", "grown"])
def test_class_proportions_within_binomial_bound(
    which: str, digits: pd.DataFrame, grown: pd.DataFrame
) -> None:
    """Each class with 100+ rows puts share p of its rows in each split, within 4 sigma.

    Tolerance |k/n - p| <= 4 * sqrt(p (1 - p) / n) (see _sigma_bound): about 0.12 for test at
    digits' ~180 rows a class, 0.038 at the grown version's ~1800.
    """
    frame = digits if which == "digits" else grown
    report = plan_split(frame, label="label", features=FEATURES, classes=CLASSES).report()
    checked = 0
    for cls, row in zip(report.classes, report.counts, strict=True):
        n = int(row.sum())
        if n < 100:
            continue
        for name, k in zip(SPLIT_NAMES, row, strict=True):
            p = TARGET[name]
            assert abs(k / n - p) <= _sigma_bound(p, n), (cls, name, int(k), n)
            checked += 1
    assert checked == 30  # every class of digits has 100+ rows


def test_deterministic(digits: pd.DataFrame, splits: Splits) -> None:
    again = _split(digits.copy())
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(splits, name))
    assert again.transform == splits.transform


def test_row_order_does_not_matter(digits: pd.DataFrame, splits: Splits) -> None:
    shuffled = digits.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert _assignment(_split(shuffled)) == _assignment(splits)


def test_split_seed_changes_split(digits: pd.DataFrame, splits: Splits) -> None:
    """Independent assignments disagree on 1 - (.65^2 + .15^2 + .2^2) = 51.5% of rows."""
    a, b = _assignment(splits), _assignment(_split(digits, seed=1))
    moved = sum(a[k] != b[k] for k in a)
    assert moved > 0.4 * len(a)
    assert _assignment(_split(digits, seed=1)) == b  # and that seed is itself stable


def test_growing_10x_moves_no_row(
    digits: pd.DataFrame, splits: Splits, grown: pd.DataFrame
) -> None:
    moved = _moved(_assignment(splits), _assignment(_split(grown)))
    print(f"\nrows of the original {len(digits)} that changed split after 10x growth: {moved}")
    assert moved == 0


def test_shrinking_by_half_moves_no_row(digits: pd.DataFrame, splits: Splits) -> None:
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(digits), len(digits) // 2, replace=False))
    half = _assignment(_split(digits.iloc[keep].reset_index(drop=True)))
    assert len(half) == len(digits) // 2
    assert _moved(half, _assignment(splits)) == 0


def test_identical_rows_share_a_split(digits: pd.DataFrame) -> None:
    """Duplicates (even with conflicting labels, -0.0 for 0.0 or another NaN) share a split."""
    base = digits.iloc[:300]
    copy = base.copy()
    copy["label"] = np.roll(copy["label"].to_numpy(), 1)  # same pixels, other labels
    x = copy[FEATURES].to_numpy(np.float32, copy=True)
    x[x == 0] = -0.0
    x[:, [5, 7]] = np.float32(np.nan)
    nan_payload = np.array([0x7FC00001], np.uint32).view(np.float32)[0]  # a different NaN
    x[::2, 7] = nan_payload
    base = base.assign(px_5=np.nan, px_7=np.nan)
    copy[FEATURES] = x
    plan = plan_split(
        pd.concat([base, copy], ignore_index=True),
        label="label",
        features=FEATURES,
        classes=CLASSES,
    )
    assert all(plan.x[i].tobytes() != plan.x[300 + i].tobytes() for i in range(300))
    first, second = plan.assignment[:300], plan.assignment[300:]
    np.testing.assert_array_equal(first, second)
    assert len(np.unique(first)) == 3  # the rows do spread over all three splits


def test_a_row_moves_only_into_a_split_that_grew(digits: pd.DataFrame) -> None:
    """Thresholds, not ranks: raising test_fraction only moves rows into test, never out."""
    x = digits[FEATURES].to_numpy(np.float32)
    before = assign_splits(x, test_fraction=0.2, val_fraction=0.15)
    after = assign_splits(x, test_fraction=0.3, val_fraction=0.15)
    test = SPLIT_NAMES.index("test")
    assert np.all(after[before == test] == test)
    changed = before != after
    assert changed.sum() > 0
    assert np.all(after[changed] != SPLIT_NAMES.index("train"))  # train only shrinks


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


def test_label_outside_classes(digits: pd.DataFrame) -> None:
    with pytest.raises(DatawheelError, match="outside the class list"):
        split_frame(digits, label="label", features=FEATURES, classes=CLASSES[:9])


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_invalid_fractions(digits: pd.DataFrame, val: float, test: float) -> None:
    with pytest.raises(DatawheelError, match="split fractions"):
        plan_split(
            digits,
            label="label",
            features=FEATURES,
            classes=CLASSES,
            val_fraction=val,
            test_fraction=test,
        )
    with pytest.raises(DatawheelError, match="split fractions"):
        assign_splits(np.zeros((3, 2)), val_fraction=val, test_fraction=test)


# --- the prep report ----------------------------------------------------------------------------


def test_report_counts_match_the_splits(digits: pd.DataFrame, splits: Splits) -> None:
    plan = plan_split(digits, label="label", features=FEATURES, classes=CLASSES)
    report = plan.report()
    for j, y in enumerate((splits.y_train, splits.y_val, splits.y_test)):
        np.testing.assert_array_equal(report.counts[:, j], np.bincount(y, minlength=10))
    assert report.ok and report.warnings == [] and report.problems == []
    md = report.markdown("digits@abc")
    assert md.startswith("# Prep report: PASSED")
    sizes = report.sizes
    assert f"| train | {sizes['train']} | {sizes['train'] / len(digits):.1%} | 65% |" in md
    assert f"| all | {len(digits)} | 100.0% | 100% |" in md
    row0 = report.counts[0]
    assert f"| 0 | {row0.sum()} | {row0[0]} | {row0[1]} | {row0[2]} |" in md
    assert f"| 0 | {row0.sum() / len(digits):.1%} | {row0[0] / sizes['train']:.1%} |" in md
    assert "None: every class has rows in train, val and test." in md


def test_tiny_class_is_kept_and_reported(digits: pd.DataFrame) -> None:
    """Two rows of class 7 cannot reach three splits: they stay, and the report names 7."""
    frame = pd.concat([digits[digits["label"] != "7"], digits[digits["label"] == "7"].head(2)])
    plan = plan_split(frame, label="label", features=FEATURES, classes=CLASSES)
    report = plan.report()
    seven = report.counts[CLASSES.index("7")]
    assert seven.sum() == 2
    empty = [name for name, n in zip(SPLIT_NAMES, seven, strict=True) if n == 0]
    assert empty  # 2 rows leave at least one split without a 7
    assert report.missing == {"7": empty}
    (warning,) = report.warnings
    assert warning.startswith(f"class 7 has no rows in {', '.join(empty)} (2 rows:")
    md = report.markdown()
    assert f"## Warnings\n\n- {warning}\n" in md
    s = plan.splits()  # a warning, not a failure
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == len(frame)  # nothing dropped
    assert int((s.y_train == 7).sum() + (s.y_val == 7).sum() + (s.y_test == 7).sum()) == 2


def test_empty_train_fails_with_a_fix(digits: pd.DataFrame) -> None:
    with pytest.raises(DatawheelError, match="train split has no rows") as info:
        _split(digits.iloc[:0])
    assert "Fix: add rows" in str(info.value) and "\n" not in str(info.value)


def test_train_with_one_class_fails(digits: pd.DataFrame) -> None:
    with pytest.raises(DatawheelError, match="train split holds only class 3, training needs 2"):
        _split(digits[digits["label"] == "3"])


@pytest.mark.parametrize("dropped", ["val", "test"])
def test_empty_val_or_test_fails(digits: pd.DataFrame, dropped: str) -> None:
    """Rows never move, so dropping every row of one split leaves that split empty."""
    plan = plan_split(digits, label="label", features=FEATURES, classes=CLASSES)
    rest = digits[plan.assignment != SPLIT_NAMES.index(dropped)]
    with pytest.raises(DatawheelError, match=f"the {dropped} split has no rows"):
        _split(rest)


# --- the prep step on a real store --------------------------------------------------------------


def test_prep_step_writes_splits_and_report(tmp_path: Path, digits: pd.DataFrame) -> None:
    from datawheel.data.versions import get_version, ingest
    from datawheel.orchestration.prep import prep_step
    from datawheel.orchestration.validate import validate_step
    from datawheel.storage import LocalStore

    store = LocalStore(tmp_path / "store")
    dv = ingest(store, "digits")
    validate_step(store.uri, "digits", dv.version, str(tmp_path / "validation.md"))
    get_version(store, "digits", dv.version)  # committed: visible to prep
    out, report_path = tmp_path / "splits", tmp_path / "report.md"
    sizes = prep_step(store.uri, "digits", dv.version, 0, str(out), str(report_path))
    loaded = load_splits(out)
    expected = _split(digits)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name))
    assert loaded.transform == expected.transform
    assert sizes == {
        "train_rows": len(expected.y_train),
        "val_rows": len(expected.y_val),
        "test_rows": len(expected.y_test),
        "split_warnings": 0,
        "production_test_rows": 0,
    }
    md = report_path.read_text()
    assert md.startswith("# Prep report: PASSED")
    assert f"Dataset `digits@{dv.version}`, {len(digits)} rows." in md
    assert f"| test | {sizes['test_rows']} |" in md
    # the old five-argument call (tests/serving_support.py) still works and writes no report
    assert prep_step(store.uri, "digits", dv.version, 0, str(tmp_path / "again")) == sizes
    written = {"again", "report.md", "splits", "store", "validation.md"}
    assert {p.name for p in tmp_path.iterdir()} == written


def test_prep_step_fails_on_unusable_data_but_leaves_a_report(
    tmp_path: Path, digits: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid data (2 classes, 6 rows each) whose rows all hash to train or test: no val."""
    from datawheel.data.versions import ingest_frame
    from datawheel.orchestration.prep import prep_step
    from datawheel.orchestration.validate import validate_step
    from datawheel.storage import LocalStore

    plan = plan_split(digits, label="label", features=FEATURES, classes=CLASSES)
    no_val = digits[plan.assignment != SPLIT_NAMES.index("val")]
    frame = no_val[no_val["label"].isin(["1", "2"])].groupby("label").head(6)
    frame = frame.reset_index(drop=True)
    store = LocalStore(tmp_path / "store")
    dv = ingest_frame(store, Loaded(frame, "label", "test:no-val", (1, 8, 8)))
    validate_step(store.uri, dv.name, dv.version, str(tmp_path / "validation.md"))
    report_path = tmp_path / "report.md"
    with pytest.raises(SystemExit) as info:
        prep_step(store.uri, dv.name, dv.version, 0, str(tmp_path / "splits"), str(report_path))
    assert info.value.code == 1
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    assert "prep: cannot split 12 rows for training: the val split has no rows" in line
    assert "Fix: add rows" in line
    assert not (tmp_path / "splits").exists()
    md = report_path.read_text()
    assert md.startswith("# Prep report: FAILED")
    assert "## Problems\n\n- the val split has no rows\n" in md
    assert "- class 1 has no rows in val" in md and "- class 2 has no rows in val" in md
