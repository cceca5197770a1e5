"""Evaluate step: score the challenger and compare it with the champion.

Both models are scored through their exported TorchScript (raw features in) on the same raw
test rows, in batches, so memory stays bounded however large the test split is. Both are
reported on the reference and the production slices of the test rows as well as combined.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from datawheel.errors import DatawheelError
from datawheel.orchestration.step import MetricsSink, log, pipeline_step
from datawheel.storage import open_store

__all__ = ["evaluate_step"]


def _predict(model_path: Path, x: np.ndarray, n_classes: int) -> np.ndarray:
    """The challenger's predicted class per row; a broken export is a user error."""
    from datawheel.evaluation.predict import ModelOutputError, predict_classes

    try:
        return predict_classes(model_path, x, n_classes=n_classes)
    except (ModelOutputError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatawheelError(
            f"{model_path.name} cannot score the test split ({first})",
            "re-run the train step on these splits so the model matches them",
        ) from None


@pipeline_step
def evaluate_step(
    store: str,
    model_name: str,
    dataset: str,
    splits_dir: str,
    model_dir: str,
    margin: float,
    report_path: str,
    metrics: MetricsSink,
    seed: int = 0,
    html_path: str = "",
    confidence: float = 0.95,
    production_tolerance: float = 0.0,
    accuracy_tolerance: float = 0.005,
    latency_budget_ms: float = 0.0,
) -> dict[str, Any]:
    """Score the challenger (float and int8) and compare it with the champion on the test rows.

    Promote when there is no champion, or when the lower bound of the two-sided
    ``confidence`` paired bootstrap interval of the accuracy difference is above ``margin``:
    a one-sided test at ``(1 + confidence) / 2``, 97.5% for the default 0.95. A champion that
    exists but cannot be scored on these rows (other features or image shape, corrupt or
    unloadable files) means ``reject``, with the reason named and ``champion_version`` set.

    The test rows that came from production (``Splits.test_production``) are the production
    slice, the others the reference slice; both models' accuracy on each is in ``"slices"``.
    When there are production test rows, a promote also needs the challenger's production
    accuracy to be at most ``production_tolerance`` below the champion's; otherwise
    ``reject``, with the reason naming the production slice and both accuracies.

    Every serving variant in ``model_dir`` (TorchScript, ONNX, ONNX int8, a distilled
    student) is measured here (size, batch-1 and batch-64 latency, test accuracy) and one is
    picked to serve (:func:`~datawheel.evaluation.variant_choice.choose_variant` with
    ``accuracy_tolerance`` and ``latency_budget_ms``, 0 for none); both go into the result
    (``variants``, ``serving_variant``) and the reports.

    Writes the Markdown report to ``report_path`` and, when ``html_path`` is given, the
    HTML report with training curves and the confusion matrix.
    """
    model_name = model_name or dataset
    from datawheel.data.split import load_splits
    from datawheel.evaluation import (
        Evaluation,
        as_dict,
        cannot_compare,
        classification_metrics,
        compare,
        gate_production,
        report_markdown,
        score_champion,
        slice_accuracies,
        slice_metrics,
    )
    from datawheel.evaluation.variant_choice import choose_variant, measure_variants

    if not 0 < confidence < 1:
        raise DatawheelError(
            f"confidence={confidence} is not a probability", "use a value such as 0.95"
        )
    if not 0 <= accuracy_tolerance < 1 or latency_budget_ms < 0:
        raise DatawheelError(
            f"accuracy_tolerance={accuracy_tolerance} / latency_budget_ms={latency_budget_ms} "
            "is out of range",
            "use an accuracy difference in [0, 1) such as 0.005, and a budget of 0 (none) or more",
        )
    if not 0 <= production_tolerance < 1:
        raise DatawheelError(
            f"production_tolerance={production_tolerance} is not an accuracy difference in [0, 1)",
            "use a small value such as 0.0 or 0.01",
        )
    splits = load_splits(splits_dir)
    classes = splits.transform.classes
    y_true = splits.y_test
    pred = _predict(Path(model_dir, "model.ts"), splits.x_test, len(classes))
    scores, per_class, confusion = classification_metrics(y_true, pred, classes)
    correct_new = pred == y_true
    del pred
    int8_pred = _predict(Path(model_dir, "model_int8.onnx"), splits.x_test, len(classes))
    int8_acc = float(np.mean(int8_pred == y_true)) if len(y_true) else 0.0
    del int8_pred
    champ = score_champion(open_store(store), model_name, splits.x_test, y_true, splits.transform)
    if champ.note:
        log(f"champion {champ.version}: {champ.note}")
    if champ.problem:
        comparison = cannot_compare(champ.version, champ.problem)
    else:
        comparison = compare(
            correct_new,
            champ.correct,
            margin=margin,
            seed=seed,
            champion_version=champ.version,
            confidence=confidence,
        )
    figures = measure_variants(model_dir, splits.x_test, y_true, log=log)
    choice = choose_variant(
        figures, accuracy_tolerance=accuracy_tolerance, latency_budget_ms=latency_budget_ms
    )
    log(f"serving variant: {choice.name} ({choice.reason})")
    variants = [f.to_json() for f in figures]
    slices = slice_accuracies(correct_new, champ.correct, splits.test_production)
    comparison = gate_production(comparison, slices, production_tolerance)
    sliced = slice_metrics(slices)
    challenger_slices = {k: v for k, v in sliced.items() if not k.startswith("champion_")}
    ev = Evaluation(
        classes,
        scores,
        per_class,
        confusion,
        comparison,
        extra={"int8_accuracy": int8_acc, **challenger_slices},
        slices=slices,
        variants=variants,
        serving_variant=choice.to_json(),
    )
    Path(report_path).write_text(report_markdown(ev, model=model_name, dataset=dataset))
    if html_path:
        from datawheel.evaluation.report import evaluation_html

        history = json.loads(Path(model_dir, "train.json").read_text()).get("history", [])
        page = evaluation_html(
            model=model_name,
            dataset=dataset,
            decision=comparison.decision,
            reason=comparison.reason,
            metrics={**scores, **ev.extra},
            history=history,
            classes=classes,
            confusion=confusion,
            slices=slices,
            variants=variants,
            serving_variant=choice.to_json(),
        )
        Path(html_path).write_text(page)
    for name, value in {**scores, **ev.extra, **sliced}.items():
        metrics.log_metric(name, value)
    prod = slices["production"]
    on_production = ""
    if prod["rows"]:
        on_production = f" production={prod['challenger_accuracy']:.4f} ({prod['rows']} rows)"
    log(
        f"test accuracy={scores['accuracy']:.4f} macro_f1={scores['macro_f1']:.4f} "
        f"int8={int8_acc:.4f}{on_production}; decision: {comparison.decision} "
        f"({comparison.reason})"
    )
    return {**as_dict(ev), "classes": classes, "confusion": confusion}
