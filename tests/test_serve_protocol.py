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


_ROW = [0.5] * 64


@pytest.mark.parametrize(
    "data",
    [
        [[0.5] * 63, [0.5] * 65],  # 128 values, split 63 + 65: shifted features
        [[0.5] * 63, 0.5, *([0.5] * 64)],  # a row, a bare number, then the rest
        [[0.5] * 63, 0.5],
        [_ROW, [_ROW]],  # one row nested a level deeper
        [[_ROW], [_ROW]],
        [_ROW, _ROW, _ROW],  # three rows for a shape of two
        [_ROW[:32] + [[0.5]] * 32, _ROW],  # lists where numbers belong
    ],
    ids=["63+65", "row-bare-rest", "row-bare", "deeper-2nd", "deeper-both", "3-rows", "inner"],
)
def test_ragged_or_misnested_rows_are_400_never_misread(data: Any) -> None:
    with pytest.raises(ProtocolError) as err:
        _parse(_tensor(data, [2, 64]), n_features=64)
    assert err.value.status == 400
    assert len(err.value.message) < 300


def test_nested_data_must_match_the_shape_and_flat_data_stays_allowed() -> None:
    rows = np.arange(128, dtype=np.float32).reshape(2, 64)
    nested = _parse(_tensor(rows.tolist(), [2, 64]), n_features=64)
    flat = _parse(_tensor(rows.reshape(-1).tolist(), [2, 64]), n_features=64)
    np.testing.assert_array_equal(nested.rows, rows)
    np.testing.assert_array_equal(flat.rows, rows)
    single = _parse(_tensor([1, 2, 3], [3]))
    assert single.rows.shape == (1, 3)
    with pytest.raises(ProtocolError, match="shape"):
        _parse(_tensor([[1, 2, 3]], [3]))  # nested as [1, 3] but declared [3]


def _deep(depth: int) -> bytes:
    """``depth`` nested one-element lists, as JSON text (orjson.dumps stops at 254 levels)."""
    return b"[" * depth + b"0.5" + b"]" * depth


def _raw(template: bytes, deep: bytes) -> bytes:
    return template.replace(b"DEEP", deep)


@pytest.mark.parametrize(
    "doc",
    [
        _raw(b'{"inputs":[{"shape":[1,3],"datatype":"FP32","data":DEEP}]}', _deep(1000)),
        _raw(b'{"inputs":[{"shape":[1,3],"datatype":"FP32","data":[DEEP,1,2]}]}', _deep(1000)),
        _raw(
            b'{"inputs":[{"shape":[1,3],"datatype":"FP32","data":[1,2,3]}],'
            b'"outputs":[{"name":DEEP}]}',
            _deep(1000),
        ),
        _tensor([1, 2, 3], [1, 3], outputs=5),  # was a TypeError
        _tensor([1, 2, 3], [1, 3], outputs=True),
        _tensor([1, 2, 3], [1, 3], outputs=1.5),
        _tensor([], [2**63, 0]),  # was a numpy ValueError
        _tensor([], [0, 2**63]),
        _tensor([], [2**63]),
        _raw(
            b'{"inputs":[{"shape":[1,3],"datatype":"FP32","data":[1,2,3]}],'
            b'"parameters":{"binary_data_output":DEEP}}',
            _deep(1000),
        ),
    ],
    ids=[
        "deep-data",
        "deep-value",
        "deep-output",
        "outputs-5",
        "outputs-true",
        "outputs-1.5",
        "shape-2**63-0",
        "shape-0-2**63",
        "shape-2**63",
        "deep-param",
    ],
)
def test_hostile_json_is_4xx_not_a_crash(doc: Any) -> None:
    try:
        _parse(doc)
    except ProtocolError as err:
        assert 400 <= err.status < 500 and len(err.message) < 300
    else:
        assert b"binary_data_output" in doc  # only a harmless parameter gets through


def test_binary_shape_2_63_is_4xx() -> None:
    doc = {
        "inputs": [
            {
                "name": "input",
                "shape": [2**63, 0],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 0},
            }
        ]
    }
    head = orjson.dumps(doc)
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(
            head, {"inference-header-content-length": str(len(head))}, n_features=3, max_rows=8
        )
    assert 400 <= err.value.status < 500


@pytest.mark.parametrize(
    ("doc", "headers"),
    [
        (_tensor([1, 2, 3], [1, 3], "X" * 10**6), {}),
        (_tensor([1, 2, 3], [1, 3], outputs=[{"name": "y" * 10**6}]), {}),
        (_tensor([1, 2, 3], [1, 3]), {"inference-header-content-length": "z" * 10**6}),
    ],
    ids=["datatype", "output-name", "binary-header"],
)
def test_error_messages_do_not_echo_unbounded_input(doc: Any, headers: dict[str, str]) -> None:
    with pytest.raises(ProtocolError) as err:
        _parse(doc, headers)
    assert len(err.value.message) < 400 and "chars)" in err.value.message
