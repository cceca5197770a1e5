"""The input drift score: near 0 on training-like inputs, large on shifted ones."""

from __future__ import annotations

import numpy as np
import pytest

from datawheel.monitoring.drift import DriftMonitor


def _monitor() -> DriftMonitor:
    return DriftMonitor([0.0, 10.0, -5.0], [1.0, 2.0, 0.5], half_life_rows=200)


def test_no_input_means_no_drift() -> None:
    assert _monitor().score() == 0.0


def test_training_like_inputs_score_near_zero() -> None:
    rng = np.random.default_rng(0)
    monitor = _monitor()
    for _ in range(50):
        monitor.observe(rng.normal([0.0, 10.0, -5.0], [1.0, 2.0, 0.5], size=(32, 3)))
    assert monitor.rows == 1600
    assert monitor.score() < 0.1


def test_shift_of_one_std_scores_about_one() -> None:
    rng = np.random.default_rng(1)
    monitor = _monitor()
    for _ in range(50):
        monitor.observe(rng.normal([1.0, 12.0, -4.5], [1.0, 2.0, 0.5], size=(32, 3)))
    assert monitor.score() == pytest.approx(1.0, abs=0.1)


def test_recent_rows_outweigh_old_ones() -> None:
    rng = np.random.default_rng(2)
    monitor = _monitor()
    for _ in range(20):
        monitor.observe(rng.normal([3.0, 16.0, -3.5], [1.0, 2.0, 0.5], size=(32, 3)))
    assert monitor.score() > 2.5
    for _ in range(60):  # ~10 half-lives of training-like data
        monitor.observe(rng.normal([0.0, 10.0, -5.0], [1.0, 2.0, 0.5], size=(32, 3)))
    assert monitor.score() < 0.15


def test_missing_values_count_as_the_training_mean() -> None:
    monitor = _monitor()
    monitor.observe(np.full((10, 3), np.nan))
    assert monitor.score() == 0.0


def test_mismatched_stats_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per feature"):
        DriftMonitor([0.0], [1.0, 2.0])
