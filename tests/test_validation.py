"""Validating a dataset version: absolute checks for all, relative ones against the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datawheel.data import versions
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded, load_source
from datawheel.data.validation import (
    ValidationError,
    ValidationLimits,
    ValidationReport,
    absolute_anomalies,
    check_frame,
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
    """A candidate version: validate() judges its manifest."""
    return ingest_frame(store, Loaded(frame, "label", "test"), name=name)


def _commit(store: LocalStore, frame: pd.DataFrame, name: str = "ds") -> DatasetVersion:
    candidate = _ingest(store, frame, name)
    admission = admit(store, name, candidate.version)
    assert admission.outcome == "committed", admission.report.markdown()
    return admission.version


def _checks(report: ValidationReport, *, hard: bool) -> set[tuple[str, str]]:
    return {(a.check, a.column) for a in report.anomalies if a.hard == hard}


@pytest.fixture
def ref(store: LocalStore) -> DatasetVersion:
    return _commit(store, _frame())


def test_same_data_is_valid(store: LocalStore, ref: DatasetVersion) -> None:
    report = validate(ref, ref)
    assert report.anomalies == []
    assert report.ok
    assert report.reference is None  # itself: the absolute checks alone
    assert "PASSED" in report.markdown()
    assert "No anomalies" in report.markdown()
    assert "absolute checks alone" in report.markdown()
    report.raise_if_hard()  # does not raise


def test_new_rows_same_distribution_valid(store: LocalStore, ref: DatasetVersion) -> None:
    new = _ingest(store, _frame(rows=150, seed=1))
    report = validate(new, ref)
    assert report.anomalies == []
    assert report.ok


def test_digits_subset_valid(store: LocalStore) -> None:
    digits = load_source("digits")
    full = admit(store, "digits", ingest_frame(store, digits, name="digits").version).version
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
    _commit(store, _frame(rows=120, seed=3))
    _commit(store, _frame(rows=130, seed=4))
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
    strict = validate(_ingest(store, frame), ref, ValidationLimits(range_tolerance=0.01))
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
    # One class fewer is fine; one class alone is not (an absolute check).
    report = validate(_ingest(store, frame[frame["label"] == "a"].reset_index(drop=True)), ref)
    assert _checks(report, hard=True) == {("labels", "label")}
    assert "only 1 class ('a')" in report.hard[0].detail


def test_rows_below_ratio(store: LocalStore) -> None:
    big = _commit(store, _frame(rows=300), name="big")
    small = _ingest(store, _frame(rows=20, seed=2), name="big")  # < 10% of 300
    report = validate(small, big)
    assert not report.ok
    assert _checks(report, hard=True) == {("rows", "*")}
    assert "[30, 30000]" in report.hard[0].detail
    # 30 rows is exactly the bound: fine.
    assert validate(_ingest(store, _frame(rows=30, seed=5), name="big"), big).ok


def test_rows_below_min_rows(store: LocalStore, ref: DatasetVersion) -> None:
    tiny = _ingest(store, _frame(rows=9, seed=2))  # an absolute minimum, whatever the reference
    report = validate(tiny, ref)
    assert ("rows", "*") in _checks(report, hard=True)
    assert "9 rows, fewer than the minimum 10" in report.markdown()


def test_rows_above_ratio(store: LocalStore, ref: DatasetVersion) -> None:
    huge = _ingest(store, _frame(rows=1000, seed=2))
    report = validate(huge, ref, ValidationLimits(max_row_ratio=5.0))
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


# --- absolute checks: every version, the first included ---------------------------------


def _hard_of(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    report = check_frame(frame, "label", subject="t")
    return {(a.check, a.column): a.detail for a in report.hard}


@pytest.mark.parametrize(
    ("change", "expected", "needle"),
    [
        (lambda f: f.iloc[:1], ("rows", "*"), "1 row, fewer than the minimum 10"),
        (lambda f: f.assign(label="a"), ("labels", "label"), "only 1 class ('a')"),
        (lambda f: f.assign(x=f["x"].where(f.index != 3, np.inf)), ("finite", "x"), "infinite"),
        (
            lambda f: f.assign(x=f["x"].astype(np.float64).where(f.index != 3, 1e300)),
            ("finite", "x"),
            "1e+300 is beyond float32's range",
        ),
        (
            lambda f: f.assign(label=f["label"].where(f.index != 7, None)),
            ("labels", "label"),
            "1 row(s) have no label",
        ),
        (
            lambda f: f.assign(label=f["label"].where(f.index != 7, "")),
            ("labels", "label"),
            "1 row(s) have no label",
        ),
        (
            lambda f: f.assign(label=["z" if i < 3 else "a" if i % 2 else "b" for i in f.index]),
            ("labels", "label"),
            "class(es) z (3) have fewer than 5 rows",
        ),
        (lambda f: f.assign(y=np.float32(np.nan)), ("missing", "y"), "100.0% missing"),
    ],
    ids=[
        "one-row",
        "one-class",
        "inf",
        "overflows-float32",
        "none-label",
        "empty-label",
        "tiny-class",
        "all-missing",
    ],
)
def test_absolute_checks(
    change: Callable[[pd.DataFrame], pd.DataFrame], expected: tuple[str, str], needle: str
) -> None:
    hard = _hard_of(change(_frame()))
    assert expected in hard, hard
    assert needle in hard[expected]
    assert _hard_of(_frame()) == {}


def test_absolute_checks_apply_to_the_first_version(store: LocalStore) -> None:
    first = _ingest(store, _frame().iloc[:1])
    assert reference_for(store, "ds") is None
    report = validate(first, None)
    assert not report.ok
    assert report.reference is None
    assert _checks(report, hard=True) == {("rows", "*"), ("labels", "label")}
    with pytest.raises(ValidationError, match="Fix: add rows"):
        report.raise_if_hard()


def test_each_anomaly_names_its_fix(store: LocalStore) -> None:
    frame = _frame()
    frame.loc[3, "label"] = np.nan
    with pytest.raises(ValidationError) as info:
        check_frame(frame, "label", subject="source 'x.csv'").raise_if_hard()
    assert str(info.value).startswith("source 'x.csv' has 1 hard anomaly: labels label: 1 row(s)")
    assert "Fix: give every row a label or drop the unlabelled rows." in str(info.value)


def test_old_manifest_with_nan_stats_is_not_finite() -> None:
    """A manifest written before stats were nulled (JSON NaN) still fails the checks."""
    stats = {"min": float("nan"), "max": float("inf"), "mean": 0.0, "std": 1.0, "missing": 0}
    manifest = {
        "rows": 50,
        "schema": {"features": [{"name": "x", "dtype": "float32"}], "label": {"name": "label"}},
        "stats": {"x": stats},
        "label_distribution": {"a": 25, "b": 20, "nan": 5},
        "classes": ["a", "b", "nan"],
    }
    found = {
        (a.check, a.column): a.detail for a in absolute_anomalies(manifest, ValidationLimits())
    }
    assert found[("finite", "x")] == "statistics are not finite"
    assert found[("labels", "label")] == "5 row(s) have no label (empty, NaN or None)"


def test_reference_skips_versions_failing_absolute_checks(store: LocalStore) -> None:
    """A store from before reference.json, whose first version has inf stats and one row:
    it is not the reference, so it neither refuses good versions nor disables range checks."""
    bad_frame = _frame().iloc[:1].copy()
    bad_frame.loc[0, "x"] = np.inf
    bad = _ingest(store, bad_frame)
    # Commit it the way the old ingest did: no validation at all.
    versions.commit(store, bad, report="legacy", reference=None)
    assert [v.version for v in versions.list_versions(store, "ds")] == [bad.version]
    assert reference_for(store, "ds") is None
    good = _commit(store, _frame(rows=300))
    assert reference_for(store, "ds") == good
    far = _frame(seed=2)
    far.loc[4, "x"] = 9.0
    assert _checks(validate(_ingest(store, far), good), hard=True) == {("range", "x")}
