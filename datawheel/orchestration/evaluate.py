"""Evaluate step: score the challenger and compare it with the champion."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datawheel import registry
from datawheel.orchestration.step import MetricsSink, log, pipeline_step
from datawheel.storage import open_store

__all__ = ["evaluate_step"]


def _predict(model_path: Path, x: np.ndarray) -> np.ndarray:
    import torch

    from datawheel.training.export import load_exported

    module = load_exported(model_path)
    with torch.inference_mode():
        logits: torch.Tensor = module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return np.asarray(logits.argmax(1).numpy())


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
) -> dict[str, Any]:
    """Score the challenger (float and int8) and compare it with the champion on the test rows.

    Writes the Markdown report to ``report_path`` and, when ``html_path`` is given, the
    HTML report with training curves and the confusion matrix.
    """
    model_name = model_name or dataset
    from datawheel.data.split import load_splits
    from datawheel.evaluation import (
        Evaluation,
        as_dict,
        classification_metrics,
        compare,
        report_markdown,
    )

    splits = load_splits(splits_dir)
    classes = splits.transform.classes
    y_true = splits.y_test
    pred = _predict(Path(model_dir, "model.ts"), splits.x_test)
    scores, per_class, confusion = classification_metrics(y_true, pred, classes)
    int8_acc = float(np.mean(_predict(Path(model_dir, "model_int8.ts"), splits.x_test) == y_true))
    correct_old, champion = _champion_correct(store, model_name, splits)
    comparison = compare(
        pred == y_true, correct_old, margin=margin, seed=seed, champion_version=champion
    )
    ev = Evaluation(
        classes, scores, per_class, confusion, comparison, extra={"int8_accuracy": int8_acc}
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
        )
        Path(html_path).write_text(page)
    for name, value in {**scores, **ev.extra}.items():
        metrics.log_metric(name, value)
    log(
        f"test accuracy={scores['accuracy']:.4f} macro_f1={scores['macro_f1']:.4f} "
        f"int8={int8_acc:.4f}; decision: {comparison.decision} ({comparison.reason})"
    )
    return {**as_dict(ev), "classes": classes, "confusion": confusion}


def _champion_correct(
    store: str, model_name: str, splits: Any
) -> tuple[np.ndarray | None, str | None]:
    st = open_store(store)
    if registry.get_alias(st, model_name, "champion") is None:
        return None, None
    mv = registry.resolve(st, model_name, "champion")
    with tempfile.TemporaryDirectory() as tmp:
        registry.fetch(st, mv, tmp)
        from datawheel.data.transform import Transform

        champ_tf = Transform.load(Path(tmp, "transform.json"))
        if champ_tf.features != splits.transform.features:
            log(f"champion {mv.version} was trained on other features; comparing as if absent")
            return None, None
        pred = _predict(Path(tmp, "model.ts"), splits.x_test)
    champ_labels = np.asarray(champ_tf.classes)[pred]
    true_labels = np.asarray(splits.transform.classes)[splits.y_test]
    return champ_labels == true_labels, mv.version
