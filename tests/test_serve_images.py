"""A real `datawheel serve` of the digits image model through real tritonclient: its
self-describing metadata, PNG and JPEG files as the `image` input (binary and base64 JSON)
predicting exactly as their pre-flattened FP32 rows, the 20000 x 20000 PNG bomb, null as a
missing value, named per-feature inputs."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from image_support import digit_image, encoded, png_bomb
from PIL import Image
from serving_support import ServerProcess, copy_store, digits_rows, infer_body
from tritonclient.utils import InferenceServerException

from datawheel import registry
from datawheel.data.image_decode import Preprocessing
from datawheel.data.transform import Transform
from datawheel.serving.inputs import image_rows
from datawheel.serving.ledger import read_ledger
from datawheel.storage import open_store

PREP = Preprocessing("L", 8, 8)


@pytest.fixture(scope="module")
def server(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        copy_store(model_store, tmp_path_factory.mktemp("images") / "store"),
        tmp_path_factory.mktemp("spool"),
        args=["--max-rows", "64", "--max-body-bytes", "2097152", "--ledger-flush-seconds", "0.2"],
    )
    yield srv.start()
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def _probabilities(client: triton.InferenceServerClient, tensor: triton.InferInput) -> np.ndarray:
    result = client.infer("digits", [tensor])
    return np.asarray(result.as_numpy("probabilities"))


def _fp32(client: triton.InferenceServerClient, rows: np.ndarray) -> np.ndarray:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows.astype(np.float32))
    return _probabilities(client, tensor)


def _images(
    client: triton.InferenceServerClient, files: list[bytes], *, binary: bool = True
) -> np.ndarray:
    tensor = triton.InferInput("image", [len(files)], "BYTES")
    values = files if binary else [base64.b64encode(f) for f in files]
    tensor.set_data_from_numpy(np.asarray(values, dtype=object), binary_data=binary)
    return _probabilities(client, tensor)


def test_the_metadata_describes_the_image_model(
    client: triton.InferenceServerClient, server: ServerProcess
) -> None:
    meta = client.get_model_metadata("digits")
    assert meta == server.get_json("/v2/models/digits/versions/v1")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    params = meta["parameters"]
    image = params["image"]
    assert (image["channels"], image["height"], image["width"]) == (1, 8, 8)
    assert (image["mode"], image["resize"], image["scale"]) == ("L", "bilinear", "1/255")
    assert image["formats"] == ["PNG", "JPEG"] and image["max_pixels"] > 8000 * 4000
    assert "0..16" in image["training_data"] and "/16" in image["training_data"]
    assert image["features"]["count"] == 64 and image["features"]["names"] == "px_0..px_63"
    assert "features" not in params  # pixels are described by the image, not one by one
    forms = params["input_forms"]
    assert forms["image"]["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert "base64" in forms["image"]["note"]
    assert forms["tensor"]["inputs"] == meta["inputs"]
    assert [i["name"] for i in forms["named"]["inputs"]] == [f"px_{i}" for i in range(64)]
    assert "null" in params["missing_values"] and params["classes"] == [str(d) for d in range(10)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64-json"])
def test_pngs_predict_exactly_as_their_fp32_rows(
    client: triton.InferenceServerClient, binary: bool
) -> None:
    rows, _ = digits_rows(12)
    files = [encoded(digit_image(r)) for r in rows]  # 8x8 PNGs of the digits rows
    by_image = _images(client, files, binary=binary)
    decoded = image_rows(files, PREP)
    np.testing.assert_allclose(by_image, _fp32(client, decoded), atol=1e-6)
    # the PNG holds the row to 1/510 per pixel: the same predictions as the digits rows
    np.testing.assert_allclose(by_image, _fp32(client, rows), atol=0.02)
    assert (by_image.argmax(1) == _fp32(client, rows).argmax(1)).all()


def test_a_photo_sized_rgb_jpeg_and_png_are_decoded_as_training_would(
    client: triton.InferenceServerClient,
) -> None:
    rows, _ = digits_rows(4, offset=100)
    files = [encoded(digit_image(r, scale=60, mode="RGB"), "JPEG") for r in rows[:2]]
    files += [encoded(digit_image(r, scale=40, mode="RGB")) for r in rows[2:]]
    assert Image.open(io.BytesIO(files[0])).size == (480, 480)
    by_image = _images(client, files)
    np.testing.assert_allclose(by_image, _fp32(client, image_rows(files, PREP)), atol=1e-6)


def test_a_decompression_bomb_is_a_413_with_a_message(
    client: triton.InferenceServerClient, server: ServerProcess
) -> None:
    with pytest.raises(InferenceServerException) as info:
        _images(client, [png_bomb()])
    assert info.value.status() == "413"
    assert "400000000 pixels" in str(info.value) and "decompression bomb" in str(info.value)
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png_bomb()).decode()],
            }
        ]
    }
    status, doc = server.post("/v2/models/digits/infer", body)
    assert status == 413 and "more than the limit" in doc["error"]
    assert server.get_json("/v2/health/ready")["ready"] is True  # and it still serves


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        ([base64.b64encode(b"GIF89a not really").decode()], 422, "is not PNG or JPEG"),
        (["%%% not base64"], 400, "not base64"),
        ([base64.b64encode(encoded(Image.new("L", (40, 40)))[:50]).decode()], 422, "corrupt"),
    ],
    ids=["not-an-image", "not-base64", "truncated"],
)
def test_bad_images_are_4xx_json(
    server: ServerProcess, data: list[str], status: int, needle: str
) -> None:
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": data}]}
    got, doc = server.post("/v2/models/digits/infer", body)
    assert got == status and needle in doc["error"]


def test_null_is_a_missing_value_imputed_as_in_training(
    client: triton.InferenceServerClient, server: ServerProcess, model_store: str
) -> None:
    rows, _ = digits_rows(2)
    body = infer_body(rows)
    data = body["inputs"][0]["data"]
    data[20] = None  # row 0, pixel 20 is missing
    status, doc = server.post("/v2/models/digits/infer", body)
    assert status == 200, doc
    probs = np.asarray(doc["outputs"][1]["data"], np.float32).reshape(2, 10)
    with_nan = rows.copy()
    with_nan[0, 20] = np.nan  # the binary extension's NaN: the same missing value
    np.testing.assert_allclose(probs, _fp32(client, with_nan), atol=1e-6)
    st = open_store(server.store)
    mv = registry.resolve(st, "digits", "v1")
    root = Path(server.store.removeprefix("file://"))
    transform = Transform.load(root / f"models/digits/versions/{mv.version}/transform.json")
    imputed = rows.copy()
    imputed[0, 20] = transform.mean[20]  # what training imputes
    np.testing.assert_allclose(probs, _fp32(client, imputed), atol=1e-5)


def test_a_numeric_model_takes_named_per_feature_inputs(
    client: triton.InferenceServerClient,
) -> None:
    rows, _ = digits_rows(3)
    tensors = []
    for i in reversed(range(64)):  # any order
        column = triton.InferInput(f"px_{i}", [3], "FP32")
        column.set_data_from_numpy(np.ascontiguousarray(rows[:, i]), binary_data=i % 2 == 0)
        tensors.append(column)
    result = client.infer("digits", tensors)
    np.testing.assert_allclose(result.as_numpy("probabilities"), _fp32(client, rows), atol=1e-6)
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", tensors[:-1])
    assert info.value.status() == "400" and "missing input(s) 'px_0'" in str(info.value)


def test_the_ledger_records_the_decoded_rows(server: ServerProcess) -> None:
    rows, _ = digits_rows(1, offset=7)
    png = encoded(digit_image(rows[0], scale=5))
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png).decode()],
            }
        ]
    }
    status, doc = server.post("/v2/models/digits/infer", body)
    assert status == 200
    pid = doc["parameters"]["prediction_ids"][0]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stored = read_ledger(open_store(server.store), model="digits", columns=("id", "inputs"))
        found = stored[stored["id"] == pid]
        if len(found):
            break
        time.sleep(0.2)
    assert len(found) == 1, "the prediction never reached the ledger"
    np.testing.assert_allclose(found["inputs"].iloc[0], image_rows([png], PREP)[0], atol=1e-7)
