"""Fuzz a real server: no input, however hostile, gets a 5xx or a body that is not JSON.

Besides random JSON and bytes, the strategies send requests that are good except for one
hostile part, since a random document rarely gets past the first check: nesting up to 1000
deep in the data, an output name, a parameter or the id; ``outputs`` that is not a list;
ragged or misnested rows; shapes up to 2**64 - 1; binary tensors with such shapes. Each
of these answered 500 before (RecursionError, TypeError, numpy's ValueError).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import ServerProcess, copy_store

INFER = "/v2/models/digits/infer"
Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


@pytest.fixture(scope="module")
def server(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        copy_store(model_store, tmp_path_factory.mktemp("fuzz") / "store"),
        tmp_path_factory.mktemp("spool"),
        args=["--max-rows", "32", "--max-body-bytes", "200000"],
    )
    yield srv.start()
    srv.stop()


# --- random documents -----------------------------------------------------------------------

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
_datatype = st.sampled_from(
    ["FP32", "FP64", "FP16", "INT8", "INT64", "UINT8", "BOOL", "BYTES", "fp32", "", "FP"]
)
_dim = st.one_of(st.integers(-3, 70), st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64]))
_shape = st.one_of(st.lists(_dim, max_size=4), _json)
_tensor = st.fixed_dictionaries(
    {
        "name": st.one_of(st.just("input"), _json_scalar),
        "shape": _shape,
        "datatype": _datatype,
        "data": st.one_of(
            st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=140),
            st.lists(st.lists(st.integers(-5, 5), max_size=70), max_size=3),
            _json,
        ),
    },
    optional={
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-4, 600)}), _json
        )
    },
)
_body = st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"inputs": st.lists(_tensor, max_size=2)},
        optional={"id": _json_scalar, "outputs": _json, "parameters": _json},
    ).map(lambda v: json.dumps(v).encode()),
)
_headers = st.dictionaries(
    st.sampled_from(["Inference-Header-Content-Length", "Content-Type", "Authorization"]),
    st.one_of(st.integers(-5, 400).map(str), st.text(alphabet="abc123 ", max_size=6)),
    max_size=2,
)
_path = st.sampled_from(
    [
        INFER,
        "/v2/models/digits/feedback",
        "/v2/models/digits/versions/v1/infer",
        "/v2/models/x/infer",
        "/v2/models/digits",
        "/v2/health/ready",
        "/metrics",
        "/v2//models",
    ]
)
_random = st.tuples(st.sampled_from(["POST", "GET", "PUT"]), _path, _body, _headers)


# --- good requests with one hostile part ----------------------------------------------------


def _good(rows: int = 1) -> dict[str, Any]:
    return {"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": [0.5] * 64 * rows}


def _post(doc: dict[str, Any] | bytes) -> Request:
    return "POST", INFER, doc if isinstance(doc, bytes) else json.dumps(doc).encode(), {}


_GOOD = json.dumps(_good()).encode()
_DEEP_SLOTS = [  # DEEP is replaced by a nested one-element list (json.dumps stops near 1000)
    b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":DEEP}]}',
    b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[DEEP'
    + b",0.5" * 63
    + b"]}]}",
    b'{"inputs":[' + _GOOD + b'],"outputs":[{"name":DEEP}]}',
    b'{"inputs":[' + _GOOD + b'],"outputs":DEEP}',
    b'{"inputs":[' + _GOOD + b'],"parameters":{"binary_data_output":DEEP}}',
    b'{"inputs":[' + _GOOD + b'],"id":DEEP}',
]
_deep = st.builds(
    lambda slot, depth: _post(slot.replace(b"DEEP", b"[" * depth + b"0.5" + b"]" * depth)),
    st.sampled_from(_DEEP_SLOTS),
    st.integers(1, 1000),
)
_outputs = st.builds(
    lambda rows, out: _post({"inputs": [_good(rows)], "outputs": out}), st.integers(1, 2), _json
)
_row = st.one_of(
    st.lists(st.just(0.5), min_size=60, max_size=68),
    st.just(0.5),
    st.lists(st.lists(st.just(0.5), max_size=64), max_size=2),
)
_ragged = st.builds(
    lambda rows, n: _post({"inputs": [{**_good(n), "data": rows}]}),
    st.lists(_row, min_size=1, max_size=3),
    st.integers(1, 3),
)
_huge = st.builds(
    lambda shape, data: _post({"inputs": [{**_good(), "shape": shape, "data": data}]}),
    st.lists(_dim, min_size=1, max_size=2),
    st.sampled_from([[], [0.5] * 64]),
)


def _binary_request(shape: list[int], datatype: str, size: int, extra: int) -> Request:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    payload = b"\0" * max(0, size + extra)
    return "POST", INFER, head + payload, {"Inference-Header-Content-Length": str(len(head))}


_binary = st.builds(
    _binary_request,
    st.lists(_dim, min_size=1, max_size=2),
    st.sampled_from(["FP32", "FP16", "UINT8", "BOOL"]),
    st.sampled_from([0, 4, 256, 512]),
    st.integers(-2, 2),
)
REQUESTS = st.one_of(_random, _deep, _outputs, _ragged, _huge, _binary)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=REQUESTS)
def test_fuzz_never_5xx(server: ServerProcess, request: Request) -> None:
    method, path, body, headers = request
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": "application/json", **headers}
        )
        response = conn.getresponse()
        status, raw = response.status, response.read()
    finally:
        conn.close()
    assert status < 500, raw[:300]
    if status >= 400:
        error = json.loads(raw)["error"]
        assert isinstance(error, str) and len(error) < 1000
