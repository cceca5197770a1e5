"""Classification metrics of one model on one split, and the evaluation record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datawheel.evaluation.compare import Comparison

__all__ = ["Evaluation", "as_dict", "classification_metrics"]


@dataclass
class Evaluation:
    classes: list[str]
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    comparison: Comparison
    extra: dict[str, float] = field(default_factory=dict)
    # reference / production / combined: rows and both models' accuracy (evaluation.slices)
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)
    # each serving variant's figures (evaluation.variant_choice) and the one picked to serve
    variants: list[dict[str, Any]] = field(default_factory=list)
    serving_variant: dict[str, str] = field(default_factory=dict)


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
        "confidence": c.confidence,
        "margin": c.margin,
        "production_tolerance": c.production_tolerance,
        "slices": ev.slices,
        "variants": ev.variants,
        "serving_variant": ev.serving_variant,
    }
