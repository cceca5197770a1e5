"""Canary decision logic: pure, no I/O. Is the canary at least as good as stable?

One judgement compares what Prometheus saw for the two versions over the same window:

1. The canary served fewer than ``min_requests`` inference requests -> WAIT (inconclusive).
2. Its error rate (5xx share of inference requests) is above ``max_error_rate`` -> ROLLBACK.
   This needs no baseline: a canary that fails this badly is bad whatever stable does.
3. Stable served fewer than ``min_requests`` -> WAIT: nothing to compare against.
4. Its error rate exceeds stable's by more than ``max_error_excess`` -> ROLLBACK.
5. Its p99 latency is above ``stable_p99 * max_p99_ratio + p99_slack_s`` -> ROLLBACK.
   The slack keeps a 1 ms vs 2 ms difference (a 2x ratio of noise) from failing a canary.
6. Live accuracy, from the labels users sent back (feedback) for each version's
   predictions since the canary started: once the canary's predictions have at least
   ``min_labels`` labels, and stable's as many, the canary's accuracy may be at most
   ``max_accuracy_drop`` below stable's, else -> ROLLBACK. With fewer labels on either
   side accuracy is not judged, and the verdict's reason says so.
7. Otherwise -> ADVANCE to the next traffic step (or promote after the last one).

4xx answers are the client's fault: they count as requests, not as errors. A missing p99
(no latency samples yet) is WAIT.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from datawheel.errors import DatawheelError

__all__ = ["Decision", "Observation", "Thresholds", "Verdict", "judge"]


class Decision(StrEnum):
    ADVANCE = "advance"  # healthy: move to the next step (promote after the last)
    ROLLBACK = "rollback"  # unhealthy: remove the canary
    WAIT = "wait"  # inconclusive: too little traffic to judge; look again later


@dataclass(frozen=True)
class Observation:
    """One version's inference traffic over the query window."""

    requests: float  # inference requests answered in the window (may be fractional: increase())
    errors: float  # of which 5xx
    p99_s: float | None  # 99th percentile latency in seconds; None when there were no samples
    labels: float = 0.0  # feedback labels for this version's predictions since the canary began
    correct: float = 0.0  # of which confirmed the prediction

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labels if self.labels > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate, "accuracy": self.accuracy}


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01  # absolute ceiling on the canary's 5xx share
    max_error_excess: float = 0.005  # how much worse than stable's 5xx share it may be
    max_p99_ratio: float = 1.5  # canary p99 may be at most this times stable's...
    p99_slack_s: float = 0.025  # ...plus this much
    min_requests: float = 100  # per version and window, before anything but WAIT
    min_labels: float = 50  # feedback labels per version before live accuracy is judged
    max_accuracy_drop: float = 0.05  # how far below stable's the canary's accuracy may be

    def __post_init__(self) -> None:
        checks = (
            ("max-error-rate", self.max_error_rate, 0 <= self.max_error_rate <= 1),
            ("max-error-excess", self.max_error_excess, 0 <= self.max_error_excess <= 1),
            ("max-p99-ratio", self.max_p99_ratio, 1 <= self.max_p99_ratio < math.inf),
            ("p99-slack", self.p99_slack_s, 0 <= self.p99_slack_s < math.inf),
            ("min-requests", self.min_requests, 1 <= self.min_requests < math.inf),
            ("min-labels", self.min_labels, 1 <= self.min_labels < math.inf),
            ("max-accuracy-drop", self.max_accuracy_drop, 0 <= self.max_accuracy_drop <= 1),
        )
        for name, value, ok in checks:
            if not ok:  # also false for NaN
                raise DatawheelError(
                    f"canary threshold {name} = {value} is out of range",
                    "error rates and the accuracy drop lie in [0, 1], the p99 ratio is >= 1, "
                    "the p99 slack >= 0, min-requests and min-labels >= 1",
                )

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"decision": self.decision.value, "reason": self.reason}


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def judge(canary: Observation, stable: Observation, t: Thresholds) -> Verdict:
    """The verdict on one window of traffic (see the module docstring for the rules)."""
    if canary.requests < t.min_requests:
        return Verdict(
            Decision.WAIT,
            f"canary served {canary.requests:.0f} inference requests in the window, "
            f"fewer than the {t.min_requests:.0f} needed to judge it",
        )
    if canary.error_rate > t.max_error_rate:
        return Verdict(
            Decision.ROLLBACK,
            f"canary error rate {_pct(canary.error_rate)} ({canary.errors:.0f} of "
            f"{canary.requests:.0f} inference requests answered 5xx) is above the limit "
            f"{_pct(t.max_error_rate)}",
        )
    if stable.requests < t.min_requests:
        return Verdict(
            Decision.WAIT,
            f"stable served {stable.requests:.0f} inference requests in the window, "
            f"fewer than the {t.min_requests:.0f} needed for a baseline",
        )
    excess = canary.error_rate - stable.error_rate
    if excess > t.max_error_excess:
        return Verdict(
            Decision.ROLLBACK,
            f"canary error rate {_pct(canary.error_rate)} is {_pct(excess)} above stable's "
            f"{_pct(stable.error_rate)}, more than the allowed {_pct(t.max_error_excess)}",
        )
    if canary.p99_s is None or stable.p99_s is None:
        which = "canary" if canary.p99_s is None else "stable"
        return Verdict(Decision.WAIT, f"no p99 latency for {which} yet (no latency samples)")
    limit = stable.p99_s * t.max_p99_ratio + t.p99_slack_s
    if canary.p99_s > limit:
        return Verdict(
            Decision.ROLLBACK,
            f"canary p99 latency {_ms(canary.p99_s)} is above the limit {_ms(limit)} "
            f"(stable p99 {_ms(stable.p99_s)} x {t.max_p99_ratio:g} + {_ms(t.p99_slack_s)})",
        )
    accuracy = _accuracy(canary, stable, t)
    if isinstance(accuracy, Verdict):
        return accuracy
    return Verdict(
        Decision.ADVANCE,
        f"canary healthy: error rate {_pct(canary.error_rate)} (stable "
        f"{_pct(stable.error_rate)}), p99 {_ms(canary.p99_s)} (limit {_ms(limit)}) over "
        f"{canary.requests:.0f} requests; {accuracy}",
    )


def _accuracy(canary: Observation, stable: Observation, t: Thresholds) -> Verdict | str:
    """A ROLLBACK verdict on live accuracy, or the words saying how it stands."""
    mine, theirs = canary.accuracy, stable.accuracy
    for who, o, acc in (("canary", canary, mine), ("stable", stable, theirs)):
        if o.labels < t.min_labels or acc is None:
            return (
                f"live accuracy not judged yet: {who} has {o.labels:.0f} of the "
                f"{t.min_labels:.0f} labels needed"
            )
    if mine is None or theirs is None:  # for the type checker: the loop returned already
        return "live accuracy not judged"
    drop = theirs - mine
    figures = (
        f"canary live accuracy {_pct(mine)} over {canary.labels:.0f} labels, "
        f"stable {_pct(theirs)} over {stable.labels:.0f}"
    )
    if drop > t.max_accuracy_drop + 1e-12:
        return Verdict(
            Decision.ROLLBACK,
            f"{figures}: {_pct(drop)} lower, more than the allowed {_pct(t.max_accuracy_drop)}",
        )
    return figures
