"""Open Inference Protocol v2 parsing and encoding: JSON and binary tensors, every 4xx."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from datawheel.serving.protocol import (
    InferRequest,
    ProtocolError,
    brief,
    encode_infer_response,
    parse_infer_request,
)


def _parse(
    doc: Any,
    headers: dict[str, str] | None = None,
    binary: bytes = b"",
    n_features: int = 3,
    max_rows: int = 8,
) -> InferRequest:
    head = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    if binary:
        headers = {**(headers or {}), "inference-header-content-length": str(len(head))}
    return parse_infer_request(
        head + binary, headers or {}, n_features=n_features, max_rows=max_rows
    )


def _tensor(data: Any, shape: Any, datatype: str | None = "FP32", **kw: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}], **kw}


def test_flat_and_nested_json_rows() -> None:
    flat = _parse(_tensor([1, 2, 3, 4, 5, 6], [2, 3]))
    nested = _parse(_tensor([[1, 2, 3], [4, 5, 6]], [2, 3]))
    assert flat.rows.dtype == np.float32 and flat.rows.shape == (2, 3)
    np.testing.assert_array_equal(flat.rows, nested.rows)
    single = _parse(_tensor([1.5, 2, 3], [3], "FP64", id="req-1"))
    assert single.rows.shape == (1, 3) and single.id == "req-1"


def test_binary_tensor_extension() -> None:
    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    doc = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": rows.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    req = _parse(doc, binary=rows.tobytes())
    np.testing.assert_array_equal(req.rows, rows)
    assert req.binary_outputs == {"label", "probabilities"}


@pytest.mark.parametrize(
    ("doc", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        ([1, 2], 400, "JSON object"),
        ({"inputs": []}, 400, "exactly one"),
        (_tensor([1, 2, 3], [1, 3], "BYTES"), 422, "not supported"),
        (_tensor([1, 2, 3], [1, 3], None), 400, "datatype"),
        (_tensor([1, 2], [1, 3]), 400, "needs 3"),
        (_tensor([1, "x", 3], [1, 3]), 400, "only numbers"),
        (_tensor([1, True, 3], [1, 3]), 400, "only numbers"),
        (_tensor([1, 2, 3, 4], [1, 4]), 422, "takes 3 features"),
        (_tensor([], [0, 3]), 422, "no rows"),
        (_tensor([0.0] * 27, [9, 3]), 413, "exceed the limit of 8"),
        (_tensor([1, 2, 3], [1, -3]), 400, "non-negative"),
        (_tensor([1, 2, 3], [1, 1, 3]), 400, "shape"),
        (_tensor([1, 2, 3], "1,3"), 400, "shape"),
        (
            b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1e999,2,3]}]}',
            400,
            "JSON",
        ),  # an infinite literal is refused by the JSON parser
        (_tensor([1, 2, 3], [1, 3], id=7), 400, "'id'"),
        (_tensor([1, 2, 3], [1, 3], outputs=[{"name": "logits"}]), 400, "unknown output"),
    ],
)
def test_client_mistakes_are_4xx(doc: Any, status: int, needle: str) -> None:
    with pytest.raises(ProtocolError) as err:
        _parse(doc)
    assert err.value.status == status
    assert needle in err.value.message


def test_binary_size_mismatch_is_400() -> None:
    doc = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 8},
            }
        ]
    }
    with pytest.raises(ProtocolError, match="binary_data_size"):
        _parse(doc, binary=b"\0" * 8)
    with pytest.raises(ProtocolError, match="header"):
        parse_infer_request(
            b"{}", {"inference-header-content-length": "99"}, n_features=3, max_rows=8
        )


def test_json_response() -> None:
    req = InferRequest(rows=np.zeros((2, 3), np.float32))
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    body, headers = encode_infer_response(
        req,
        model="m",
        version="v2",
        labels=["a", "b"],
        probabilities=probs,
        prediction_ids=["p1", "p2"],
    )
    doc = orjson.loads(body)
    assert headers == {}
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("m", "v2", "p1")
    assert doc["parameters"]["prediction_ids"] == ["p1", "p2"]
    out = {o["name"]: o for o in doc["outputs"]}
    assert out["label"] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    assert out["probabilities"]["shape"] == [2, 2]
    np.testing.assert_allclose(out["probabilities"]["data"], probs.reshape(-1))


def test_binary_response_layout() -> None:
    req = InferRequest(
        rows=np.zeros((1, 3), np.float32),
        id="r",
        outputs=["probabilities", "label"],
        binary_outputs={"probabilities", "label"},
    )
    probs = np.array([[0.25, 0.75]], np.float32)
    body, headers = encode_infer_response(
        req, model="m", version="v1", labels=["yes"], probabilities=probs, prediction_ids=["p"]
    )
    size = int(headers["Inference-Header-Content-Length"])
    doc = orjson.loads(body[:size])
    assert doc["id"] == "r" and [o["name"] for o in doc["outputs"]] == ["probabilities", "label"]
    blob = body[size:]
    n_probs = doc["outputs"][0]["parameters"]["binary_data_size"]
    np.testing.assert_array_equal(np.frombuffer(blob[:n_probs], "<f4"), probs.reshape(-1))
    assert blob[n_probs:] == struct.pack("<I", 3) + b"yes"


def test_brief_bounds_what_an_error_echoes() -> None:
    assert brief("abc") == "'abc'" and brief(7) == "7" and brief(None) == "None"
    long = brief("x" * 3_000_000)
    assert long == repr("x" * 100) + "...(3000000 chars)"
    nested: Any = 1
    for _ in range(5000):  # deeper than the interpreter's recursion limit
        nested = [nested]
    assert len(brief(nested)) <= 110
    assert len(brief(list(range(10**5)))) <= 110
    assert len(brief({"k" * 10**6: "v" * 10**6})) <= 110
