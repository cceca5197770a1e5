"""The categorical wire through real tritonclient and a real uvicorn, independent of how a
categorical model is trained: build_app's app serving the digits model, swapped (as a hot
swap does) to a signature that declares px_0 and px_1 categorical. BYTES values become their
codes in the model's rows (binary and JSON), null and unseen values the "other" code 0, and
a single tensor is refused with a 422 that lists the inputs. Once per variant the server
runs (TorchScript, ONNX, ONNX int8): the rows reach each runtime alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from serving_support import ServerProcess, copy_store, digits_rows, free_port
from tritonclient.utils import InferenceServerException

from datawheel.serving.server import ServeConfig, build_app
from datawheel.serving.signature import Signature
from datawheel.serving.state import Serving

CODES = {"px_0": {"zero": 1.0, "one": 2.0}, "px_1": {"False": 1.0, "True": 2.0}}


@pytest.fixture(scope="module", params=["torchscript", "onnx", "onnx-int8"])
def served(
    model_store: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, Serving]]:
    tmp = tmp_path_factory.mktemp("wire")
    store = copy_store(model_store, tmp / "store")
    port = free_port()
    config = ServeConfig(
        "digits:v1", store, port=port, spool_dir=str(tmp / "sp"), variant=request.param
    )
    app, serving = build_app(config)
    assert serving.model.variant == request.param
    numeric = serving.model.signature
    signature = Signature(numeric.features, CODES, numeric.schema, column=numeric.column)
    serving.swap(replace(serving.model, signature=signature))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield ServerProcess(store, Path(tmp / "sp"), port=port), serving
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def client(served: tuple[ServerProcess, Serving]) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{served[0].port}")
    yield c
    c.close()


def _inputs(
    rows: np.ndarray, px0: list[str], px1: list[str], binary: bool
) -> list[triton.InferInput]:
    tensors = []
    for name, values in (("px_0", px0), ("px_1", px1)):
        t = triton.InferInput(name, [len(values)], "BYTES")
        t.set_data_from_numpy(np.asarray(values, dtype=object), binary_data=binary)
        tensors.append(t)
    for i in range(2, 64):
        t = triton.InferInput(f"px_{i}", [len(rows), 1], "FP32")
        t.set_data_from_numpy(np.ascontiguousarray(rows[:, i : i + 1]), binary_data=binary)
        tensors.append(t)
    return tensors


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_categories_become_their_codes(
    client: triton.InferenceServerClient, served: tuple[ServerProcess, Serving], binary: bool
) -> None:
    rows, _ = digits_rows(4)
    result = client.infer(
        "digits", _inputs(rows, ["zero", "one", "two", ""], ["True", "False", "True", "x"], binary)
    )
    encoded = rows.copy()
    encoded[:, 0] = [1.0, 2.0, 0.0, 0.0]  # "two" and "" were never seen: other
    encoded[:, 1] = [2.0, 1.0, 2.0, 0.0]
    expected = served[1].model.predict(encoded)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_null_bool_and_ints_in_json(served: tuple[ServerProcess, Serving]) -> None:
    srv, serving = served
    rows, _ = digits_rows(3)
    inputs = [
        {"name": "px_0", "datatype": "BYTES", "shape": [3], "data": [None, "one", "zero"]},
        {"name": "px_1", "datatype": "BOOL", "shape": [3], "data": [True, False, None]},
    ] + [
        {"name": f"px_{i}", "datatype": "FP32", "shape": [3], "data": rows[:, i].tolist()}
        for i in range(2, 64)
    ]
    inputs[5]["data"][1] = None  # a missing number: NaN, imputed
    status, doc = srv.post("/v2/models/digits/infer", {"inputs": inputs})
    assert status == 200, doc
    encoded = rows.copy()
    encoded[:, 0] = [0.0, 2.0, 1.0]
    encoded[:, 1] = [2.0, 1.0, 0.0]
    encoded[1, 5] = np.nan
    probs = np.asarray(doc["outputs"][1]["data"], np.float32).reshape(3, 10)
    np.testing.assert_allclose(probs, serving.model.predict(encoded), atol=1e-6)


def test_metadata_and_the_single_tensor_of_a_categorical_model(
    client: triton.InferenceServerClient,
) -> None:
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][:2] == [
        {"name": "px_0", "datatype": "BYTES", "shape": [-1]},
        {"name": "px_1", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["inputs"][2] == {"name": "px_2", "datatype": "FP32", "shape": [-1]}
    assert "tensor" not in meta["parameters"]["input_forms"]
    rows, _ = digits_rows(2)
    tensor = triton.InferInput("input", [2, 64], "FP32")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", [tensor])
    assert info.value.status() == "422"
    assert "px_0 (BYTES), px_1 (BYTES), px_2 (FP32)" in str(info.value)
    bad = _inputs(rows, ["zero", "one"], ["True"], True)  # px_1 has one row, the rest two
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", bad)
    assert info.value.status() == "400" and "'px_1' 1" in str(info.value)
