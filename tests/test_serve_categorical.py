"""A real `datawheel serve` of a model with categorical features, trained by the pipeline's own
steps on a table with strings and missing values, through real tritonclient: one named input
per feature (BYTES categories, FP32 numbers; binary and JSON), null as missing, an unseen
category as "other", the metadata's feature schema, and the single tensor refused with a 422
that lists the inputs. The server's string -> code step must equal the training transform's,
served as TorchScript and as ONNX (the categorical encoder and the imputation inside each)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from serving_support import ServerProcess, table_model_store
from tritonclient.utils import InferenceServerException

from datawheel.data.transform import Transform
from datawheel.training.export import load_exported

ISLANDS = ["Biscoe", "Dream", "Torgersen"]


def _table(n: int = 360) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    island = rng.choice(ISLANDS, n)
    bill = rng.normal(44.0, 5.0, n).round(1)
    species = np.where(island == "Biscoe", "Gentoo", np.where(bill > 44, "Chinstrap", "Adelie"))
    bill[rng.random(n) < 0.05] = np.nan  # missing numbers
    sex = rng.choice(np.asarray(["female", "male", ""], dtype=object), n, p=[0.45, 0.45, 0.1])
    sex[sex == ""] = None  # missing categories
    return pd.DataFrame({"bill": bill, "island": island, "sex": sex, "species": species})


def _build(root: Path) -> str:
    return table_model_store(root, _table(), "penguins", "species", epochs=30)


@pytest.fixture(scope="module")
def penguins_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build(tmp_path_factory.mktemp("penguins") / "store")


@pytest.fixture(scope="module", params=["torchscript", "onnx"])  # the encoder in both graphs
def server(
    penguins_store: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    spool = tmp_path_factory.mktemp("spool")
    srv = ServerProcess(penguins_store, spool, model="penguins", variant=request.param)
    yield srv.start()
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def _version_dir(server: ServerProcess) -> Path:
    root = Path(server.store.removeprefix("file://"))
    return root / "models/penguins/versions/v1"


def _expected(server: ServerProcess, frame: pd.DataFrame) -> np.ndarray:
    """What model.ts gives the rows the TRAINING transform encodes (not the server's code)."""
    import torch

    transform = Transform.load(_version_dir(server) / "transform.json")
    encoded = np.asarray(transform.encode_frame(frame[transform.features]), np.float32)
    with torch.inference_mode():
        module = load_exported(_version_dir(server) / "model.ts")
        return np.asarray(torch.softmax(module(torch.from_numpy(encoded)), 1).numpy())


def _named(frame: pd.DataFrame, binary: bool) -> list[triton.InferInput]:
    tensors = []
    for name in frame.columns:
        if name == "bill":
            t = triton.InferInput(name, [len(frame)], "FP32")
            t.set_data_from_numpy(frame[name].to_numpy(np.float32), binary_data=binary)
        else:
            values = np.asarray([v if isinstance(v, str) else "" for v in frame[name]], object)
            t = triton.InferInput(name, [len(frame)], "BYTES")
            t.set_data_from_numpy(values, binary_data=binary)
        tensors.append(t)
    return tensors


def test_the_metadata_carries_the_feature_schema(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("penguins")
    kinds = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert kinds == {"bill": "FP32", "island": "BYTES", "sex": "BYTES"}
    schema = {f["name"]: f for f in meta["parameters"]["features"]}
    assert schema["island"]["type"] == "categorical"
    assert sorted(schema["island"]["categories"]) == ISLANDS
    assert sorted(schema["sex"]["categories"]) == ["female", "male"]
    low, high = schema["bill"]["range"]
    assert schema["bill"]["type"] == "numeric" and 20 < low < 40 < 50 < high < 70
    forms = meta["parameters"]["input_forms"]
    assert "tensor" not in forms and "image" not in forms
    assert sorted(meta["parameters"]["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_named_inputs_predict_as_the_training_transform_encodes(
    client: triton.InferenceServerClient, server: ServerProcess, binary: bool
) -> None:
    frame = pd.DataFrame(
        {
            "island": ["Biscoe", "Dream", "Torgersen", "Atlantis", "Dream"],  # one unseen
            "sex": ["male", "female", "", "male", "female"],  # "" is unseen: other
            "bill": [45.0, 38.5, 50.2, 41.0, 47.0],
        }
    )
    result = client.infer("penguins", _named(frame, binary))
    frame["sex"] = frame["sex"].replace("", None)
    expected = _expected(server, frame)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels[0] == "Gentoo"  # learnt: Biscoe is Gentoo


def test_null_is_missing_for_numbers_and_other_for_categories(server: ServerProcess) -> None:
    def body(bill: Any, island: Any, sex: Any) -> dict[str, Any]:
        cols = {"bill": ("FP32", bill), "island": ("BYTES", island), "sex": ("BYTES", sex)}
        return {
            "inputs": [
                {"name": n, "datatype": t, "shape": [1], "data": [v]} for n, (t, v) in cols.items()
            ]
        }

    status, doc = server.post("/v2/models/penguins/infer", body(None, None, "male"))
    assert status == 200, doc
    probs = np.asarray(doc["outputs"][1]["data"], np.float32)
    frame = pd.DataFrame({"bill": [np.nan], "island": [None], "sex": ["male"]})
    np.testing.assert_allclose(probs, _expected(server, frame)[0], atol=1e-5)
    unseen = server.post("/v2/models/penguins/infer", body(None, "Atlantis", "male"))[1]
    np.testing.assert_allclose(unseen["outputs"][1]["data"], probs, atol=1e-6)  # other == null


def test_the_single_tensor_and_bad_inputs_are_4xx_naming_the_inputs(
    client: triton.InferenceServerClient, server: ServerProcess
) -> None:
    tensor = triton.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("penguins", [tensor])
    assert info.value.status() == "422"
    for needle in ("categorical", "bill (FP32)", "island (BYTES)", "sex (BYTES)"):
        assert needle in str(info.value)
    frame = pd.DataFrame({"island": ["Dream"], "sex": ["male"], "bill": [40.0]})
    named = _named(frame, True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("penguins", named[:2])
    assert info.value.status() == "400" and "missing input(s) 'bill'" in str(info.value)
    status, doc = server.post(
        "/v2/models/penguins/infer",
        {
            "inputs": [
                {"name": "bill", "datatype": "BYTES", "shape": [1], "data": ["40"]},
                {"name": "island", "datatype": "BYTES", "shape": [1], "data": ["Dream"]},
                {"name": "sex", "datatype": "BYTES", "shape": [2], "data": ["male", "female"]},
            ]
        },
    )
    assert status == 400 and "disagree on the number of rows" in doc["error"]
