"""What every part of the v2 wire shares: the 4xx error, quoting a client's value, the types.

:mod:`datawheel.serving.protocol` (the request and response) and
:mod:`datawheel.serving.inputs` (named per-feature and image inputs) both build on these.
"""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np
import orjson

__all__ = ["NUMERIC", "ProtocolError", "binary_part", "brief", "error_body"]

NUMERIC: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}


class ProtocolError(Exception):
    """A bad request: ``status`` is 400, 404, 413 or 422."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxdict = 3, 8, 8
_BRIEF.maxstring = _BRIEF.maxother = _BRIEF.maxlong = 120


def brief(value: object, limit: int = 100) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    Error bodies quote what the client sent; a 3 MB id must not come back as a 3 MB 404.
    A long string keeps its first ``limit`` characters and says how long it was:
    ``'aaaa...'...(3000000 chars)``. Other values are abbreviated by :mod:`reprlib`
    (safe on deep nesting) and cut to ``limit`` characters.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}...({len(value)} chars)"
    text = _BRIEF.repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def binary_part(
    spec: dict[str, Any], binary: memoryview, offset: int
) -> tuple[memoryview | None, int]:
    """The bytes of a tensor sent in the binary extension (None: its data is in the JSON),
    and the offset of the next tensor's."""
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(400, "input 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is None:
        return None, offset
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise ProtocolError(400, "binary_data_size does not match the binary payload")
    return binary[offset : offset + size], offset + size
