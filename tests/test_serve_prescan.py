"""JsonBudget: a body that would cost far more to parse than any good request is refused
on its bytes, chunk by chunk, before orjson builds millions of objects."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from datawheel.serving.prescan import JsonBudget, json_head_size
from datawheel.serving.protocol import ProtocolError, parse_infer_request

MAX_ROWS, FEATURES = 1024, 64


def _budget(head_bytes: int | None = None) -> JsonBudget:
    return JsonBudget.for_infer(max_rows=MAX_ROWS, n_features=FEATURES, head_bytes=head_bytes)


def _feed(budget: JsonBudget, body: bytes, chunk: int = 65536) -> None:
    for start in range(0, len(body), chunk):
        budget.feed(body[start : start + chunk])


def _nested_attack(depth: int, size: int = 4 * 1024 * 1024) -> bytes:
    unit = b"[" * depth + b"0" + b"]" * depth
    head = b'{"inputs":[{"name":"input","shape":[1024,64],"datatype":"FP32","data":['
    count = (size - len(head) - 5) // (len(unit) + 1)
    return head + b",".join([unit] * count) + b"]}]}"


def test_the_largest_good_requests_pass() -> None:
    rows = np.random.default_rng(0).random((MAX_ROWS, FEATURES)).tolist()
    for data in (rows, [v for row in rows for v in row]):
        doc = {
            "id": "[batch, 1]",
            "inputs": [{"name": "input", "shape": [MAX_ROWS, FEATURES], "datatype": "FP32"}],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
            "parameters": {"binary_data_output": False},
        }
        doc["inputs"][0]["data"] = data  # type: ignore[index]
        body = orjson.dumps(doc)
        _feed(_budget(), body)
        parse_infer_request(body, {}, n_features=FEATURES, max_rows=MAX_ROWS)


@pytest.mark.parametrize("depth", [1000, 8, 2])
def test_nested_one_element_lists_are_refused_at_the_first_chunk(depth: int) -> None:
    body = _nested_attack(depth)
    budget = _budget()
    with pytest.raises(ProtocolError) as err:
        budget.feed(body[:65536])  # what orjson would turn into ~10^6 lists (see attack_bench)
    assert err.value.status == 400 and "lists and objects" in err.value.message


def test_too_many_values_is_413() -> None:
    body = b'{"inputs":[{"data":[' + b",".join([b"0"] * (MAX_ROWS * FEATURES + 2000)) + b"]}]}"
    with pytest.raises(ProtocolError) as err:
        _feed(_budget(), body)
    assert err.value.status == 413 and "split the batch" in err.value.message


def test_only_the_json_head_of_a_binary_request_is_counted() -> None:
    head = orjson.dumps({"inputs": [{"name": "input", "shape": [1024, 64], "datatype": "UINT8"}]})
    payload = b"[,{" * 30000  # binary bytes that look like JSON structure
    headers = [(b"inference-header-content-length", str(len(head)).encode())]
    budget = _budget(json_head_size(headers))
    _feed(budget, head + payload, chunk=7)  # the boundary falls inside a chunk
    with pytest.raises(ProtocolError):
        _feed(_budget(None), head + payload)


def test_json_head_size() -> None:
    assert json_head_size([(b"content-type", b"application/json")]) is None
    assert json_head_size([(b"inference-header-content-length", b"120")]) == 120
    assert json_head_size([(b"inference-header-content-length", b"-1")]) == 0
    assert json_head_size([(b"inference-header-content-length", b"9" * 40)]) == 0
