"""Compare a challenger with the champion on the same test rows and decide promote or reject.

The decision uses a paired bootstrap of the accuracy difference (challenger - champion):
promote only when the LOWER bound of its two-sided ``confidence`` interval (95% by default)
is above ``margin``. Requiring only the lower bound is a one-sided test at level
``(1 + confidence) / 2``, 97.5% for the default: the challenger is promoted when we are 97.5%
sure it beats the champion by more than the margin.

The bootstrap is exact and needs O(n_boot) memory whatever the number of rows: each paired
difference of correctness is -1, 0 or 1, so one replicate (n rows drawn with replacement) is
summed up by how many of its draws are +1 and -1, a multinomial draw over the three counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Comparison",
    "cannot_compare",
    "compare",
    "describe_confidence",
    "paired_bootstrap",
]


@dataclass(frozen=True)
class Comparison:
    decision: str  # "promote" or "reject"
    reason: str
    champion_version: str | None = None
    champion_accuracy: float | None = None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None  # of the two-sided interval [ci_low, ci_high]
    margin: float | None = None
    # how far below the champion's the challenger's production-slice accuracy may be
    production_tolerance: float | None = None


def _percent(fraction: float) -> str:
    return f"{round(100 * fraction, 6):g}%"


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be between 0 and 1 (e.g. 0.95)")


def describe_confidence(confidence: float = 0.95) -> str:
    """How the decision uses the interval, e.g. for 0.95: "the lower bound of the two-sided
    95% bootstrap interval (a one-sided 97.5% test)"."""
    _check_confidence(confidence)
    return (
        f"the lower bound of the two-sided {_percent(confidence)} bootstrap interval "
        f"(a one-sided {_percent((1 + confidence) / 2)} test)"
    )


def _correctness(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"paired_bootstrap takes 0/1 correctness; {name} has other values")
    return arr.astype(np.bool_)


def paired_bootstrap(
    correct_new: np.ndarray,
    correct_old: np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean accuracy difference (new - old) and its two-sided ``confidence`` bootstrap interval.

    ``correct_new`` and ``correct_old`` are per-row correctness (bool or 0/1) of the two models
    on the same rows. Each replicate resamples the n rows with replacement; since a row's
    difference is -1, 0 or 1, the replicate's mean is ``(k_plus - k_minus) / n`` with
    ``(k_plus, k_minus, k_zero)`` multinomial: the same distribution as resampling row indices,
    without materialising them (O(n_boot) memory instead of O(n_boot * n)).
    """
    a = _correctness(correct_new, "correct_new")
    b = _correctness(correct_old, "correct_old")
    if a.shape != b.shape or a.size == 0 or a.ndim != 1:
        raise ValueError("paired_bootstrap needs two equal-length, non-empty 1-d arrays")
    _check_confidence(confidence)
    n = a.size
    n_plus = int(np.count_nonzero(a & ~b))
    n_minus = int(np.count_nonzero(~a & b))
    p = np.array([n_plus, n_minus, n - n_plus - n_minus], np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, p, size=n_boot)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return (n_plus - n_minus) / n, float(low), float(high)


def cannot_compare(champion_version: str | None, problem: str) -> Comparison:
    """``reject``: a champion exists but the challenger cannot be shown better than it."""
    who = f"champion {champion_version}" if champion_version else "the champion"
    return Comparison(
        "reject",
        f"cannot show the challenger is better than {who}: {problem}",
        champion_version,
    )


def compare(
    correct_new: np.ndarray,
    correct_old: np.ndarray | None,
    *,
    margin: float = 0.0,
    champion_version: str | None = None,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """``promote`` when there is no champion (``correct_old`` and ``champion_version`` both
    None), or when the lower bound of the two-sided ``confidence`` bootstrap interval of the
    accuracy difference is above ``margin`` (a one-sided test at ``(1 + confidence) / 2``).

    A champion that exists but could not be scored is :func:`cannot_compare`, never this.
    """
    if correct_old is None:
        if champion_version is not None:
            raise ValueError(
                f"champion {champion_version} has no scores; use cannot_compare() to say why"
            )
        return Comparison("promote", "no champion yet: the first model becomes champion")
    diff, low, high = paired_bootstrap(correct_new, correct_old, seed=seed, confidence=confidence)
    old_acc = float(np.mean(correct_old))
    test = describe_confidence(confidence)
    interval = f"{_percent(confidence)} CI [{low:+.4f}, {high:+.4f}]"
    if low > margin:
        decision = "promote"
        reason = (
            f"challenger better by {diff:+.4f}: {test} is above the margin "
            f"({interval}, {low:+.4f} > {margin:+.4f})"
        )
    else:
        decision = "reject"
        reason = (
            f"not shown better by more than the margin {margin:+.4f}: {test} is not above it "
            f"(diff {diff:+.4f}, {interval})"
        )
    return Comparison(
        decision, reason, champion_version, old_acc, diff, low, high, confidence, margin
    )
