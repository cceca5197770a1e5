"""Evaluation component: score, compare with the champion, decide."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    HTML,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from datawheel.deploy.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    store: str,
    model_name: str,
    dataset_name: str,
    margin: float,
    seed: int,
    splits: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    html_report: Output[HTML],
    production_tolerance: float = 0.0,
    accuracy_tolerance: float = 0.005,
    latency_budget_ms: float = 0.0,
) -> NamedTuple("EvaluateOutputs", [("decision", str), ("evaluation", str)]):
    """Test metrics, confusion matrix, HTML report, promote/reject against the champion, and
    the serving variant: the fastest within accuracy_tolerance meeting latency_budget_ms."""
    import json
    from collections import namedtuple

    from datawheel.orchestration.evaluate import evaluate_step

    ev = evaluate_step(
        store,
        model_name,
        dataset_name,
        splits.path,
        model.path,
        margin,
        report.path,
        metrics,
        seed=seed,
        html_path=html_report.path,
        production_tolerance=production_tolerance,
        accuracy_tolerance=accuracy_tolerance,
        latency_budget_ms=latency_budget_ms,
    )
    classification.log_confusion_matrix(ev["classes"], ev["confusion"])
    return namedtuple("EvaluateOutputs", ["decision", "evaluation"])(ev["decision"], json.dumps(ev))
