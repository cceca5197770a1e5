"""The three retraining rules fire on their thresholds and stay quiet below them."""

from __future__ import annotations

import pytest

from datawheel.errors import DatawheelError
from datawheel.flywheel.rules import (
    Observation,
    Thresholds,
    accuracy_rule,
    bucket,
    drift_rule,
    evaluate,
    labels_rule,
)

TH = Thresholds(drift=True, accuracy_below=0.8, min_labels=50, new_labels=100)


def _obs(**kw: object) -> Observation:
    base: dict[str, object] = {"model": "digits", "version": "v3", "now": 7200.0}
    return Observation(**{**base, **kw})  # type: ignore[arg-type]


def test_accuracy_fires_below_the_floor_with_enough_labels() -> None:
    t = accuracy_rule(_obs(accuracy=0.62, labels=50), TH)
    assert t is not None and t.rule == "accuracy"
    assert "0.620 < 0.8 over 50 labels of digits:v3" in t.reason
    assert t.key == "accuracy:digits:v3:0"


@pytest.mark.parametrize(
    ("accuracy", "labels"),
    [(0.62, 49), (0.8, 500), (0.95, 500), (None, 500)],
    ids=["too-few-labels", "at-the-floor", "above", "no-labels"],
)
def test_accuracy_stays_quiet(accuracy: float | None, labels: int) -> None:
    assert accuracy_rule(_obs(accuracy=accuracy, labels=labels), TH) is None


def test_drift_fires_on_the_verdict_only() -> None:
    t = drift_rule(_obs(drift=True, drifted_features=("px_20", "px_21"), rows=300), TH)
    assert t is not None and "2 feature(s) drifted (px_20, px_21)" in t.reason
    assert "300 rows" in t.reason
    assert drift_rule(_obs(drift=False), TH) is None
    assert drift_rule(_obs(drift=None), TH) is None  # no verdict: no rows in the window
    assert drift_rule(_obs(drift=True), Thresholds(drift=False)) is None
    assert drift_rule(_obs(drift=True, version=None), TH) is None  # no champion


def test_drift_names_at_most_five_features() -> None:
    names = tuple(f"px_{i}" for i in range(9))
    t = drift_rule(_obs(drift=True, drifted_features=names), TH)
    assert t is not None and "px_4 and 4 more" in t.reason and "px_5" not in t.reason


def test_new_labels_fire_at_k_and_name_the_last_run() -> None:
    assert labels_rule(_obs(new_labels=99), TH, "run-1") is None
    t = labels_rule(_obs(new_labels=100), TH, "run-1")
    assert t is not None and t.key == "labels:digits:after:run-1"
    assert labels_rule(_obs(new_labels=10**6), Thresholds(new_labels=0)) is None  # off


def test_keys_repeat_within_a_cooldown_period_and_change_after() -> None:
    obs = _obs(drift=True, now=3600.0 * 5 + 10)
    same = drift_rule(_obs(drift=True, now=3600.0 * 5 + 3000), TH, 3600)
    first = drift_rule(obs, TH, 3600)
    later = drift_rule(_obs(drift=True, now=3600.0 * 6 + 1), TH, 3600)
    assert first is not None and same is not None and later is not None
    assert first.key == same.key != later.key
    assert bucket(100.0, 0) == 0 and bucket(7200.0, 3600) == 2


def test_evaluate_puts_the_most_urgent_first() -> None:
    obs = _obs(drift=True, accuracy=0.1, labels=60, new_labels=500)
    assert [t.rule for t in evaluate(obs, TH)] == ["accuracy", "drift", "labels"]
    assert evaluate(_obs(drift=False, accuracy=0.99, labels=60, new_labels=5), TH) == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"accuracy_below": 0.0}, "not in (0, 1]"),
        ({"accuracy_below": 1.5}, "not in (0, 1]"),
        ({"accuracy_below": float("nan")}, "not in (0, 1]"),
        ({"min_labels": 0}, "--min-labels 0"),
        ({"new_labels": -1}, "--new-labels -1"),
    ],
)
def test_bad_thresholds_are_one_line_errors(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(DatawheelError, match="Fix:") as info:
        Thresholds(**kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value)
