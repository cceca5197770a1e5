"""The Open Inference Protocol v2 (KServe v2 REST) on the wire: parse, validate, respond.

Pure functions, no I/O. Supports JSON tensors and Triton's binary-tensor extension
(``Inference-Header-Content-Length``), which ``tritonclient.http`` uses by default.
Every client mistake raises :class:`ProtocolError` with a 4xx status and a message.

The single ``[n, n_features]`` number tensor is parsed here (the fast path; JSON ``null`` is
NaN, a missing value the model imputes); one input per feature and the ``image`` input are
parsed by :mod:`datawheel.serving.inputs`, as the model's
:class:`~datawheel.serving.signature.Signature` says.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from datawheel.serving.inputs import parse_named
from datawheel.serving.signature import IMAGE_INPUT, Signature
from datawheel.serving.wire import NUMERIC, ProtocolError, binary_part, brief, error_body

__all__ = [
    "InferRequest",
    "ProtocolError",
    "brief",
    "encode_infer_response",
    "error_body",
    "parse_infer_request",
]

_HEADER = "inference-header-content-length"


@dataclass
class InferRequest:
    rows: np.ndarray  # float32 [n, n_features]; empty until ``images`` are decoded
    id: str | None = None
    outputs: list[str] = field(default_factory=list)  # empty: all outputs
    binary_outputs: set[str] = field(default_factory=set)
    images: list[bytes] | None = None  # PNG/JPEG files of an 'image' input, to decode


def _split_binary(body: bytes, headers: dict[str, str]) -> tuple[bytes, bytes]:
    raw = headers.get(_HEADER)
    if raw is None:
        return body, b""
    try:
        size = int(raw)
    except ValueError:
        raise ProtocolError(400, f"{_HEADER} must be an integer, got {brief(raw)}") from None
    if not 0 <= size <= len(body):
        raise ProtocolError(400, f"{_HEADER}={size} does not fit a {len(body)}-byte body")
    return body[:size], body[size:]


# what orjson gives for JSON numbers (bool is apart), and null: a missing value (NaN)
_NUMBER_TYPES = frozenset((int, float, type(None)))


def _json_values(data: Any, shape: list[int], n_rows: int, n_cols: int) -> list[Any]:
    """The values of a JSON tensor, flat or nested exactly as ``shape``; never misaligned.

    Flat data (row-major, as tritonclient sends it) must have ``n_rows x n_cols`` values.
    Nested data must be ``n_rows`` lists of ``n_cols`` numbers for a [rows, features] shape:
    a ragged row, a bare number among rows or a row nested deeper is a 400, never a shift of
    features into the next row. The walk is over rows, not values (the type check runs in C),
    so a deep or ragged body is refused at its first bad row, without recursion.
    """
    if not isinstance(data, list):
        raise ProtocolError(400, "input 'data' must be a list of numbers (flat or nested by row)")
    types: set[type] = set()
    if data and type(data[0]) is list:
        if len(shape) != 2:
            raise ProtocolError(
                400, f"shape {shape} is one row: send its {n_cols} numbers as a flat list"
            )
        if len(data) != n_rows:
            raise ProtocolError(
                400,
                f"nested input 'data' must match shape {shape}: {n_rows} rows of {n_cols} "
                f"numbers (or send it flat); got {len(data)} items at the top level",
            )
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != n_cols:
                got = f"{len(row)} items" if type(row) is list else brief(row)
                raise ProtocolError(
                    400,
                    f"row {i} of input 'data' must be a list of {n_cols} numbers as shape "
                    f"{shape} says; got {got}",
                )
            types.update(map(type, row))
    else:
        if len(data) != n_rows * n_cols:
            raise ProtocolError(
                400, f"input has {len(data)} values but shape {shape} needs {n_rows * n_cols}"
            )
        types.update(map(type, data))
    if not types <= _NUMBER_TYPES:
        raise ProtocolError(
            400, "input 'data' must hold only numbers (or null for a missing value)"
        )
    return data


def _shape(spec: dict[str, Any], n_features: int, max_rows: int) -> tuple[list[int], int, int]:
    """The declared shape, checked against the model before any data is looked at."""
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > 2
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ProtocolError(
            400, "input 'shape' must be [rows, features] or [features] with non-negative integers"
        )
    n_rows, n_cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
    if n_cols != n_features:
        raise ProtocolError(
            422, f"the model takes {n_features} features per row; got shape {brief(shape)}"
        )
    if n_rows == 0:
        raise ProtocolError(422, "the input has no rows")
    if n_rows > max_rows:
        raise ProtocolError(
            413, f"{n_rows} rows exceed the limit of {max_rows} per request; split the batch"
        )
    return shape, n_rows, n_cols


def _tensor(
    spec: dict[str, Any], binary: memoryview, offset: int, n_features: int, max_rows: int
) -> tuple[np.ndarray, int]:
    datatype = spec.get("datatype")
    if not isinstance(datatype, str):
        raise ProtocolError(400, "input 'datatype' is required, e.g. \"FP32\"")
    dtype = NUMERIC.get(datatype)
    if dtype is None:
        raise ProtocolError(
            422,
            f"datatype {brief(datatype)} is not supported; send FP32 "
            f"(or another numeric type: {', '.join(NUMERIC)})",
        )
    shape, n_rows, n_cols = _shape(spec, n_features, max_rows)
    count = n_rows * n_cols
    raw, offset = binary_part(spec, binary, offset)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(
                400,
                f"binary_data_size {len(raw)} != {count} x {dtype.itemsize} "
                f"bytes for shape {shape} {datatype}",
            )
        array = np.frombuffer(raw, dtype=dtype)
    else:
        values = _json_values(spec.get("data"), shape, n_rows, n_cols)
        try:
            array = np.asarray(values, dtype=np.float64)
        except (OverflowError, ValueError):
            raise ProtocolError(400, "input 'data' has numbers out of range") from None
    rows = array.astype(np.float32, copy=False).reshape(n_rows, n_cols)
    if np.isinf(rows).any():  # NaN is a missing value the model imputes; infinity is not
        raise ProtocolError(422, "input has infinite values")
    return rows, offset


def _single_tensor(inputs: list[Any], signature: Signature | None) -> bool:
    """Whether ``inputs`` is the one ``[n, n_features]`` tensor (else: named inputs).

    One input is the tensor unless it is named like a feature or ``image``; a model with
    categorical features takes no tensor (a 422 that lists the inputs it wants)."""
    if signature is None:
        if len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ProtocolError(400, "'inputs' must be a list with exactly one tensor object")
        return True
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        return False
    name = inputs[0].get("name")
    if name in signature.column or (name == IMAGE_INPUT and signature.image is not None):
        return False
    if not signature.tensor_ok:
        raise ProtocolError(
            422,
            f"this model has categorical features, so it takes no single tensor "
            f"{brief(name)}: send {signature.wanted()}",
        )
    return True


def parse_infer_request(
    body: bytes,
    headers: dict[str, str],
    *,
    n_features: int,
    max_rows: int,
    signature: Signature | None = None,
) -> InferRequest:
    """Parse and validate an infer request for a model with ``n_features`` inputs: the single
    tensor, or (given the model's ``signature``) named per-feature or image inputs."""
    head, binary = _split_binary(body, headers)
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(400, "body must be a JSON object with an 'inputs' list")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(
            400,
            "'inputs' must be a list of tensor objects: exactly one [n, n_features] tensor, "
            "or one per feature",
        )
    images = None
    if _single_tensor(inputs, signature):
        rows, used = _tensor(inputs[0], memoryview(binary), 0, n_features, max_rows)
    else:
        assert signature is not None
        named, images, used = parse_named(inputs, memoryview(binary), signature, max_rows)
        rows = named if named is not None else np.empty((0, n_features), np.float32)
    if used != len(binary):
        raise ProtocolError(400, f"{len(binary) - used} bytes of binary payload are unused")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, "'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "'parameters' must be an object")
    req = InferRequest(rows=rows, id=request_id, images=images)
    all_binary = params.get("binary_data_output") is True
    outputs = doc.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise ProtocolError(400, "'outputs' must be a list of {\"name\": ...} objects")
    for out in outputs or ():
        name = out.get("name") if isinstance(out, dict) else None
        if name not in ("label", "probabilities"):
            raise ProtocolError(
                400, f"unknown output {brief(name)}; outputs are 'label' and 'probabilities'"
            )
        req.outputs.append(name)
        out_params = out.get("parameters") or {}
        if isinstance(out_params, dict) and out_params.get("binary_data") is True:
            req.binary_outputs.add(name)
    if all_binary:
        req.binary_outputs |= set(req.outputs or ("label", "probabilities"))
    return req


def _bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for v in values:
        raw = v.encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def encode_infer_response(
    req: InferRequest,
    *,
    model: str,
    version: str,
    labels: list[str],
    probabilities: np.ndarray,
    prediction_ids: list[str],
) -> tuple[bytes, dict[str, str]]:
    """The response body and extra headers (the binary header when binary outputs go back)."""
    n, k = probabilities.shape
    wanted = req.outputs or ["label", "probabilities"]
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in wanted:
        spec: dict[str, Any]
        if name == "label":
            spec = {"name": "label", "datatype": "BYTES", "shape": [n]}
            blob = _bytes_tensor(labels) if name in req.binary_outputs else None
            data: Any = labels
        else:
            spec = {"name": "probabilities", "datatype": "FP32", "shape": [n, k]}
            probs = np.ascontiguousarray(probabilities, dtype="<f4")
            blob = probs.tobytes() if name in req.binary_outputs else None
            data = probs.reshape(-1)
        if blob is not None:
            spec["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            spec["data"] = data
        outputs.append(spec)
    doc = {
        "model_name": model,
        "model_version": version,
        "id": req.id if req.id is not None else prediction_ids[0],
        "parameters": {"prediction_ids": prediction_ids},
        "outputs": outputs,
    }
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, {}
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}
