"""The checked-in compiled pipeline is current, loads, and has the expected shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from datawheel.compile import COMPILED_DIR, compile_pipeline, stale

TRAINING = COMPILED_DIR / "training.yaml"


def test_checked_in_yaml_is_not_stale() -> None:
    assert TRAINING.exists(), "run `make compile` and commit pipelines/compiled/"
    assert stale() == [], "pipelines/compiled/ is stale: run `make compile` and commit it"


def test_stale_detects_a_changed_file(tmp_path: Path) -> None:
    compile_pipeline("training", tmp_path)
    assert stale(tmp_path) == []
    path = tmp_path / "training.yaml"
    path.write_text(path.read_text().replace("datawheel-training", "edited"))
    assert stale(tmp_path) == ["training"]


def test_compiled_yaml_loads_as_a_component() -> None:
    from kfp.components import load_component_from_file

    component = load_component_from_file(str(TRAINING))
    assert component.name == "datawheel-training"
    inputs = component.component_spec.inputs
    for name in (
        "source",
        "store",
        "epochs",
        "batch_size",
        "learning_rate",
        "model_kind",
        "seed",
        "sweep_learning_rates",
    ):
        assert name in inputs, name


def _all_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_compiled_dag_branches_on_the_decision() -> None:
    spec = yaml.safe_load(TRAINING.read_text())
    root = spec["root"]["dag"]["tasks"]
    assert {
        "ingest",
        "validate",
        "prep",
        "lr-grid",
        "for-loop-1",
        "pick-best",
        "importer",
        "evaluate",
    } <= set(root)
    assert "validate" in root["prep"]["dependentTasks"]  # no prep on unvalidated data
    tasks = _all_tasks(spec)
    conditions = {
        name: t["triggerPolicy"]["condition"] for name, t in tasks.items() if "triggerPolicy" in t
    }
    promote = [c for c in conditions.values() if "'promote'" in c and not c.startswith("!")]
    reject = [c for c in conditions.values() if c.startswith("!") and "'promote'" in c]
    assert len(promote) == 1 and len(reject) == 1
    aliases = sorted(
        t["inputs"]["parameters"]["alias"]["runtimeValue"]["constant"]
        for t in tasks.values()
        if t.get("componentRef", {}).get("name", "").startswith("comp-register")
    )
    assert aliases == ["challenger", "champion"]
    # every executor runs a datawheel image, never the python:3.x default
    images = {
        e["container"]["image"]
        for e in spec["deploymentSpec"]["executors"].values()
        if "container" in e
    }
    assert images and all("datawheel" in image for image in images)
