"""Serving variants: each one measured on a real export (size, latency, accuracy), the pick by
accuracy tolerance and latency budget, and the table in the evaluation, reports and card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_evaluate_step import NAME, Sink, _data, export_dir

from datawheel import registry
from datawheel.data.split import write_splits
from datawheel.evaluation.predict import predict_classes
from datawheel.evaluation.variant_choice import VariantFigures, choose_variant, measure_variants
from datawheel.orchestration.evaluate import evaluate_step
from datawheel.orchestration.register import register_step
from datawheel.storage import LocalStore


def _fig(name: str, accuracy: float, p50: float, p99: float) -> VariantFigures:
    lat = {"batch1": {"p50": p50, "p99": p99}, "batch64": {"p50": p50 * 10, "p99": p99 * 10}}
    return VariantFigures(name, f"{name}.file", "onnxruntime", 1000, accuracy, lat)


FIGS = [
    _fig("torchscript", 0.950, 0.50, 0.90),
    _fig("onnx", 0.950, 0.20, 0.40),
    _fig("onnx-int8", 0.946, 0.10, 0.60),
    _fig("student", 0.930, 0.05, 0.08),
]


def test_the_fastest_variant_within_the_accuracy_tolerance_is_chosen() -> None:
    choice = choose_variant(FIGS)  # student is fastest but 0.02 below the full model
    assert choice.name == "onnx-int8" and "within 0.005 of torchscript's 0.9500" in choice.reason
    assert choose_variant(FIGS, accuracy_tolerance=0.001).name == "onnx"
    assert choose_variant(FIGS, accuracy_tolerance=0.05).name == "student"


def test_a_latency_budget_rules_out_slow_tails() -> None:
    choice = choose_variant(FIGS, latency_budget_ms=0.5)  # int8's p99 is 0.6 ms
    assert choice.name == "onnx" and "p99 within 0.5 ms" in choice.reason
    none = choose_variant(FIGS, latency_budget_ms=0.01)
    assert none.name == "onnx-int8" and "no variant" in none.reason and "0.01 ms" in none.reason


def test_without_measurements_the_full_model_serves() -> None:
    assert choose_variant([]).name == "torchscript"


def test_every_exported_variant_is_measured(tmp_path: Path) -> None:
    splits, model = _data()
    folder = export_dir(model, splits.transform, tmp_path / "m")
    shutil.copy(folder / "model.onnx", folder / "student.onnx")  # a stand-in student
    figures = measure_variants(folder, splits.x_test, splits.y_test, calls=30)
    assert [f.name for f in figures] == ["torchscript", "onnx", "onnx-int8", "student"]
    by = {f.name: f for f in figures}
    assert by["onnx-int8"].size_bytes < by["onnx"].size_bytes
    assert by["onnx"].size_bytes == (folder / "model.onnx").stat().st_size
    for f in figures:
        pred = predict_classes(
            folder / f.file, splits.x_test, n_classes=len(splits.transform.classes)
        )
        assert f.accuracy == pytest.approx(float(np.mean(pred == splits.y_test)))
        for batch in ("batch1", "batch64"):
            assert 0 < f.latency_ms[batch]["p50"] <= f.latency_ms[batch]["p99"]
    assert by["onnx"].accuracy == by["torchscript"].accuracy  # the same graph


def test_the_evaluation_reports_and_the_card_carry_the_table(tmp_path: Path) -> None:
    splits, model = _data()
    write_splits(splits, tmp_path / "splits")
    folder = export_dir(model, splits.transform, tmp_path / "challenger")
    store = LocalStore(tmp_path / "store")
    html = tmp_path / "report.html"
    ev = evaluate_step(
        store.uri, NAME, "blobs-data", str(tmp_path / "splits"), str(folder), 0.0,
        str(tmp_path / "report.md"), Sink(), html_path=str(html), latency_budget_ms=1000.0,
    )  # fmt: skip
    names = [v["name"] for v in ev["variants"]]
    assert names == ["torchscript", "onnx", "onnx-int8"]
    chosen = ev["serving_variant"]["name"]
    assert chosen in names and "1000 ms" in ev["serving_variant"]["reason"]
    page = html.read_text()
    assert "Serving variants" in page and f"Serves <b>{chosen}</b>" in page
    assert "## Serving variants" in (tmp_path / "report.md").read_text()
    train = {"metrics": {}, "config": {"model_kind": "mlp"}, "device": "cpu"}
    (folder / "train.json").write_text(json.dumps(train))
    register_step(store.uri, NAME, str(folder), "blobs-data", "v0", json.dumps(ev), "champion")
    card = registry.resolve(store, NAME, "champion").card
    assert card["serving_variant"] == ev["serving_variant"]
    assert [v["name"] for v in card["variants"]] == names
    for file in ("model.ts", "model.onnx", "model_int8.onnx"):
        assert len(card["files"][file]) == 64  # every variant's file, with its SHA-256
    with pytest.raises(SystemExit):  # a step's one-line error: accuracy_tolerance out of range
        evaluate_step(
            store.uri, NAME, "blobs-data", str(tmp_path / "splits"), str(folder), 0.0,
            str(tmp_path / "report.md"), Sink(), accuracy_tolerance=2.0,
        )  # fmt: skip
