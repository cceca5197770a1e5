"""Named inputs on the v2 wire: per-feature tensors (BYTES categorical, numbers with null),
JSON and binary, the image input, and every mistake a 4xx that names the inputs."""

from __future__ import annotations

import base64
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from tritonclient.utils import serialize_byte_tensor

from datawheel.serving.protocol import InferRequest, ProtocolError, parse_infer_request
from datawheel.serving.signature import Signature

FEATURES = ("bill", "island", "sex")
PENGUINS = Signature(
    features=FEATURES,
    codes={"island": {"Biscoe": 1.0, "Dream": 2.0}, "sex": {"False": 1.0, "True": 2.0}},
    schema=[],
    column={f: i for i, f in enumerate(FEATURES)},
)
NUMERIC = Signature(features=("a", "b"), codes={}, schema=[], column={"a": 0, "b": 1})


def _parse(
    inputs: list[dict[str, Any]], sig: Signature = PENGUINS, binary: bytes = b"", **kw: Any
) -> InferRequest:
    head = orjson.dumps({"inputs": inputs, **kw})
    headers = {"inference-header-content-length": str(len(head))} if binary else {}
    return parse_infer_request(
        head + binary, headers, n_features=len(sig.features), max_rows=8, signature=sig
    )


def _col(name: str, data: list[Any], datatype: str = "FP32", shape: Any = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def _bin(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


def _cats(n: int = 1) -> list[dict[str, Any]]:
    """The two categorical columns, ``n`` rows each."""
    return [_col("island", ["a"] * n, "BYTES"), _col("sex", ["b"] * n, "BYTES")]


def _status(inputs: list[dict[str, Any]], sig: Signature = PENGUINS) -> tuple[int, str]:
    with pytest.raises(ProtocolError) as info:
        _parse(inputs, sig)
    return info.value.status, info.value.message


def test_named_json_inputs_with_nulls_and_unseen_categories() -> None:
    req = _parse(
        [
            _col("sex", [True, None, "True"], "BYTES"),
            _col("bill", [39.1, None, 40], shape=[3, 1]),
            _col("island", ["Dream", None, "Atlantis"], "BYTES"),
        ]
    )
    expected = [[39.1, 2.0, 2.0], [np.nan, 0.0, 0.0], [40.0, 0.0, 2.0]]
    np.testing.assert_array_equal(req.rows, np.asarray(expected, np.float32))
    nested = _parse(
        [
            _col("bill", [[1.5]], shape=[1, 1]),
            _col("island", [["Biscoe"]], "BYTES", [1, 1]),
            _col("sex", [["False"]], "BYTES", [1, 1]),
        ]
    )
    np.testing.assert_array_equal(nested.rows, [[1.5, 1.0, 1.0]])


def test_named_binary_inputs_as_tritonclient_serializes_them() -> None:
    bill = np.asarray([39.1, np.nan], "<f4")
    island = serialize_byte_tensor(np.asarray([b"Biscoe", b"nowhere"], dtype=object)).item()
    sex = np.asarray([True, False])  # BOOL works for a boolean categorical
    inputs = [
        _bin("island", "BYTES", [2], len(island)),
        _bin("bill", "FP32", [2], 8),
        _bin("sex", "BOOL", [2, 1], 2),
    ]
    req = _parse(inputs, binary=island + bill.tobytes() + sex.tobytes())
    np.testing.assert_array_equal(req.rows, np.asarray([[39.1, 1, 2], [np.nan, 0, 1]], "f4"))


def test_a_numeric_model_takes_named_inputs_and_null_in_its_tensor() -> None:
    named = _parse([_col("b", [2, 4], "INT64"), _col("a", [1.5, None])], NUMERIC)
    np.testing.assert_array_equal(named.rows, np.asarray([[1.5, 2], [np.nan, 4]], "f4"))
    tensor = _parse([_col("input", [1.5, 2, None, 4], shape=[2, 2])], NUMERIC)
    np.testing.assert_array_equal(tensor.rows, named.rows)
    nested = _parse([_col("input", [[1.5, 2], [None, 4]], shape=[2, 2])], NUMERIC)
    np.testing.assert_array_equal(nested.rows, named.rows)


def test_a_categorical_model_refuses_the_single_tensor_and_lists_its_inputs() -> None:
    status, message = _status([_col("input", [1.0, 2.0, 3.0], shape=[1, 3])])
    assert status == 422
    assert "bill (FP32), island (BYTES), sex (BYTES)" in message


@pytest.mark.parametrize(
    ("inputs", "status", "needles"),
    [
        ([_col("bill", [1.0]), _col("island", ["Dream"], "BYTES")], 400, ["missing", "'sex'"]),
        (
            [_col("bill", [1.0]), _col("island", ["a"], "BYTES"), _col("sex", ["b"], "BYTES"),
             _col("colour", [1.0])],
            400, ["unknown input(s) 'colour'", "bill (FP32)"],
        ),
        (
            [_col("bill", [1.0, 2.0]), _col("island", ["a"], "BYTES"), _col("sex", ["b"], "BYTES")],
            400, ["disagree on the number of rows", "'bill' 2", "'island' 1"],
        ),
        ([_col("bill", [1.0]), _col("bill", [1.0])], 400, ["sent twice"]),
        (
            [_col("bill", ["x"], "BYTES"), *_cats()],
            422, ["'bill' is numeric"],
        ),
        (
            [_col("bill", [1.0]), _col("island", [1.5], "FP16"), _col("sex", [{}], "BYTES")],
            400, ["'sex' must hold only strings or null"],
        ),
        (
            [_col("bill", [1.0]), _col("island", ["a"], "BYTES"), _col("sex", ["b"], "INT4")],
            422, ["'sex' is categorical"],
        ),
        (
            [_col("bill", [1.0], shape=[1, 2]), *_cats()],
            400, ["'bill' must have shape [n] or [n, 1]"],
        ),
        (
            [_col("bill", [1.0] * 9), *_cats(9)],
            413, ["exceed the limit of 8"],
        ),
        (
            [_col("bill", [1.0, 2.0], shape=[3]), *_cats(3)],
            400, ["'bill' has 2 values but its shape says 3"],
        ),
        ([{"datatype": "FP32", "shape": [1], "data": [1]}, _col("bill", [1.0])], 400, ["'name'"]),
    ],
    ids=["missing", "unknown", "rows", "twice", "bytes-for-numeric", "not-strings",
         "bad-type", "shape", "too-many-rows", "short-data", "no-name"],
)  # fmt: skip
def test_named_input_mistakes_are_4xx_naming_the_inputs(
    inputs: list[dict[str, Any]], status: int, needles: list[str]
) -> None:
    got, message = _status(inputs)
    assert got == status, message
    for needle in needles:
        assert needle in message, message


def test_infinity_in_a_named_input_is_refused() -> None:
    inf = np.asarray([np.inf], "<f4")
    spec = {"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}
    head = orjson.dumps({"inputs": [spec, _col("b", [1.0])]})
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(
            head + inf.tobytes(),
            {"inference-header-content-length": str(len(head))},
            n_features=2,
            max_rows=8,
            signature=NUMERIC,
        )
    assert info.value.status == 422 and "'a' has infinite values" in info.value.message


def test_the_image_input_is_base64_in_json_and_raw_in_binary() -> None:
    from datawheel.data.image_decode import Preprocessing

    sig = Signature(("px_0",), {}, [], Preprocessing("L", 1, 1), column={"px_0": 0})
    files = [b"\x89PNG first", b"\xff\xd8 second"]
    as_json = _parse([_col("image", [base64.b64encode(f).decode() for f in files], "BYTES")], sig)
    assert as_json.images == files and as_json.rows.shape == (0, 1)
    raw = b"".join(struct.pack("<I", len(f)) + f for f in files)
    spec = _bin("image", "BYTES", [2], len(raw))
    assert _parse([spec], sig, binary=raw).images == files
    for bad, needle in [
        ([_col("image", ["not base64!"], "BYTES")], "not base64"),
        ([_col("image", ["AAAA"], "BYTES"), _col("px_0", [1.0])], "send input 'image' alone"),
        ([_col("image", [1.0], "FP32")], "must be BYTES"),
    ]:
        with pytest.raises(ProtocolError) as info:
            _parse(bad, sig)
        assert 400 <= info.value.status < 500 and needle in info.value.message
    short = {**spec, "parameters": {"binary_data_size": 6}}
    with pytest.raises(ProtocolError) as info:
        _parse([short], sig, binary=raw[:6])
    assert info.value.status == 400 and "cut short" in info.value.message
