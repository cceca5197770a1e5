"""Serving a variant: ``--variant auto`` follows each version's card, a variant a version
lacks is a one-line error at startup and a refused hot swap, and the metadata, the
``datawheel_model_info`` gauge and the ledger say which variant answered."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_support import (
    DATAWHEEL,
    ServerProcess,
    copy_store,
    digits_rows,
    infer_body,
    reference_probabilities,
    rewrite_card,
)

from datawheel import registry
from datawheel.errors import DatawheelError
from datawheel.serving.ledger import read_ledger
from datawheel.serving.variants import VARIANTS, pick_variant
from datawheel.storage import LocalStore, open_store


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _info(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("datawheel_model_info{")]


def _choose(name: str) -> Callable[[dict[str, Any]], None]:
    def change(card: dict[str, Any]) -> None:
        card["serving_variant"] = {"name": name, "reason": "the fastest within tolerance"}

    return change


def _without_student(card: dict[str, Any]) -> None:
    del card["files"]["student.onnx"]


def test_the_server_knows_every_variant_the_evaluate_step_measures() -> None:
    from datawheel.evaluation import variant_choice as measured

    assert VARIANTS is measured.VARIANTS  # one table for the server and the evaluate step


def test_pick_variant_follows_the_card_and_refuses_what_it_lacks() -> None:
    files = {"model.ts": "a", "model.onnx": "b", "model_int8.onnx": "c"}
    card: dict[str, Any] = {"name": "digits", "version": "v3", "files": files}
    assert pick_variant(card).name == "torchscript"  # a card from before variants
    assert pick_variant({**card, "serving_variant": {"name": "onnx-int8"}}).name == "onnx-int8"
    assert pick_variant(card, "onnx") == VARIANTS["onnx"]
    with pytest.raises(DatawheelError, match="digits:v3 has no student variant") as info:
        pick_variant(card, "student")
    assert "it has torchscript, onnx, onnx-int8" in str(info.value)
    with pytest.raises(DatawheelError, match="has no student variant"):
        pick_variant({**card, "serving_variant": {"name": "student"}})  # auto, file missing
    with pytest.raises(DatawheelError, match=r"'tensorrt'.* not a variant this server knows"):
        pick_variant({**card, "serving_variant": {"name": "tensorrt"}})


def test_a_variant_the_version_lacks_is_a_one_line_error_at_startup(
    model_store: str, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path / "store")
    rewrite_card(store, "v1", _without_student)
    spool = str(tmp_path / "spool")
    cmd = [DATAWHEEL, "serve", "--model", "digits", "--store", store, "--port", "0"]
    done = subprocess.run(
        [*cmd, "--spool-dir", spool, "--variant", "student"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: digits:v1 has no student variant (student.onnx is not")
    assert "Fix: serve one it has" in line
    bad = subprocess.run(
        [DATAWHEEL, "serve", "--model", "digits", "--store", store, "--variant", "fp16"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "auto" in bad.stderr and "onnx-int8" in bad.stderr


def test_auto_serves_each_versions_choice_across_a_hot_swap(
    model_store: str, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path / "store")
    rewrite_card(store, "v2", _choose("onnx-int8"))  # v1's card chose nothing: TorchScript
    srv = ServerProcess(store, tmp_path / "spool", args=["--poll-seconds", "0.2"]).start()
    rows, _ = digits_rows(8)
    try:
        meta = srv.get_json("/v2/models/digits")
        assert (meta["platform"], meta["parameters"]["variant"]) == (
            "pytorch_torchscript",
            "torchscript",
        )
        status, before = srv.post("/v2/models/digits/infer", infer_body(rows))
        assert status == 200 and before["model_version"] == "v1"
        (info,) = _info(srv.metrics())
        assert 'variant="torchscript",version="v1"' in info

        registry.promote(LocalStore(tmp_path / "store"), "digits", "v2", alias="champion")
        _wait_for(lambda: srv.get_json("/v2/models/digits")["versions"] == ["v2"])
        meta = srv.get_json("/v2/models/digits")
        assert meta["platform"] == "onnxruntime_onnx"
        assert (meta["parameters"]["variant"], meta["parameters"]["runtime"]) == (
            "onnx-int8",
            "onnxruntime",
        )
        card = registry.resolve(open_store(store), "digits", "v2").card
        assert meta["parameters"]["variant_checksum"] == card["files"]["model_int8.onnx"]
        assert meta["parameters"]["checksum"] == card["checksum"]
        status, after = srv.post("/v2/models/digits/infer", infer_body(rows))
        assert status == 200 and after["model_version"] == "v2"
        probs = np.asarray(after["outputs"][1]["data"], np.float32).reshape(8, 10)
        expected = reference_probabilities(store, rows, "v2", "onnx-int8")
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        (info,) = _info(srv.metrics())  # the old series is gone, the new one names its variant
        assert 'variant="onnx-int8",version="v2"' in info
    finally:
        srv.stop()
    assert "now serving digits:v2 as onnx-int8 on cpu (onnxruntime" in srv.log()
    ledger = read_ledger(open_store(store), model="digits", columns=["id", "version", "variant"])
    by_id = {row.id: (row.version, row.variant) for row in ledger.itertuples(index=False)}
    ids = before["parameters"]["prediction_ids"], after["parameters"]["prediction_ids"]
    assert {by_id[pid] for pid in ids[0]} == {("v1", "torchscript")}
    assert {by_id[pid] for pid in ids[1]} == {("v2", "onnx-int8")}


def test_a_hot_swap_to_a_version_without_the_variant_keeps_the_old_one(
    model_store: str, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path / "store")
    rewrite_card(store, "v2", _without_student)
    srv = ServerProcess(
        store, tmp_path / "spool", args=["--poll-seconds", "0.2"], variant="student"
    ).start()
    try:
        registry.promote(LocalStore(tmp_path / "store"), "digits", "v2", alias="champion")
        _wait_for(
            lambda: 'datawheel_model_load_failures_total{model="digits"} 1.0' in srv.metrics()
        )
        assert srv.get_json("/v2/models/digits")["versions"] == ["v1"]
        rows, _ = digits_rows(2)
        status, doc = srv.post("/v2/models/digits/infer", infer_body(rows))
        assert status == 200 and doc["model_version"] == "v1"
        (info,) = _info(srv.metrics())
        assert 'variant="student",version="v1"' in info
    finally:
        srv.stop()
    log = srv.log()
    assert "refused digits:v2, still serving v1: digits:v2 has no student variant" in log
