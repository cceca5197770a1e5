"""The write-ahead log (WAL) format: frames, their encoding and decoding, WAL file names.

A WAL file ``wal-<time_ns>-<hex8>.wal`` is a run of frames, one per record kind per
``append``: a 17-byte little-endian header (``DWAL``, kind, u32 record count, u32 payload
length, u32 CRC-32 of the payload), then the payload. Kinds:

* 1 = predictions, 2 = feedback: the payload is an Arrow IPC stream of the records
  (what :func:`encode_records` writes for a sequence of :class:`Prediction` /
  :class:`Feedback`);
* 3 = predictions as fixed-layout rows (what :func:`encode_batch` writes for a
  :class:`PredictionBatch`, the server's hot path): a preamble (u32 id width, label
  width, features, classes, meta length), the meta ``version\\0model\\0variant``
  (``version\\0model`` in a frame written before the variant was: TorchScript), then one
  numpy record per row: id, ts, latency_ms, label, inputs (f32), probabilities (f32).

A torn or corrupt frame fails its length/CRC check and is skipped: :func:`decode_frames`
resynchronises on the next ``DWAL`` and reports how many bytes it skipped. The ``<hex8>``
part of the name makes each file unique; it (with the time) names the file's Parquet
segments in the store, so uploading one file twice overwrites instead of duplicating.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import time
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import (
    LEGACY_VARIANT,
    SCHEMAS,
    Feedback,
    Prediction,
    PredictionBatch,
)

__all__ = [
    "Frame",
    "decode_frames",
    "encode_batch",
    "encode_records",
    "frame_tables",
    "wal_name",
    "wal_segment",
]

Frame = tuple[int, int, memoryview]  # kind, record count, payload

_KINDS = {1: "predictions", 2: "feedback", 3: "predictions"}  # 3: fixed-layout rows
_ROWS_PREAMBLE = struct.Struct("<IIIII")  # id width, label width, features, classes, meta
_MAGIC = b"DWAL"
_HEADER = struct.Struct("<4sBIII")  # magic, kind, record count, payload length, crc32
_WAL_RE = re.compile(r"^wal-(\d{20}-[0-9a-f]{8})\.wal$")


def wal_name() -> str:
    """A new, unique WAL file name; files sort by the time they were opened."""
    return f"wal-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.wal"


def wal_segment(name: str) -> str | None:
    """The segment name of the WAL file called ``name``; None if it is not a WAL file."""
    match = _WAL_RE.match(name)
    return match.group(1) if match else None


# --- encoding -------------------------------------------------------------------------------


def encode_batch(batch: PredictionBatch) -> bytes:
    """One kind-3 WAL frame: a fixed-layout numpy record per row (cheap to write and to
    read back in bulk), behind a preamble naming the layout, version and model."""
    n = len(batch.ids)
    if not (batch.inputs.shape[0] == n == len(batch.labels) == batch.probabilities.shape[0]):
        raise DatawheelError(
            "a prediction batch has columns of different lengths",
            "pass one id, input row, label and probability row per row",
        )
    ids = [i.encode() for i in batch.ids]
    labels = [label.encode() for label in batch.labels]
    layout = (
        max(map(len, ids)),
        max(map(len, labels)),
        batch.inputs.shape[1],
        batch.probabilities.shape[1],
    )
    rows = np.empty(n, _row_dtype(*layout))
    rows["id"], rows["label"] = ids, labels
    rows["ts"], rows["latency_ms"] = batch.ts, batch.latency_ms
    rows["inputs"], rows["probabilities"] = batch.inputs, batch.probabilities
    meta = f"{batch.version}\0{batch.model}\0{batch.variant}".encode()
    payload = _ROWS_PREAMBLE.pack(*layout, len(meta)) + meta + rows.tobytes()
    return _HEADER.pack(_MAGIC, 3, n, len(payload), zlib.crc32(payload)) + payload


def encode_records(records: Sequence[Prediction | Feedback], model: str) -> bytes:
    """The WAL frames for ``records`` (one per kind present), all of them of ``model``."""
    groups: dict[int, list[Prediction | Feedback]] = {1: [], 2: []}
    for r in records:
        kind = 1 if isinstance(r, Prediction) else 2 if isinstance(r, Feedback) else 0
        if not kind or r.model != model or not math.isfinite(r.ts):
            raise DatawheelError(
                f"ledger record {r!r:.120} is not a Prediction/Feedback of model {model!r} "
                "with a finite ts",
                "append Prediction or Feedback records of the ledger's model",
            )
        groups[kind].append(r)
    out = bytearray()
    for kind, rows in groups.items():
        if not rows:
            continue
        schema = SCHEMAS[_KINDS[kind]]
        try:
            arrays = [pa.array([getattr(r, f.name) for r in rows], f.type) for f in schema]
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DatawheelError(
                f"ledger records do not fit the {_KINDS[kind]} schema: {exc}",
                "pass str ids/labels/versions, float ts/latency_ms and lists of floats",
            ) from exc
        out += _frame(kind, pa.record_batch(arrays, schema=schema))
    return bytes(out)


def _frame(kind: int, batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload: bytes = sink.getvalue().to_pybytes()
    return _HEADER.pack(_MAGIC, kind, batch.num_rows, len(payload), zlib.crc32(payload)) + payload


@functools.lru_cache(maxsize=64)
def _row_dtype(id_width: int, label_width: int, n_features: int, n_classes: int) -> np.dtype[Any]:
    return np.dtype(
        [
            ("id", f"S{id_width}"),
            ("ts", "<f8"),
            ("latency_ms", "<f8"),
            ("label", f"S{label_width}"),
            ("inputs", "<f4", (n_features,)),
            ("probabilities", "<f4", (n_classes,)),
        ]
    )


# --- decoding -------------------------------------------------------------------------------


def decode_frames(data: bytes) -> tuple[list[Frame], int]:
    """The intact ``(kind, count, payload)`` frames in ``data``, and how many bytes were not."""
    frames: list[Frame] = []
    pos = skipped = 0
    view = memoryview(data)
    while pos < len(data):
        end = pos + _HEADER.size
        if end <= len(data):
            magic, kind, count, length, crc = _HEADER.unpack_from(data, pos)
            payload = view[end : end + length]
            intact = magic == _MAGIC and kind in _KINDS and len(payload) == length
            if intact and zlib.crc32(payload) == crc:
                frames.append((kind, count, payload))
                pos = end + length
                continue
        resync = data.find(_MAGIC, pos + 1)  # torn or corrupt: skip to the next frame
        resync = len(data) if resync < 0 else resync
        skipped += resync - pos
        pos = resync
    return frames, skipped


def frame_tables(frames: Sequence[Frame]) -> dict[str, list[pa.Table]]:
    """The records of ``frames`` as Arrow tables, per kind (``predictions``, ``feedback``);
    the tables of one kind share its column names but not always its exact types."""
    tables: dict[str, list[pa.Table]] = {name: [] for name in SCHEMAS}
    tables["predictions"] += _rows_tables([p for k, _, p in frames if k == 3])
    for kind, _, payload in frames:
        if kind != 3:
            tables[_KINDS[kind]].append(pa.ipc.open_stream(pa.py_buffer(payload)).read_all())
    return tables


_Group = tuple[tuple[int, ...], str, str, str]  # layout, version, model, variant


def _rows(payload: memoryview) -> tuple[_Group, memoryview]:
    """A kind-3 frame's layout, version, model, variant and raw row records."""
    *layout, meta_len = _ROWS_PREAMBLE.unpack_from(payload)
    start = _ROWS_PREAMBLE.size
    version, model, *rest = bytes(payload[start : start + meta_len]).decode().split("\0")
    variant = rest[0] if rest else LEGACY_VARIANT
    return (tuple(layout), version, model, variant), payload[start + meta_len :]


def _rows_tables(payloads: list[memoryview]) -> list[pa.Table]:
    """Kind-3 frames as predictions tables: one per (layout, version, model, variant), read with a
    single ``np.frombuffer`` over the joined records, never one per frame."""
    groups: dict[_Group, list[memoryview]] = {}
    for payload in payloads:
        group, records = _rows(payload)
        groups.setdefault(group, []).append(records)
    tables = []
    for (layout, version, model, variant), chunks in groups.items():
        rows = np.frombuffer(b"".join(chunks), dtype=_row_dtype(*layout))
        n = len(rows)
        tables.append(
            pa.Table.from_arrays(
                [
                    pa.array(np.char.decode(rows["id"]), pa.string()),
                    pa.array(rows["ts"]),
                    pa.array([model] * n, pa.string()),
                    pa.array([version] * n, pa.string()),
                    _lists(rows["inputs"]),
                    pa.array(np.char.decode(rows["label"]), pa.string()),
                    _lists(rows["probabilities"]),
                    pa.array(rows["latency_ms"]),
                    pa.array([variant] * n, pa.string()),
                ],
                schema=SCHEMAS["predictions"],
            )
        )
    return tables


def _lists(matrix: np.ndarray) -> pa.Array:
    """Rows of a 2-D array as an Arrow list<float64> column, built from two flat buffers."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(matrix, dtype=np.float64).reshape(-1))
    return pa.ListArray.from_arrays(offsets, values)
