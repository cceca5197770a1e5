"""The canary decision rules, one by one, at their boundaries, and as properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datawheel.deploy.canary_policy import Decision, Observation, Thresholds, judge
from datawheel.errors import DatawheelError

T = Thresholds(
    max_error_rate=0.05,
    max_error_excess=0.02,
    max_p99_ratio=1.5,
    p99_slack_s=0.010,
    min_requests=100,
)
GOOD = Observation(requests=1000, errors=0, p99_s=0.020)


def obs(requests: float = 1000, errors: float = 0, p99_ms: float | None = 20.0) -> Observation:
    return Observation(requests, errors, None if p99_ms is None else p99_ms / 1000)


def test_a_canary_like_stable_advances() -> None:
    verdict = judge(GOOD, GOOD, T)
    assert verdict.decision is Decision.ADVANCE
    assert "healthy" in verdict.reason and "0.00%" in verdict.reason


def test_too_few_canary_requests_waits_even_when_all_of_them_failed() -> None:
    verdict = judge(obs(requests=99, errors=99), GOOD, T)
    assert verdict.decision is Decision.WAIT
    assert "canary served 99" in verdict.reason and "100 needed" in verdict.reason


def test_min_requests_is_inclusive() -> None:
    assert judge(obs(requests=100), obs(requests=100), T).decision is Decision.ADVANCE
    assert judge(obs(requests=99.9), GOOD, T).decision is Decision.WAIT


def test_error_rate_above_the_limit_rolls_back_and_says_so() -> None:
    verdict = judge(obs(errors=51), GOOD, T)  # 5.1% > 5%
    assert verdict.decision is Decision.ROLLBACK
    assert verdict.reason.startswith("canary error rate 5.10%")
    assert "51 of 1000" in verdict.reason and "limit 5.00%" in verdict.reason


def test_error_rate_at_the_limit_is_not_above_it() -> None:
    stable = obs(errors=50)  # the same rate on stable: no excess either
    assert judge(obs(errors=50), stable, T).decision is Decision.ADVANCE


def test_absolute_limit_needs_no_baseline() -> None:
    """A canary failing everything is rolled back even while stable has no traffic."""
    verdict = judge(obs(errors=1000), obs(requests=0, p99_ms=None), T)
    assert verdict.decision is Decision.ROLLBACK and "100.00%" in verdict.reason


def test_too_few_stable_requests_waits() -> None:
    verdict = judge(GOOD, obs(requests=10), T)
    assert verdict.decision is Decision.WAIT
    assert verdict.reason.startswith("stable served 10") and "baseline" in verdict.reason


def test_error_excess_over_stable_rolls_back() -> None:
    # canary 4% (under the 5% ceiling), stable 1%: 3 points worse, more than the allowed 2
    verdict = judge(obs(errors=40), obs(errors=10), T)
    assert verdict.decision is Decision.ROLLBACK
    assert "4.00% is 3.00% above stable's 1.00%" in verdict.reason
    assert "allowed 2.00%" in verdict.reason


def test_error_excess_at_the_limit_advances() -> None:
    # 3% vs 1%: exactly 2 points; compare with a little room for float rounding
    t = Thresholds(max_error_rate=0.05, max_error_excess=0.0200001, min_requests=100)
    assert judge(obs(errors=30), obs(errors=10), t).decision is Decision.ADVANCE


def test_a_canary_better_than_stable_is_never_penalised_for_the_difference() -> None:
    assert judge(obs(errors=0), obs(errors=40), T).decision is Decision.ADVANCE


def test_p99_above_ratio_plus_slack_rolls_back() -> None:
    # limit = 20 ms * 1.5 + 10 ms = 40 ms
    verdict = judge(obs(p99_ms=40.5), GOOD, T)
    assert verdict.decision is Decision.ROLLBACK
    assert "canary p99 latency 40.5 ms is above the limit 40.0 ms" in verdict.reason
    assert "stable p99 20.0 ms x 1.5 + 10.0 ms" in verdict.reason


def test_p99_at_the_limit_advances() -> None:
    assert judge(obs(p99_ms=39.99), GOOD, T).decision is Decision.ADVANCE


def test_slack_forgives_a_large_ratio_at_tiny_latencies() -> None:
    # 1 ms vs 3 ms is 3x, but only 2 ms: within 1 ms * 1.5 + 10 ms
    assert judge(obs(p99_ms=3), obs(p99_ms=1), T).decision is Decision.ADVANCE
    strict = Thresholds(max_p99_ratio=1.5, p99_slack_s=0, min_requests=100)
    assert judge(obs(p99_ms=3), obs(p99_ms=1), strict).decision is Decision.ROLLBACK


@pytest.mark.parametrize("which", ["canary", "stable"])
def test_missing_p99_waits(which: str) -> None:
    canary = obs(p99_ms=None) if which == "canary" else GOOD
    stable = obs(p99_ms=None) if which == "stable" else GOOD
    verdict = judge(canary, stable, T)
    assert verdict.decision is Decision.WAIT and f"no p99 latency for {which}" in verdict.reason


def test_errors_are_judged_before_latency() -> None:
    verdict = judge(obs(errors=100, p99_ms=500), GOOD, T)
    assert verdict.decision is Decision.ROLLBACK and "error rate" in verdict.reason


def test_error_rate_of_no_requests_is_zero() -> None:
    assert Observation(0, 0, None).error_rate == 0.0
    assert Observation(200, 50, 0.1).error_rate == 0.25
    assert Observation(200, 50, 0.1).to_json() == {
        "requests": 200,
        "errors": 50,
        "p99_s": 0.1,
        "labels": 0.0,
        "correct": 0.0,
        "error_rate": 0.25,
        "accuracy": None,
    }
    assert Observation(200, 0, 0.1, labels=80, correct=60).to_json()["accuracy"] == 0.75


# --- live accuracy, from feedback labels ----------------------------------------------------

TA = Thresholds(
    max_error_rate=0.05,
    max_error_excess=0.02,
    max_p99_ratio=1.5,
    p99_slack_s=0.010,
    min_requests=100,
    min_labels=50,
    max_accuracy_drop=0.05,
)


def labelled(labels: float, accuracy: float, errors: float = 0) -> Observation:
    return Observation(1000, errors, 0.020, labels=labels, correct=labels * accuracy)


def test_accuracy_below_stable_by_more_than_the_drop_rolls_back() -> None:
    verdict = judge(labelled(60, 0.80), labelled(400, 0.90), TA)
    assert verdict.decision is Decision.ROLLBACK
    assert verdict.reason == (
        "canary live accuracy 80.00% over 60 labels, stable 90.00% over 400: 10.00% lower, "
        "more than the allowed 5.00%"
    )


def test_accuracy_within_the_drop_or_above_advances_and_says_so() -> None:
    within = judge(labelled(60, 0.86), labelled(400, 0.90), TA)
    assert within.decision is Decision.ADVANCE
    assert "canary live accuracy 86.00% over 60 labels, stable 90.00% over 400" in within.reason
    assert judge(labelled(60, 0.99), labelled(400, 0.90), TA).decision is Decision.ADVANCE
    at_limit = judge(labelled(100, 0.85), labelled(100, 0.90), TA)  # exactly 5 points
    assert at_limit.decision is Decision.ADVANCE


@pytest.mark.parametrize(("canary_labels", "stable_labels", "who", "n"), [
    (49, 400, "canary", 49), (0, 400, "canary", 0), (60, 10, "stable", 10),
])  # fmt: skip
def test_too_few_labels_are_not_judged_and_the_verdict_says_so(
    canary_labels: float, stable_labels: float, who: str, n: int
) -> None:
    verdict = judge(labelled(canary_labels, 0.0), labelled(stable_labels, 1.0), TA)
    assert verdict.decision is Decision.ADVANCE  # a canary that is always wrong, unjudged
    assert verdict.reason.endswith(
        f"live accuracy not judged yet: {who} has {n} of the 50 labels needed"
    )


def test_errors_are_judged_before_accuracy() -> None:
    verdict = judge(labelled(60, 0.99, errors=100), labelled(400, 0.90), TA)
    assert verdict.decision is Decision.ROLLBACK and "error rate" in verdict.reason


def test_verdict_json() -> None:
    assert judge(obs(requests=1), GOOD, T).to_json()["decision"] == "wait"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_error_rate", -0.1),
        ("max_error_rate", 1.5),
        ("max_error_rate", math.nan),
        ("max_error_excess", 2.0),
        ("max_p99_ratio", 0.9),
        ("max_p99_ratio", math.inf),
        ("p99_slack_s", -1.0),
        ("min_requests", 0.0),
        ("min_requests", math.nan),
        ("min_labels", 0.0),
        ("max_accuracy_drop", -0.01),
        ("max_accuracy_drop", 1.5),
    ],
)
def test_thresholds_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(DatawheelError) as info:
        Thresholds(**{field: value})
    text = str(info.value)
    option = {"p99_slack_s": "p99-slack"}.get(field, field.replace("_", "-"))
    assert f"canary threshold {option} = " in text and "out of range" in text and "Fix:" in text


def test_default_thresholds_are_valid() -> None:
    assert Thresholds().to_json()["min_requests"] == 100
    assert (Thresholds().min_labels, Thresholds().max_accuracy_drop) == (50, 0.05)


# --- properties ------------------------------------------------------------------------

counts = st.floats(min_value=0, max_value=1e6, allow_nan=False)
p99s = st.one_of(st.none(), st.floats(min_value=0, max_value=10, allow_nan=False))


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    requests = draw(counts)
    errors = draw(st.floats(min_value=0, max_value=1)) * requests
    labels = draw(st.floats(min_value=0, max_value=1000, allow_nan=False))
    correct = draw(st.floats(min_value=0, max_value=1)) * labels
    return Observation(requests, errors, draw(p99s), labels=labels, correct=correct)


@given(observations(), observations())
def test_advance_means_every_limit_holds(canary: Observation, stable: Observation) -> None:
    if judge(canary, stable, T).decision is Decision.ADVANCE:
        assert canary.requests >= T.min_requests and stable.requests >= T.min_requests
        assert canary.error_rate <= T.max_error_rate
        assert canary.error_rate - stable.error_rate <= T.max_error_excess
        assert canary.p99_s is not None and stable.p99_s is not None
        assert canary.p99_s <= stable.p99_s * T.max_p99_ratio + T.p99_slack_s
        judged = canary.labels >= T.min_labels and stable.labels >= T.min_labels
        if judged and canary.accuracy is not None and stable.accuracy is not None:
            assert canary.accuracy >= stable.accuracy - T.max_accuracy_drop - 1e-9


@given(observations(), observations(), st.floats(min_value=0, max_value=1))
def test_less_accurate_never_turns_a_rollback_into_an_advance(
    canary: Observation, stable: Observation, fewer: float
) -> None:
    worse = Observation(
        canary.requests, canary.errors, canary.p99_s, canary.labels, canary.correct * fewer
    )
    if judge(canary, stable, T).decision is Decision.ROLLBACK:
        assert judge(worse, stable, T).decision is Decision.ROLLBACK


@given(observations(), observations(), st.floats(min_value=0, max_value=1))
def test_more_errors_never_turn_a_rollback_into_an_advance(
    canary: Observation, stable: Observation, extra: float
) -> None:
    worse = Observation(
        canary.requests,
        canary.errors + extra * (canary.requests - canary.errors),
        canary.p99_s,
        canary.labels,
        canary.correct,
    )
    if judge(canary, stable, T).decision is Decision.ROLLBACK:
        assert judge(worse, stable, T).decision is Decision.ROLLBACK


@given(observations(), observations(), st.floats(min_value=0, max_value=10))
def test_slower_never_turns_a_rollback_into_an_advance(
    canary: Observation, stable: Observation, extra_s: float
) -> None:
    slower = Observation(
        canary.requests,
        canary.errors,
        None if canary.p99_s is None else canary.p99_s + extra_s,
        canary.labels,
        canary.correct,
    )
    if judge(canary, stable, T).decision is Decision.ROLLBACK:
        assert judge(slower, stable, T).decision is Decision.ROLLBACK
