"""Production rows (a harvested version's ``production_rows``) through the split and prep:
split by the same hash as every other row, flagged in ``Splits.test_production``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datawheel.data.sources import Loaded, load_source
from datawheel.data.split import (
    SPLIT_NAMES,
    Splits,
    load_splits,
    plan_split,
    split_frame,
)

CLASSES = [str(i) for i in range(10)]
FEATURES = [f"px_{i}" for i in range(64)]


@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    return load_source("digits").frame


@pytest.fixture(scope="module")
def splits(digits: pd.DataFrame) -> Splits:
    return split_frame(
        digits, label="label", features=FEATURES, classes=CLASSES, image_shape=[1, 8, 8]
    )


def test_splits_without_production_flags_are_all_reference(tmp_path: Path, splits: Splits) -> None:
    """A splits.npz written before test_production existed loads with every test row False."""
    assert splits.test_production.shape == splits.y_test.shape
    assert splits.test_production.dtype == np.bool_ and not splits.test_production.any()
    out = tmp_path / "old"
    out.mkdir()
    np.savez(
        out / "splits.npz",
        **{k: getattr(splits, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test")},
        y_test=splits.y_test,
    )
    splits.transform.save(out / "transform.json")
    loaded = load_splits(out)
    np.testing.assert_array_equal(loaded.x_test, splits.x_test)
    assert loaded.test_production.shape == (len(splits.y_test),)
    assert not loaded.test_production.any()
    with pytest.raises(ValueError, match="one flag per test row"):
        Splits(
            x_train=splits.x_train,
            y_train=splits.y_train,
            x_val=splits.x_val,
            y_val=splits.y_val,
            x_test=splits.x_test,
            y_test=splits.y_test,
            transform=splits.transform,
            test_production=np.ones(3, np.bool_),
        )


def test_prep_step_flags_the_production_rows_of_the_test_split(
    tmp_path: Path, digits: pd.DataFrame, splits: Splits
) -> None:
    """Rows listed in the manifest's production_rows are split by the hash like any other
    and come out flagged in test_production, exactly the test rows among them."""
    from datawheel.data.versions import ingest_frame
    from datawheel.orchestration.prep import prep_step
    from datawheel.orchestration.validate import validate_step
    from datawheel.storage import LocalStore

    store = LocalStore(tmp_path / "store")
    ranges = [[100, 400], [900, 1000], [1500, len(digits)]]
    candidate = ingest_frame(
        store,
        Loaded(digits, "label", "digits", (1, 8, 8)),
        name="digits",
        extra_manifest={"production_rows": ranges},  # as harvest writes it
    )
    validate_step(store.uri, "digits", candidate.version, str(tmp_path / "validation.md"))
    sizes = prep_step(store.uri, "digits", candidate.version, 0, str(tmp_path / "splits"))
    loaded = load_splits(tmp_path / "splits")

    produced = np.zeros(len(digits), np.bool_)
    for start, stop in ranges:
        produced[start:stop] = True
    plan = plan_split(digits, label="label", features=FEATURES, classes=CLASSES)
    test_rows = np.flatnonzero(plan.assignment == SPLIT_NAMES.index("test"))
    np.testing.assert_array_equal(loaded.test_production, produced[test_rows])
    # and by content: the flagged test rows are exactly the production rows that hashed to test
    x = digits[FEATURES].to_numpy(np.float32)
    production_bytes = {x[i].tobytes() for i in np.flatnonzero(produced)}
    by_content = np.array([row.tobytes() in production_bytes for row in loaded.x_test])
    np.testing.assert_array_equal(loaded.test_production, by_content)
    n_flagged = int(loaded.test_production.sum())
    assert 0 < n_flagged < len(loaded.y_test)  # both slices have rows
    assert sizes["production_test_rows"] == n_flagged
    # the split itself is the one a version without production rows gets
    np.testing.assert_array_equal(loaded.x_test, splits.x_test)
