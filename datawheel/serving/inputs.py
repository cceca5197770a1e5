"""Named inputs on the v2 wire: one tensor per feature, or encoded images.

:func:`parse_named` turns the ``inputs`` of an infer request into the model's encoded float32
rows ``[n, n_features]`` (raw numbers, and each categorical value as its code from the served
version's transform), or into the image files of an ``image`` input, which
:func:`image_rows` decodes exactly as training did (:mod:`datawheel.data.image_decode`). What each
model accepts is its :class:`~datawheel.serving.signature.Signature`; every mistake is a
:class:`~datawheel.serving.wire.ProtocolError` that names the inputs concerned.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from typing import Any

import numpy as np
from PIL import Image

from datawheel.data.image_decode import MAX_PIXELS, ImageError, Preprocessing, image_row, open_image
from datawheel.serving.signature import IMAGE_INPUT, Signature
from datawheel.serving.wire import NUMERIC, ProtocolError, binary_part, brief

__all__ = ["image_pixels", "image_rows", "parse_named"]

_IMAGE_FORMATS = ("PNG", "JPEG")
_NONE = type(None)
_NUMBERS: frozenset[type] = frozenset((int, float, _NONE))  # JSON numbers and null (missing)
_TEXTS: frozenset[type] = frozenset((str, _NONE, bool, int))  # a categorical value in JSON
_BOOL = np.dtype("?")


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) if len(n) <= 60 else brief(n, 60) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _rows(spec: dict[str, Any], name: str, max_rows: int) -> int:
    """The row count of a per-feature input: shape [n] or [n, 1]."""
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(d) is int and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise ProtocolError(
            400,
            f"input {name!r} must have shape [n] or [n, 1] (one value per row); got {brief(shape)}",
        )
    n = int(shape[0])
    if n == 0:
        raise ProtocolError(422, f"input {name!r} has no rows")
    if n > max_rows:
        raise ProtocolError(
            413, f"{n} rows exceed the limit of {max_rows} per request; split the batch"
        )
    return n


def _json_list(spec: dict[str, Any], name: str, n: int, kinds: frozenset[type]) -> list[Any]:
    """The ``n`` JSON values of a per-feature input, flat or nested as [[v], [v], ...]."""
    data = spec.get("data")
    if not isinstance(data, list):
        raise ProtocolError(400, f"input {name!r} needs 'data' (a list) or binary data")
    if data and type(data[0]) is list:
        if not all(type(v) is list and len(v) == 1 for v in data):
            raise ProtocolError(400, f"input {name!r}: nested data must be [[value], [value], ...]")
        data = [v[0] for v in data]
    if len(data) != n:
        raise ProtocolError(
            400, f"input {name!r} has {len(data)} values but its shape says {n} rows"
        )
    if not set(map(type, data)) <= kinds:
        want = "numbers or null" if kinds is _NUMBERS else "strings or null"
        raise ProtocolError(400, f"input {name!r} must hold only {want}")
    return data


def _byte_elements(raw: memoryview, n: int, name: str) -> list[bytes]:
    """The ``n`` elements of a binary BYTES tensor: each a 4-byte little-endian length and
    its bytes, as tritonclient serializes them."""
    out: list[bytes] = []
    pos, end = 0, len(raw)
    for i in range(n):
        if pos + 4 > end:
            raise ProtocolError(400, f"binary BYTES input {name!r} ends before element {i}")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > end:
            raise ProtocolError(400, f"element {i} of binary BYTES input {name!r} is cut short")
        out.append(bytes(raw[pos : pos + size]))
        pos += size
    if pos != end:
        raise ProtocolError(400, f"binary BYTES input {name!r} holds more than its {n} elements")
    return out


def _text(value: object) -> str | None:
    """A categorical value as the transform's categories spell it (bools, ints as str)."""
    if value is None or type(value) is str:
        return value  # type: ignore[return-value]
    if isinstance(value, float) and value != value:  # NaN: missing
        return None
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _categorical(
    spec: dict[str, Any], raw: memoryview | None, name: str, n: int, codes: dict[str, float]
) -> np.ndarray:
    datatype = spec.get("datatype")
    texts: list[str | None]
    if datatype == "BYTES":
        if raw is None:
            texts = [_text(v) for v in _json_list(spec, name, n, _TEXTS)]
        else:
            try:
                texts = [b.decode() for b in _byte_elements(raw, n, name)]
            except UnicodeDecodeError:
                raise ProtocolError(400, f"input {name!r} holds bytes that are not UTF-8") from None
    elif datatype == "BOOL" or datatype in NUMERIC:
        if raw is None:
            texts = [_text(v) for v in _json_list(spec, name, n, _TEXTS | _NUMBERS)]
        else:
            dtype = _BOOL if datatype == "BOOL" else NUMERIC[str(datatype)]
            if len(raw) != n * dtype.itemsize:
                raise ProtocolError(400, f"binary_data_size of input {name!r} != {n} x {datatype}")
            texts = [_text(v) for v in np.frombuffer(raw, dtype=dtype).tolist()]
    else:
        raise ProtocolError(
            422, f"input {name!r} is categorical: send BYTES (strings); got {brief(datatype)}"
        )
    return np.fromiter((codes.get(t, 0.0) if t is not None else 0.0 for t in texts), np.float32, n)


def _numeric(spec: dict[str, Any], raw: memoryview | None, name: str, n: int) -> np.ndarray:
    datatype = spec.get("datatype")
    dtype = NUMERIC.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise ProtocolError(
            422,
            f"input {name!r} is numeric: send FP32 (or another number type); got {brief(datatype)}",
        )
    if raw is None:
        try:
            values = np.asarray(_json_list(spec, name, n, _NUMBERS), dtype=np.float64)
        except (OverflowError, ValueError):
            raise ProtocolError(400, f"input {name!r} has numbers out of range") from None
    else:
        if len(raw) != n * dtype.itemsize:
            raise ProtocolError(
                400, f"binary_data_size of input {name!r} != {n} x {dtype.itemsize} bytes"
            )
        values = np.frombuffer(raw, dtype=dtype)
    column = values.astype(np.float32)
    if np.isinf(column).any():
        raise ProtocolError(422, f"input {name!r} has infinite values")
    return column


def _image_files(spec: dict[str, Any], raw: memoryview | None, n: int) -> list[bytes]:
    if spec.get("datatype") != "BYTES":
        raise ProtocolError(
            422,
            f"input {IMAGE_INPUT!r} must be BYTES (PNG or JPEG files); "
            f"got {brief(spec.get('datatype'))}",
        )
    if raw is not None:
        return _byte_elements(raw, n, IMAGE_INPUT)
    files = []
    for i, text in enumerate(_json_list(spec, IMAGE_INPUT, n, frozenset((str,)))):
        try:
            files.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError(
                400,
                f"element {i} of input {IMAGE_INPUT!r} is not base64 (in JSON an image is "
                "a standard base64 string; send raw bytes with the binary extension)",
            ) from None
    return files


def parse_named(
    inputs: list[Any], binary: memoryview, sig: Signature, max_rows: int
) -> tuple[np.ndarray | None, list[bytes] | None, int]:
    """The encoded rows (or the image files) of named ``inputs``, and the binary bytes used."""
    specs: dict[str, dict[str, Any]] = {}
    for spec in inputs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise ProtocolError(400, "every input must be an object with a 'name'")
        if name in specs:
            raise ProtocolError(400, f"input {brief(name)} is sent twice")
        specs[name] = spec  # type: ignore[assignment]
    if IMAGE_INPUT in specs and sig.image is not None:
        if len(specs) > 1:
            others = _names([n for n in specs if n != IMAGE_INPUT])
            raise ProtocolError(400, f"send input 'image' alone; also got {others}")
        spec = specs[IMAGE_INPUT]
        n = _rows(spec, IMAGE_INPUT, max_rows)
        raw, used = binary_part(spec, binary, 0)
        return None, _image_files(spec, raw, n), used
    unknown = [n for n in specs if n not in sig.column]
    missing = [f for f in sig.features if f not in specs]
    if unknown or missing:
        parts = [f"unknown input(s) {_names(unknown)}"] if unknown else []
        parts += [f"missing input(s) {_names(missing)}"] if missing else []
        also = "; or one 'image' input (PNG/JPEG)" if sig.image is not None else ""
        raise ProtocolError(400, f"{'; '.join(parts)}: the model takes {sig.wanted()}{also}")
    counts = {name: _rows(spec, name, max_rows) for name, spec in specs.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name!r} {n}" for name, n in list(counts.items())[:10])
        raise ProtocolError(400, f"the inputs disagree on the number of rows: {shown}")
    n = next(iter(counts.values()))
    rows = np.empty((n, len(sig.features)), np.float32)
    offset = 0
    for name, spec in specs.items():  # in the request's order: binary parts follow it
        raw, offset = binary_part(spec, binary, offset)
        codes = sig.codes.get(name)
        column = (
            _categorical(spec, raw, name, n, codes)
            if codes is not None
            else _numeric(spec, raw, name, n)
        )
        rows[:, sig.column[name]] = column
    return rows, None, offset


def image_pixels(files: list[bytes]) -> int:
    """The pixels of all ``files`` by their headers (nothing decoded; about 20 us a file);
    a file whose header cannot be read counts as :data:`MAX_PIXELS`."""
    total = 0
    for data in files:
        try:
            with Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS) as im:
                total += im.width * im.height
        except Exception:  # image_rows says what is wrong with it
            total += MAX_PIXELS
    return total


def image_rows(files: list[bytes], prep: Preprocessing, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The model rows of PNG/JPEG ``files``, decoded as training decoded its images; a file
    that is not one, or more than ``max_pixels`` pixels in one file or in all, is a 4xx."""
    rows = np.empty((len(files), prep.channels * prep.height * prep.width), np.float32)
    left = max_pixels
    for i, data in enumerate(files):
        try:
            im = open_image(data, formats=_IMAGE_FORMATS, max_pixels=min(left, max_pixels))
        except ImageError as exc:
            if exc.too_large and left < max_pixels:
                raise ProtocolError(
                    413,
                    f"image {i}: with the images before it, the request holds more than "
                    f"{max_pixels} pixels; send fewer or smaller images per request",
                ) from None
            raise ProtocolError(413 if exc.too_large else 422, f"image {i}: {exc}") from None
        left -= im.width * im.height
        rows[i] = image_row(im, prep)
    return rows
