"""Score a challenger, compare it with the champion, and decide promote or reject.

Both models are exported TorchScript that take RAW features, so they are scored
on exactly the same raw test rows. The decision uses a paired bootstrap of the
accuracy difference: promote only when the lower end of its two-sided 95%
interval is above ``margin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Comparison",
    "Evaluation",
    "classification_metrics",
    "compare",
    "paired_bootstrap",
    "report_markdown",
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


@dataclass
class Evaluation:
    classes: list[str]
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    comparison: Comparison
    extra: dict[str, float] = field(default_factory=dict)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]], list[list[int]]]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    metrics = {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
    }
    per_class = {
        c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": float(s)}
        for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return metrics, per_class, [[int(v) for v in row] for row in cm]


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


def report_markdown(ev: Evaluation, *, model: str, dataset: str) -> str:
    """The evaluation as Markdown, for the KFP UI and the CLI."""
    c = ev.comparison
    m = ev.metrics
    lines = [
        f"# Evaluation: {c.decision.upper()}",
        "",
        f"Challenger `{model}` on the test split of `{dataset}`.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in {**m, **ev.extra}.items()],
        "",
        "## Decision",
        "",
        c.reason + ".",
    ]
    if c.champion_version is not None and c.champion_accuracy is not None:
        lines += [
            "",
            f"Champion `{c.champion_version}` accuracy {c.champion_accuracy:.4f}; "
            f"challenger {m['accuracy']:.4f}.",
        ]
    lines += [
        "",
        "## Per class",
        "",
        "| class | precision | recall | f1 | support |",
        "|---|---|---|---|---|",
    ]
    for cls, s in ev.per_class.items():
        lines.append(
            f"| {cls} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
            f"| {int(s['support'])} |"
        )
    lines += [
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        "| | " + " | ".join(ev.classes) + " |",
        "|---" * (len(ev.classes) + 1) + "|",
    ]
    for cls, row in zip(ev.classes, ev.confusion, strict=True):
        lines.append(f"| **{cls}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def as_dict(ev: Evaluation) -> dict[str, Any]:
    c = ev.comparison
    return {
        "metrics": ev.metrics,
        "extra": ev.extra,
        "decision": c.decision,
        "reason": c.reason,
        "champion_version": c.champion_version,
        "champion_accuracy": c.champion_accuracy,
        "diff": c.diff,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
    }
