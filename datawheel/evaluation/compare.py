"""Compare a challenger with the champion on the same test rows and decide promote or reject.

The decision uses a paired bootstrap of the accuracy difference: promote only when the
lower end of its two-sided 95% interval is above ``margin``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "compare", "paired_bootstrap"]


@dataclass(frozen=True)
class Comparison:
    decision: str  # "promote" or "reject"
    reason: str
    champion_version: str | None = None
    champion_accuracy: float | None = None
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


def paired_bootstrap(
    correct_new: np.ndarray,
    correct_old: np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean accuracy difference (new - old) and its bootstrap interval over paired rows."""
    a = np.asarray(correct_new, np.float64)
    b = np.asarray(correct_old, np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_bootstrap needs two equal-length, non-empty arrays")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = (a[idx] - b[idx]).mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float((a - b).mean()), float(low), float(high)


def compare(
    correct_new: np.ndarray,
    correct_old: np.ndarray | None,
    *,
    margin: float = 0.0,
    champion_version: str | None = None,
    seed: int = 0,
) -> Comparison:
    """``promote`` when there is no champion, or the challenger is better by > margin at 95%."""
    if correct_old is None:
        return Comparison("promote", "no champion yet: the first model becomes champion")
    diff, low, high = paired_bootstrap(correct_new, correct_old, seed=seed)
    old_acc = float(np.mean(correct_old))
    if low > margin:
        decision = "promote"
        reason = (
            f"challenger better by {diff:+.4f} (95% CI [{low:+.4f}, {high:+.4f}] > {margin:+.4f})"
        )
    else:
        decision = "reject"
        reason = (
            f"not better by more than {margin:+.4f} with 95% confidence "
            f"(diff {diff:+.4f}, CI [{low:+.4f}, {high:+.4f}])"
        )
    return Comparison(decision, reason, champion_version, old_acc, diff, low, high)
