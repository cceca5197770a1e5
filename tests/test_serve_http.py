"""`datawheel serve` as a real process: tritonclient.http as the client, a real Prometheus.

The protocol tests run once per served variant (``--variant torchscript``, ``onnx``,
``onnx-int8`` and ``student``): each answers what its own file computes, and names itself
and its runtime in the metadata."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import (
    VARIANTS,
    ServerProcess,
    copy_store,
    digits_rows,
    infer_body,
    reference_probabilities,
)
from tritonclient.utils import InferenceServerException

from datawheel.serving.ledger import read_ledger
from datawheel.storage import open_store

PLATFORMS = {"torchscript": "pytorch_torchscript"}  # every other variant: onnxruntime_onnx


@pytest.fixture(scope="module", params=VARIANTS)
def server(
    model_store: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    spool = tmp_path_factory.mktemp("spool")
    srv = ServerProcess(
        copy_store(model_store, tmp_path_factory.mktemp("http") / "store"),
        spool,
        args=["--max-rows", "16", "--max-body-bytes", "65536", "--ledger-flush-seconds", "0.2"],
        variant=request.param,
    )
    yield srv.start()
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infer(
    client: triton.InferenceServerClient, server: ServerProcess, model_store: str, binary: bool
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "v1")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0]["shape"] == [-1, 64] and meta["versions"] == ["v1"]
    variant = server.variant
    assert meta["platform"] == PLATFORMS.get(variant, "onnxruntime_onnx")
    runtime = "torchscript" if variant == "torchscript" else "onnxruntime"
    assert (meta["parameters"]["variant"], meta["parameters"]["runtime"]) == (variant, runtime)
    assert meta["parameters"]["device"] == "cpu"
    rows, _ = digits_rows(5)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")
    ]
    result = client.infer("digits", [tensor], outputs=outputs, request_id="abc")
    probs = result.as_numpy("probabilities")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    expected = reference_probabilities(model_store, rows, "v1", variant)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert labels == [str(i) for i in expected.argmax(1)]
    response = result.get_response()
    assert response["id"] == "abc" and response["model_version"] == "v1"
    assert len(response["parameters"]["prediction_ids"]) == 5
    # the default client call: no outputs named, everything comes back binary
    default = client.infer("digits", [tensor], model_version="v1")
    np.testing.assert_allclose(default.as_numpy("probabilities"), expected, atol=1e-5)


def test_tritonclient_sees_4xx(client: triton.InferenceServerClient) -> None:
    rows = np.zeros((2, 10), np.float32)
    tensor = triton.InferInput("input", [2, 10], "FP32")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException, match="64 features"):
        client.infer("digits", [tensor])
    with pytest.raises(InferenceServerException, match="not served"):
        client.infer("nope", [tensor])
    with pytest.raises(InferenceServerException, match="version 'v9'"):
        client.infer("digits", [tensor], model_version="v9")


def test_feedback(server: ServerProcess) -> None:
    rows, _ = digits_rows(3, offset=100)
    status, doc = server.post("/v2/models/digits/infer", infer_body(rows))
    assert status == 200
    ids = doc["parameters"]["prediction_ids"]
    labels = doc["outputs"][0]["data"]
    status, fb = server.post("/v2/models/digits/feedback", {"id": ids[0], "label": "7"})
    assert status == 200 and fb["predicted"] == labels[0] and fb["duplicate"] is False
    assert fb["correct"] == (labels[0] == "7")
    again = server.post("/v2/models/digits/feedback", {"id": ids[0], "label": "7"})
    assert again == (200, {**fb, "duplicate": True})
    assert server.post("/v2/models/digits/feedback", {"id": ids[1], "label": 3})[0] == 200
    assert server.post("/v2/models/digits/feedback", {"id": "nope", "label": "1"})[0] == 404
    status, err = server.post("/v2/models/digits/feedback", {"id": ids[2], "label": "cat"})
    assert status == 422 and "not one of the model's classes" in err["error"]
    assert server.post("/v2/models/digits/feedback", {"label": "1"})[0] == 400
    assert server.post("/v2/models/digits/feedback", b"{")[0] == 400
    text = server.metrics()
    assert 'datawheel_feedback_total{model="digits",outcome=' in text
    assert 'datawheel_live_accuracy_ratio{model="digits",version="v1"}' in text
    assert f'variant="{server.variant}",version="v1"}} 1.0' in text  # datawheel_model_info


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/models/digits/infer", infer_body(np.zeros((17, 64), np.float32)), 413),
        ("/v2/models/digits/infer", b"x" * 70_000, 413),
        ("/v2/models/digits/infer", b"[1,2", 400),
        (
            "/v2/models/digits/infer",
            {"inputs": [{"name": "i", "shape": [1, 64], "datatype": "STRING", "data": [1] * 64}]},
            422,
        ),
        ("/v2/models/digits/nope", {}, 404),
        ("/v3/anything", {}, 404),
    ],
)
def test_limits_and_errors_are_json_4xx(
    server: ServerProcess, path: str, body: Any, status: int
) -> None:
    got, doc = server.post(path, body)
    assert got == status
    assert isinstance(doc.get("error"), str) and doc["error"]


@pytest.mark.parametrize("server", ["onnx"], indirect=True)  # one Prometheus is enough
def test_metrics_names_and_a_real_prometheus(
    server: ServerProcess, prometheus: Callable[[list[str]], Any]
) -> None:
    text = server.metrics()
    for name in (
        "datawheel_requests_total",
        "datawheel_request_duration_seconds_bucket",
        "datawheel_requests_in_flight",
        "datawheel_inference_batch_rows_bucket",
        "datawheel_predictions_total",
        "datawheel_model_load_seconds",
        "datawheel_model_info",
        "datawheel_model_load_failures_total",
        "datawheel_ledger_backlog_records",
        'datawheel_input_drift_score{model="digits",version="v1"}',
    ):
        assert name in text, name
    prom = prometheus([f"127.0.0.1:{server.port}"])
    rows, _ = digits_rows(1)
    before = _infer_count(server.metrics())
    for _ in range(25):
        assert server.post("/v2/models/digits/infer", infer_body(rows))[0] == 200
    expected = before + 25
    query = 'sum(datawheel_requests_total{endpoint="infer",code="200"})'
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline:
        result = prom.query(query)
        value = float(result[0]["value"][1]) if result else None
        if value == expected:
            break
        time.sleep(0.5)
    assert value == expected
    up = prom.query('up{job="datawheel"}')
    assert up and up[0]["value"][1] == "1"


def _infer_count(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("datawheel_requests_total{")
            and 'endpoint="infer"' in line
            and 'code="200"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_bearer_token_guards_infer_and_feedback_only(model_store: str, tmp_path: Path) -> None:
    # a store of its own (the models, no ledger yet): its ledger holds what this test wrote
    shutil.copytree(
        model_store.removeprefix("file://"),
        tmp_path / "store",
        ignore=shutil.ignore_patterns("ledger"),
    )
    store = f"file://{tmp_path / 'store'}"
    srv = ServerProcess(store, tmp_path / "spool", env={"DATAWHEEL_SERVE_TOKEN": "s3cret"})
    srv.start()
    try:
        rows, _ = digits_rows(1)
        status, doc = srv.post("/v2/models/digits/infer", infer_body(rows))
        assert status == 401 and "bearer token" in doc["error"]
        assert (
            srv.post(
                "/v2/models/digits/infer", infer_body(rows), {"Authorization": "Bearer wrong"}
            )[0]
            == 401
        )
        assert srv.post("/v2/models/digits/feedback", {"id": "x", "label": "1"})[0] == 401
        status, doc = srv.post(
            "/v2/models/digits/infer", infer_body(rows), {"Authorization": "Bearer s3cret"}
        )
        assert status == 200
        answered = doc["parameters"]["prediction_ids"]
        assert srv.get_json("/v2/health/ready")["ready"] is True
        assert "datawheel_requests_total" in srv.metrics()
    finally:
        # uvicorn finishes in-flight requests, then re-raises SIGTERM: exit by signal 15
        assert srv.stop() == -15
    # the graceful shutdown flushed the ledger: nothing left spooled, and the store holds the
    # one authorized prediction and nothing of the refused requests
    assert not list((tmp_path / "spool").glob("*.wal*"))
    stored = read_ledger(open_store(store), model="digits")
    assert len(answered) == 1 and list(stored["id"]) == answered
    assert read_ledger(open_store(store), model="digits", kind="feedback").empty


def test_error_bodies_never_echo_a_long_value(server: ServerProcess) -> None:
    rows, _ = digits_rows(1)
    status, doc = server.post("/v2/models/digits/infer", infer_body(rows))
    assert status == 200
    pid = doc["parameters"]["prediction_ids"][0]
    long = "x" * 60_000  # under the 64 kB body limit of this server
    for path, body, want in (
        ("/v2/models/digits/feedback", {"id": pid, "label": long}, 422),
        ("/v2/models/digits/feedback", {"id": long, "label": "1"}, 404),
        (f"/v2/models/{'m' * 6000}/infer", infer_body(rows), 404),
        (f"/v2/models/digits/versions/{'v' * 6000}/infer", infer_body(rows), 404),
        (f"/v2/{'r' * 6000}", {}, 404),
    ):
        got, err = server.post(path, body)
        assert got == want and len(json.dumps(err)) < 400, (path[:40], got, len(str(err)))
        assert "chars)" in err["error"]  # says how long the value it cut was
