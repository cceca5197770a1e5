"""The learning-rate sweep: the grid, and which trial goes on to evaluation."""

from __future__ import annotations

import math

import pytest

from datawheel.errors import DatawheelError
from datawheel.orchestration.sweep import lr_grid, pick_best


def test_grid_is_the_sweep_or_the_single_rate() -> None:
    assert lr_grid(0.001, "") == [0.001]
    assert lr_grid(0.001, "0.01, 0.003,,0.1") == [0.01, 0.003, 0.1]


@pytest.mark.parametrize("sweep", ["0.1,x", "0.1,-0.01", "0", "nan", "inf,0.1"])
def test_bad_grids_are_refused(sweep: str) -> None:
    with pytest.raises(DatawheelError, match=r"sweep_learning_rates|positive finite"):
        lr_grid(0.001, sweep)


def test_pick_best_takes_the_highest_validation_accuracy() -> None:
    assert pick_best([0.81, 0.93, 0.92], ["a", "b", "c"]) == "b"


def test_pick_best_takes_the_first_of_a_tie() -> None:
    assert pick_best([0.9, 0.95, 0.95, 0.95], ["a", "b", "c", "d"]) == "b"
    assert pick_best([0.5], ["only"]) == "only"


def test_pick_best_never_picks_a_nan_trial() -> None:
    # np.argmax alone would pick index 0: NaN compares as the maximum
    assert pick_best([math.nan, 0.7, 0.6], ["diverged", "b", "c"]) == "b"
    with pytest.raises(DatawheelError, match="NaN validation accuracy"):
        pick_best([math.nan, math.nan], ["a", "b"])


@pytest.mark.parametrize(("acc", "uris"), [([], []), ([0.9], ["a", "b"])])
def test_pick_best_refuses_mismatched_results(acc: list[float], uris: list[str]) -> None:
    with pytest.raises(DatawheelError, match="nothing to choose from"):
        pick_best(acc, uris)
