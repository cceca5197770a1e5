"""Evaluation: metrics on the test split, the champion comparison, and the reports."""

from datawheel.evaluation.champion import ChampionScore, input_mismatch, score_champion
from datawheel.evaluation.compare import (
    Comparison,
    cannot_compare,
    compare,
    describe_confidence,
    paired_bootstrap,
)
from datawheel.evaluation.metrics import Evaluation, as_dict, classification_metrics
from datawheel.evaluation.predict import predict_classes
from datawheel.evaluation.report import report_markdown
from datawheel.evaluation.slices import (
    SLICE_NAMES,
    gate_production,
    slice_accuracies,
    slice_metrics,
)

__all__ = [
    "SLICE_NAMES",
    "ChampionScore",
    "Comparison",
    "Evaluation",
    "as_dict",
    "cannot_compare",
    "classification_metrics",
    "compare",
    "describe_confidence",
    "gate_production",
    "input_mismatch",
    "paired_bootstrap",
    "predict_classes",
    "report_markdown",
    "score_champion",
    "slice_accuracies",
    "slice_metrics",
]
