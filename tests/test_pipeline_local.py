"""The training pipeline end to end through `datawheel run --local` (kfp.local)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import datawheel, run_json

from datawheel import registry
from datawheel.storage import open_store

FAST = ("--param", "epochs=6")


def _tasks(result: dict[str, Any]) -> list[str]:
    return [s["task"] for s in result["timings"]["steps"]]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three runs on one store, shared by the tests below (in this order): a first run, the
    same run again (which must reuse v1), and a transfer from the champion (v2: the
    backbone of v1 frozen, the head trained anew; scored against v1)."""
    cwd = tmp_path_factory.mktemp("history")
    store = f"file://{cwd / 'store'}"
    first = run_json("--store", store, *FAST, cwd=cwd)
    again = run_json("--store", store, *FAST, cwd=cwd)
    second = run_json("--store", store, *FAST, "--param", "transfer_from=digits@champion", cwd=cwd)
    return {"cwd": cwd, "store": store, "first": first, "again": again, "second": second}


def test_the_first_run_promotes(history: dict[str, Any]) -> None:
    first = history["first"]
    s1 = first["summary"]
    assert first["status"] == "SUCCEEDED" and first["error"] is None
    assert (s1["decision"], s1["alias"], s1["model_version"]) == ("promote", "champion", "v1")
    assert s1["champion_version"] is None and s1["reused"] is False
    assert s1["metrics"]["test_accuracy"] > 0.85
    assert 0 <= s1["metrics"]["test_int8_accuracy"] <= 1
    report = Path(s1["report"])
    assert report.is_file() and report.read_text().count("data:image/png;base64,") == 2
    assert "promote" in report.read_text()
    assert "epoch 1/6" in first["progress"] and "registered digits:v1" in first["progress"]
    tasks = _tasks(first)
    for step in ("ingest", "validate", "prep", "train", "compress", "evaluate", "register"):
        assert step in tasks
    # compress=auto: the digits MLP is under the size threshold, so no student is trained
    assert "compress: no student (model.onnx is" in first["progress"]
    timings = first["timings"]
    assert timings["wall_seconds"] >= timings["body_seconds"] > 0
    bodies = {s["task"]: s["body_seconds"] for s in timings["steps"]}
    assert bodies["train"] is not None and bodies["train"] > 0


def test_rerunning_the_pipeline_reuses_the_model(history: dict[str, Any]) -> None:
    # (was tests/test_hostile_rerun.py's, with two runs of its own; that another store never
    # resumes this checkpoint is test_the_checkpoint_is_keyed_by_store_data_and_config)
    s = history["again"]["summary"]
    assert (s["model_version"], s["alias"], s["reused"]) == ("v1", "champion", True), s
    assert s["metrics"]["resumed_from_epoch"] == 6 and s["metrics"]["epochs_trained"] == 0
    assert "samples_per_second" not in s["metrics"]
    assert "reused it, registered nothing new" in history["again"]["progress"]
    # the second run (a transfer) is the store's only other version
    st = open_store(history["store"])
    assert [m.version for m in registry.list_versions(st, "digits")] == ["v1", "v2"]


def test_a_second_run_is_compared_with_the_champion(history: dict[str, Any]) -> None:
    s1, s2 = history["first"]["summary"], history["second"]["summary"]
    assert s2["champion_version"] == "v1"
    assert s2["model_version"] == "v2" and s2["reused"] is False
    assert s2["dataset_version"] == s1["dataset_version"]  # same content, same version
    # v1 was scored on the same test rows: the decision is the bootstrap's, lower bound vs margin 0
    assert "one-sided 97.5% test" in s2["reason"] and "no champion" not in s2["reason"]
    low = float(s2["reason"].split("95% CI [", 1)[1].split(",", 1)[0])
    assert s2["decision"] == ("promote" if low > 0.0 else "reject") or abs(low) < 1e-4, s2
    assert s2["alias"] == ("champion" if s2["decision"] == "promote" else "challenger")
    st = open_store(history["store"])
    champion = registry.get_alias(st, "digits", "champion")
    assert champion is not None
    assert champion["version"] == ("v2" if s2["decision"] == "promote" else "v1")
    card = registry.resolve(st, "digits", "v2").card
    assert card["transfer_from"] == "digits@champion"  # started from v1, froze its backbone
    assert card["dataset_version"] == s1["dataset_version"]
    assert card["checksum"] == card["files"]["model.ts"]
    assert {
        "model.ts",
        "model.onnx",
        "model_int8.onnx",
        "model.pt",
        "transform.json",
        "report.html",
    } <= set(card["files"])
    assert not any(name.startswith("student") for name in card["files"])


def test_models_list_promote_and_rollback(history: dict[str, Any]) -> None:
    """Last of the history's tests: it moves the alias (and leaves it on v1)."""
    store, cwd = history["store"], history["cwd"]
    listed = datawheel("models", "list", "--store", store, cwd=cwd)
    assert listed.returncode == 0 and "v1" in listed.stdout and "v2" in listed.stdout

    promoted = datawheel("models", "promote", "digits", "v2", "--store", store, cwd=cwd)
    assert promoted.returncode == 0 and "champion -> v2" in promoted.stdout
    rolled = datawheel("models", "rollback", "digits", "--store", store, cwd=cwd)
    assert rolled.returncode == 0 and "champion -> v1" in rolled.stdout
    assert registry.resolve(open_store(store), "digits", "champion").version == "v1"


def test_a_sweep_on_an_s3_store_registers_the_best_with_its_student(
    tmp_path: Path, s3_env: Any
) -> None:
    """A sweep's best trial goes on; compress=on distils it between pick-best and evaluate,
    and register uploads the student's files with the teacher's, each in the card. The run
    is on an S3 store (a real SeaweedFS; s3_env set the environment): every step reads and
    writes it there, as on a cluster."""
    store = f"s3://{s3_env.bucket}/e2e-{tmp_path.name}"
    result = run_json(
        "--store",
        store,
        "--param",
        "epochs=3",
        "--param",
        "sweep_learning_rates=0.0003,0.003",
        "--param",
        "compress=on",
        "--param",
        "distill_temperature=3",
        cwd=tmp_path,
    )
    # the run on S3 (was test_run_on_s3_store, a run of its own): promoted, fetchable, and
    # the dataset it ingested is in the bucket
    assert result["summary"]["decision"] == "promote"
    from datawheel.storage.s3 import S3Store

    st3 = S3Store.from_uri(store)
    assert registry.resolve(st3, "digits", "champion").version == "v1"
    manifest = json.loads(
        st3.get_bytes(
            f"datasets/digits/versions/{result['summary']['dataset_version']}/manifest.json"
        )
    )
    assert manifest["rows"] == 1797
    trains = [s for s in result["timings"]["steps"] if s["task"] == "train"]
    assert len(trains) == 2  # one per rate; they run concurrently on kfp.local's threads
    assert all(s["body_seconds"] and s["body_seconds"] > 0 for s in trains)
    assert result["summary"]["model_version"] == "v1"
    card = registry.resolve(open_store(store), "digits", "v1").card
    assert card["config"]["lr"] in (0.0003, 0.003)
    # the registered model is the trial with the best validation accuracy
    found = re.search(r"sweep: val_accuracy per trial \[([^\]]+)\]", result["progress"])
    assert found, result["progress"][-2000:]
    trials = [float(a) for a in found[1].split(", ")]
    assert len(trials) == 2
    assert card["metrics"]["val_accuracy"] == pytest.approx(max(trials), abs=5e-5)
    found = re.search(
        r"compress: student test_accuracy=([0-9.]+) \((\d+) bytes student.onnx\) vs teacher "
        r"([0-9.]+) \((\d+) bytes model.onnx\)",
        result["progress"],
    )
    assert found, result["progress"][-2000:]
    student_acc, student_bytes, teacher_acc, teacher_bytes = (float(g) for g in found.groups())
    assert student_bytes < teacher_bytes and 0 < student_acc <= 1 and 0 < teacher_acc <= 1
    st = open_store(store)
    mv = registry.resolve(st, "digits", "v1")
    assert {"student.pt", "student.ts", "student.onnx", "student.json"} <= set(mv.card["files"])
    fetched = tmp_path / "fetched"
    registry.fetch(st, mv, fetched)
    assert (fetched / "model.ts").stat().st_size > 0
    info = json.loads((fetched / "student.json").read_text())
    assert (info["hidden"], info["temperature"], info["alpha"]) == (32, 3.0, 0.7)
    assert info["test_accuracy"] == pytest.approx(student_acc, abs=1e-4)
    # the teacher's accuracy in student.json is the one the evaluate step reports for it
    assert info["teacher_test_accuracy"] == pytest.approx(
        result["summary"]["metrics"]["test_accuracy"], abs=1e-9
    )
