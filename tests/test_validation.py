"""Validating a dataset version's manifest against its dataset's reference version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datawheel.data.sources import Loaded, load_source
from datawheel.data.validation import (
    Limits,
    ValidationError,
    ValidationReport,
    reference_for,
    validate,
)
from datawheel.data.versions import DatasetVersion, ingest_frame
from datawheel.storage import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:  # manifests only: a local store is enough
    return LocalStore(tmp_path / "store")


def _frame(rows: int = 100, seed: int = 0) -> pd.DataFrame:
    """Features x, y in [0, 1] (both ends hit), labels a/b/c."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, rows).astype(np.float32)
    y = rng.uniform(0, 1, rows).astype(np.float32)
    x[:2], y[:2] = [0.0, 1.0], [0.0, 1.0]
    return pd.DataFrame({"x": x, "y": y, "label": [["a", "b", "c"][i % 3] for i in range(rows)]})


def _ingest(store: LocalStore, frame: pd.DataFrame, name: str = "ds") -> DatasetVersion:
    return ingest_frame(store, Loaded(frame, "label", "test"), name=name)


def _checks(report: ValidationReport, *, hard: bool) -> set[tuple[str, str]]:
    return {(a.check, a.column) for a in report.anomalies if a.hard == hard}


@pytest.fixture
def ref(store: LocalStore) -> DatasetVersion:
    return _ingest(store, _frame())


def test_same_data_is_valid(store: LocalStore, ref: DatasetVersion) -> None:
    report = validate(ref, ref)
    assert report.anomalies == []
    assert report.ok
    assert "PASSED" in report.markdown()
    assert "No anomalies" in report.markdown()
    report.raise_if_hard()  # does not raise


def test_new_rows_same_distribution_valid(store: LocalStore, ref: DatasetVersion) -> None:
    new = _ingest(store, _frame(rows=150, seed=1))
    report = validate(new, ref)
    assert report.anomalies == []
    assert report.ok


def test_digits_subset_valid(store: LocalStore) -> None:
    digits = load_source("digits")
    full = ingest_frame(store, digits, name="digits")
    subset = Loaded(digits.frame.iloc[:1500], "label", "x", image_shape=digits.image_shape)
    part = ingest_frame(store, subset, name="digits")
    assert reference_for(store, "digits") == full
    report = validate(part, full)
    assert report.ok, report.markdown()
    assert report.anomalies == []
    # The same pixels without their image shape are a schema change.
    flat = ingest_frame(store, Loaded(digits.frame.iloc[:1400], "label", "x"), name="digits")
    assert _checks(validate(flat, full), hard=True) == {("schema", "image_shape")}


def test_reference_is_first_version(store: LocalStore, ref: DatasetVersion) -> None:
    _ingest(store, _frame(rows=120, seed=3))
    _ingest(store, _frame(rows=130, seed=4))
    found = reference_for(store, "ds")
    assert found is not None
    assert found.version == ref.version
    assert reference_for(store, "other") is None


def test_missing_column(store: LocalStore, ref: DatasetVersion) -> None:
    new = _ingest(store, _frame().drop(columns="y"))
    report = validate(new, ref)
    assert not report.ok
    assert ("schema", "y") in _checks(report, hard=True)
    assert "column missing" in report.markdown()


def test_extra_column(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.insert(0, "z", np.float32(0.5))
    report = validate(_ingest(store, frame), ref)
    assert not report.ok
    assert _checks(report, hard=True) == {("schema", "z")}


def test_dtype_change(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame().astype({"x": np.float64})
    report = validate(_ingest(store, frame), ref)
    assert not report.ok
    assert _checks(report, hard=True) == {("type", "x")}
    (anomaly,) = report.hard
    assert "float64" in anomaly.detail
    assert "float32" in anomaly.detail


def test_far_out_of_range(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.loc[5, "x"] = 7.5
    report = validate(_ingest(store, frame), ref)
    assert not report.ok
    assert _checks(report, hard=True) == {("range", "x")}
    assert "7.5" in report.hard[0].detail


def test_far_below_range(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.loc[5, "y"] = -0.5
    report = validate(_ingest(store, frame), ref)
    assert _checks(report, hard=True) == {("range", "y")}


def test_slightly_out_of_range_within_tolerance(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.loc[5, "x"] = 1.05  # tolerance is 10% of the [0, 1] span
    frame.loc[6, "y"] = -0.08
    report = validate(_ingest(store, frame), ref)
    assert report.anomalies == []
    # A tighter tolerance flags the same data.
    strict = validate(_ingest(store, frame), ref, Limits(range_tolerance=0.01))
    assert _checks(strict, hard=True) == {("range", "x"), ("range", "y")}


def test_few_missing_values_warn(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.loc[:2, "x"] = np.nan  # 3 of 100 = 3% < 5%
    report = validate(_ingest(store, frame), ref)
    assert report.ok
    assert report.hard == []
    assert _checks(report, hard=False) == {("missing", "x")}
    assert "3.0% missing" in report.anomalies[0].detail
    assert "PASSED" in report.markdown()
    assert "| warning | missing | x |" in report.markdown()
    assert "1 warning(s)" in report.summary()
    report.raise_if_hard()


def test_many_missing_values_fail(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.loc[:9, "y"] = np.nan  # 10 of 100 = 10% > 5%
    report = validate(_ingest(store, frame), ref)
    assert not report.ok
    assert _checks(report, hard=True) == {("missing", "y")}


def test_unseen_label(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame.loc[:4, "label"] = "zebra"
    report = validate(_ingest(store, frame), ref)
    assert not report.ok
    assert _checks(report, hard=True) == {("labels", "label")}
    assert "zebra" in report.hard[0].detail


def test_fewer_classes_is_fine(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame()
    frame = frame[frame["label"] != "c"].reset_index(drop=True)
    report = validate(_ingest(store, frame), ref)
    assert report.ok


def test_rows_below_ratio(store: LocalStore) -> None:
    big = _ingest(store, _frame(rows=300), name="big")
    small = _ingest(store, _frame(rows=20, seed=2), name="big")  # < 10% of 300
    report = validate(small, big)
    assert not report.ok
    assert _checks(report, hard=True) == {("rows", "*")}
    assert "[30, 30000]" in report.hard[0].detail
    # 30 rows is exactly the bound: fine.
    assert validate(_ingest(store, _frame(rows=30, seed=5), name="big"), big).ok


def test_rows_below_min_rows(store: LocalStore, ref: DatasetVersion) -> None:
    tiny = _ingest(store, _frame(rows=9, seed=2))  # ref 100 rows: bound max(10, 10) = 10
    report = validate(tiny, ref)
    assert ("rows", "*") in _checks(report, hard=True)
    assert "9 rows outside bounds [10," in report.markdown()


def test_rows_above_ratio(store: LocalStore, ref: DatasetVersion) -> None:
    huge = _ingest(store, _frame(rows=1000, seed=2))
    report = validate(huge, ref, Limits(max_row_ratio=5.0))
    assert _checks(report, hard=True) == {("rows", "*")}


def test_raise_if_hard_one_line(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame().drop(columns="y")
    frame.loc[5, "x"] = 50.0
    frame.loc[:4, "label"] = "zebra"
    report = validate(_ingest(store, frame), ref)
    assert len(report.hard) == 3
    with pytest.raises(ValidationError) as info:
        report.raise_if_hard()
    message = str(info.value)
    assert "\n" not in message
    assert "3 hard anomalies" in message
    for part in ("schema y", "range x", "labels label", "zebra"):
        assert part in message
    assert "Fix:" in message


def test_markdown_table(store: LocalStore, ref: DatasetVersion) -> None:
    frame = _frame().drop(columns="y")
    frame.loc[:2, "x"] = np.nan
    report = validate(_ingest(store, frame), ref)
    md = report.markdown()
    assert md.startswith("# Data validation: FAILED")
    assert "| severity | check | column | detail |" in md
    rows = [line for line in md.splitlines() if line.startswith(("| hard", "| warning"))]
    assert len(rows) == len(report.anomalies) == 2
    assert rows[0].startswith("| hard | schema | y | column missing |")  # hard ones first
    assert rows[1].startswith("| warning | missing | x |")
    assert ref.version in md
