"""Evaluation: metrics on the test split, the champion comparison, and the reports."""

from datawheel.evaluation.compare import Comparison, compare, paired_bootstrap
from datawheel.evaluation.metrics import Evaluation, as_dict, classification_metrics
from datawheel.evaluation.report import report_markdown

__all__ = [
    "Comparison",
    "Evaluation",
    "as_dict",
    "classification_metrics",
    "compare",
    "paired_bootstrap",
    "report_markdown",
]
