"""The prediction ledger: every served row and feedback label, durable before the reply.

``append`` writes each batch to a local write-ahead log (WAL) in ``spool_dir`` with one
``os.write`` (plus ``fsync`` if asked), so it survives a kill -9 once the call returns. A
background thread rotates the WAL every ``flush_interval`` seconds, uploads each rotated
file as Parquet segments ``ledger/{predictions,feedback}/model=M/date=YYYY-MM-DD/S.parquet``
(``S`` is the WAL file's unique name, so a re-upload after a crash overwrites, never
duplicates), then deletes it. While the store is down the files stay (the spool) and are
retried with capped backoff; ``start`` replays what an earlier process left.

A WAL file ``wal-<time_ns>-<hex8>.wal`` is a run of frames, one per record kind per
``append``: a 17-byte little-endian header (``DWAL``, kind 1=prediction/2=feedback, u32
record count, u32 payload length, u32 CRC-32 of the payload), then the payload, an Arrow
IPC stream of the records. A torn or corrupt frame fails its length/CRC check: skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import re
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datawheel.errors import DatawheelError
from datawheel.storage import Store, validate_name

__all__ = ["Feedback", "Ledger", "Prediction", "PredictionBatch", "read_ledger"]


@dataclass(frozen=True)
class Prediction:
    """One served row."""

    id: str
    ts: float  # seconds since the epoch; its UTC date picks the partition
    model: str
    version: str
    inputs: list[float]
    label: str
    probabilities: list[float]
    latency_ms: float


@dataclass(frozen=True)
class Feedback:
    """A label for an earlier prediction."""

    id: str
    ts: float
    model: str
    version: str
    label: str
    predicted: str


_ARROW_TYPES = {"str": pa.string(), "float": pa.float64(), "list[float]": pa.list_(pa.float64())}
_SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([(f.name, _ARROW_TYPES[str(f.type)]) for f in fields(cls)])
    for kind, cls in (("predictions", Prediction), ("feedback", Feedback))
}
_KINDS = {1: "predictions", 2: "feedback", 3: "predictions"}  # 3: fixed-layout rows
_ROWS_PREAMBLE = struct.Struct("<IIIII")  # id width, label width, features, classes, meta
_MAGIC = b"DWAL"
_HEADER = struct.Struct("<4sBIII")  # magic, kind, record count, payload length, crc32
_WAL_RE = re.compile(r"^wal-(\d{20}-[0-9a-f]{8})\.wal$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_WAL_BYTES = 64 << 20  # rotate early so one upload never parses a huge file
_MAX_BACKOFF_S = 30.0


def _stderr_log(line: str) -> None:
    print(f"ledger: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class PredictionBatch:
    """The rows of one model call, kept as arrays: framed without per-row Python objects."""

    ids: list[str]
    ts: float
    model: str
    version: str
    inputs: np.ndarray  # [n, n_features]
    labels: list[str]
    probabilities: np.ndarray  # [n, n_classes]
    latency_ms: float

    def frame(self) -> bytes:
        """One kind-3 WAL frame: a fixed-layout numpy record per row (cheap to write and to
        read back in bulk), behind a preamble naming the layout, version and model."""
        n = len(self.ids)
        if not (self.inputs.shape[0] == n == len(self.labels) == self.probabilities.shape[0]):
            raise DatawheelError(
                "a prediction batch has columns of different lengths",
                "pass one id, input row, label and probability row per row",
            )
        ids = [i.encode() for i in self.ids]
        labels = [label.encode() for label in self.labels]
        layout = (
            max(map(len, ids)),
            max(map(len, labels)),
            self.inputs.shape[1],
            self.probabilities.shape[1],
        )
        rows = np.empty(n, _row_dtype(*layout))
        rows["id"], rows["label"] = ids, labels
        rows["ts"], rows["latency_ms"] = self.ts, self.latency_ms
        rows["inputs"], rows["probabilities"] = self.inputs, self.probabilities
        meta = f"{self.version}\0{self.model}".encode()
        payload = _ROWS_PREAMBLE.pack(*layout, len(meta)) + meta + rows.tobytes()
        return _HEADER.pack(_MAGIC, 3, n, len(payload), zlib.crc32(payload)) + payload


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


def _rows(payload: memoryview) -> tuple[tuple[int, ...], str, str, memoryview]:
    """A kind-3 frame's layout, version, model and raw row records."""
    *layout, meta_len = _ROWS_PREAMBLE.unpack_from(payload)
    start = _ROWS_PREAMBLE.size
    version, model = bytes(payload[start : start + meta_len]).decode().split("\0", 1)
    return tuple(layout), version, model, payload[start + meta_len :]


def _rows_tables(payloads: list[memoryview]) -> list[pa.Table]:
    """Kind-3 frames as predictions tables: one per (layout, version, model), read with a
    single ``np.frombuffer`` over the joined records, never one per frame."""
    groups: dict[tuple[tuple[int, ...], str, str], list[memoryview]] = {}
    for payload in payloads:
        layout, version, model, records = _rows(payload)
        groups.setdefault((layout, version, model), []).append(records)
    tables = []
    for (layout, version, model), chunks in groups.items():
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
                ],
                schema=_SCHEMAS["predictions"],
            )
        )
    return tables


def _lists(matrix: np.ndarray) -> pa.Array:
    """Rows of a 2-D array as an Arrow list<float64> column, built from two flat buffers."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(matrix, dtype=np.float64).reshape(-1))
    return pa.ListArray.from_arrays(offsets, values)


def _frame(kind: int, batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload: bytes = sink.getvalue().to_pybytes()
    return _HEADER.pack(_MAGIC, kind, batch.num_rows, len(payload), zlib.crc32(payload)) + payload


def _encode(records: Sequence[Prediction | Feedback], model: str) -> tuple[bytes, int]:
    """The WAL frames for ``records`` (one per kind present), and the record count."""
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
        schema = _SCHEMAS[_KINDS[kind]]
        try:
            arrays = [pa.array([getattr(r, f.name) for r in rows], f.type) for f in schema]
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DatawheelError(
                f"ledger records do not fit the {_KINDS[kind]} schema: {exc}",
                "pass str ids/labels/versions, float ts/latency_ms and lists of floats",
            ) from exc
        out += _frame(kind, pa.record_batch(arrays, schema=schema))
    return bytes(out), len(records)


def _frames(data: bytes) -> tuple[list[tuple[int, int, memoryview]], int]:
    """The intact ``(kind, count, payload)`` frames in ``data``, and how many bytes were not."""
    frames: list[tuple[int, int, memoryview]] = []
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


def _partitions(table: pa.Table) -> Iterator[tuple[str, str, pa.Table]]:
    """``(model, YYYY-MM-DD, rows)`` for each model and UTC day in ``table``."""
    models = np.asarray(table.column("model").to_pylist(), dtype=object)
    days = np.floor(table.column("ts").to_numpy() / 86400.0).astype(np.int64)
    for model, day in sorted(set(zip(models.tolist(), days.tolist(), strict=True))):
        rows = (models == model) & (days == day)
        part = table if rows.all() else table.filter(pa.array(rows))
        yield model, str(np.datetime64(day, "D")), part


@dataclass(eq=False)
class _Wal:
    path: Path
    count: int = 0  # records in the file: what uploading it takes off the backlog
    size: int = 0  # bytes written (while it is the file being appended to)
    fd: int = -1


class Ledger:
    """Durable local WAL + batched Parquet upload of predictions and feedback."""

    def __init__(
        self,
        store_factory: Callable[[], Store],
        *,
        model: str,
        spool_dir: Path,
        flush_interval: float = 2.0,
        fsync: bool = False,
        on_backlog: Callable[[int], None] = lambda n: None,
        log: Callable[[str], None] = _stderr_log,
    ) -> None:
        self.model = validate_name(model, "model name")
        self.spool_dir = Path(spool_dir)
        self.flush_interval = flush_interval
        self.fsync = fsync
        self._store_factory = store_factory
        self._on_backlog = on_backlog
        self._log = log
        self._store: Store | None = None
        self._lock = threading.Lock()  # WAL writes and every field below it
        self._cond = threading.Condition(self._lock)  # a file was uploaded or a pass ended
        self._upload_lock = threading.Lock()  # one upload pass at a time
        self._wake = threading.Event()
        self._current: _Wal | None = None  # the file appends go to
        self._pending: list[_Wal] = []  # rotated, not yet uploaded, oldest first
        self._backlog = 0
        self._passes_started = self._passes_done = 0
        self._last_ok, self._failing = True, False
        self._closed = False
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def backlog(self) -> int:
        """Records appended (durable on local disk) but not yet in the store."""
        return self._backlog

    def start(self) -> None:
        """Lock ``spool_dir``, queue WAL files an earlier process left, start the flusher."""
        if self._thread is not None:
            raise DatawheelError("the ledger is already started", "call start() once")
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.spool_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise DatawheelError(
                f"ledger spool folder {self.spool_dir} is in use by another ledger",
                "give each server process its own spool_dir",
            ) from exc
        found = [p for p in sorted(self.spool_dir.iterdir()) if _WAL_RE.match(p.name)]
        wals = [_Wal(p, sum(c for _, c, _ in _frames(p.read_bytes())[0])) for p in found]
        with self._lock:
            self._lock_fd = lock_fd
            self._pending.extend(wals)
            self._set_backlog(self._backlog + sum(w.count for w in wals))
        if wals:
            self._log(f"replaying {self._backlog} records from {len(wals)} WAL files")
        self._thread = threading.Thread(target=self._run, name="ledger-flusher", daemon=True)
        self._thread.start()

    def append(self, records: Sequence[Prediction | Feedback] | PredictionBatch) -> None:
        """Write ``records`` to the WAL: one write per call; durable when this returns.

        A :class:`PredictionBatch` (what the server writes per model call) is framed
        straight from its arrays; a sequence of records is converted row by row.
        """
        if isinstance(records, PredictionBatch):
            if records.model != self.model or not math.isfinite(records.ts):
                raise DatawheelError(
                    f"a prediction batch of model {records.model!r} was appended to the "
                    f"ledger of {self.model!r}",
                    "append batches of the ledger's model",
                )
            if not records.ids:
                return
            data, count = records.frame(), len(records.ids)
        elif not records:
            return
        else:
            data, count = _encode(records, self.model)
        with self._lock:
            if self._thread is None or self._closed:
                raise DatawheelError("the ledger is not running", "call start() before append()")
            wal = self._current
            try:
                wal = wal or self._open_locked()
                view = memoryview(data)
                while view:
                    view = view[os.write(wal.fd, view) :]
                if self.fsync:
                    os.fsync(wal.fd)
            except OSError as exc:
                try:  # cut the partial frame off; failing that, leave it to the CRC check
                    if wal is not None:
                        os.ftruncate(wal.fd, wal.size)
                except OSError:
                    self._rotate_locked()
                raise DatawheelError(
                    f"cannot write the ledger WAL in {self.spool_dir}: {exc.strerror or exc}",
                    "free disk space in the spool folder or fix its permissions",
                ) from exc
            wal.size += len(data)
            wal.count += count
            self._set_backlog(self._backlog + count)
            if wal.size >= _MAX_WAL_BYTES:
                self._rotate_locked()
                self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Upload everything appended so far; True if the store now has it all."""
        with self._lock:
            self._rotate_locked()
            if not self._pending:
                return True
            target, asked = self._pending[-1], self._passes_started
        if self._thread is None or not self._thread.is_alive():
            with self._upload_lock:
                self._pass()
        else:
            self._wake.set()
        deadline = time.monotonic() + timeout
        with self._cond:
            while target in self._pending:
                remaining = deadline - time.monotonic()
                failed = self._passes_done > asked and not self._last_ok
                if failed or remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Final flush (what cannot be uploaded stays spooled) and stop the flusher."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            self._wake.set()
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._log(f"final upload still running after {timeout:.0f}s; giving up on it")
                return
        with self._lock:
            self._rotate_locked()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
        if self._backlog:
            self._log(f"{self._backlog} records stay spooled in {self.spool_dir}; they are "
                      "uploaded when a ledger starts on that folder again")  # fmt: skip

    def _set_backlog(self, n: int) -> None:
        if n != self._backlog:
            self._backlog = n
            self._on_backlog(n)

    def _open_locked(self) -> _Wal:
        path = self.spool_dir / f"wal-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.wal"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self._current = _Wal(path, fd=os.open(path, flags, 0o644))
        if self.fsync:  # make the new directory entry durable too
            dir_fd = os.open(self.spool_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self._current

    def _rotate_locked(self) -> None:
        """Close the current WAL file; new appends go to a new one."""
        if (wal := self._current) is None:
            return
        os.close(wal.fd)
        if wal.count:
            self._pending.append(wal)
        else:
            wal.path.unlink(missing_ok=True)
        self._current = None

    def _run(self) -> None:
        _background_priority()
        delay = 0.0 if self._pending else self.flush_interval  # replay right away
        failures = 0
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            stopping = self._closed
            with self._upload_lock:
                ok = self._pass()
            if stopping:
                return
            failures = 0 if ok else min(failures + 1, 16)
            cap = max(_MAX_BACKOFF_S, self.flush_interval)
            delay = min(self.flush_interval * 2**failures, cap)

    def _pass(self) -> bool:
        """Rotate, then upload the pending WAL files in order; False if one failed."""
        with self._lock:
            self._rotate_locked()
            todo = list(self._pending)
            self._passes_started += 1
            number = self._passes_started
        ok = True
        try:
            for wal in todo:
                if self._store is None:
                    self._store = self._store_factory()
                self._upload(self._store, wal)
                with self._cond:
                    self._pending.remove(wal)
                    self._set_backlog(self._backlog - wal.count)
                    self._cond.notify_all()
        except Exception as exc:
            ok, self._store = False, None
            if not self._failing:
                self._log(f"cannot upload to the store, spooling in {self.spool_dir} and "
                          f"retrying: {' '.join(str(exc).split())[:300]}")  # fmt: skip
        if ok and self._failing and todo:
            self._log("the store is reachable again; spooled records uploaded")
        self._failing = not ok
        with self._cond:
            self._passes_done, self._last_ok = number, ok
            self._cond.notify_all()
        return ok

    def _upload(self, store: Store, wal: _Wal) -> None:
        """Upload ``wal``'s records as Parquet segments named after it, then delete it."""
        frames, skipped = _frames(wal.path.read_bytes())
        if skipped:
            self._log(f"skipped {skipped} bytes of a torn or corrupt write in {wal.path.name} "
                      "(an append that never returned)")  # fmt: skip
        segment = _WAL_RE.match(wal.path.name)
        assert segment is not None
        tables: dict[str, list[pa.Table]] = {name: [] for name in _SCHEMAS}
        tables["predictions"] += _rows_tables([p for k, _, p in frames if k == 3])
        for kind, _, payload in frames:
            if kind != 3:
                tables[_KINDS[kind]].append(pa.ipc.open_stream(pa.py_buffer(payload)).read_all())
        for name, parts in tables.items():
            if not parts:
                continue
            schema = _SCHEMAS[name]
            table = pa.concat_tables([t.select(schema.names).cast(schema) for t in parts])
            for model, date, part in _partitions(table):
                sink = pa.BufferOutputStream()
                pq.write_table(part, sink, compression="zstd")
                key = f"ledger/{name}/model={model}/date={date}/{segment.group(1)}.parquet"
                store.put_bytes(key, sink.getvalue().to_pybytes())
        wal.path.unlink(missing_ok=True)


def _background_priority() -> None:
    """Run this thread at a lower OS priority (Linux niceness is per thread), so uploading
    never takes CPU from the threads answering requests. A thread waiting for the GIL
    sleeps, so this cannot starve the server; where it is not allowed, nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def read_ledger(
    store: Store,
    *,
    model: str,
    kind: str = "predictions",
    date: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """All ledger rows of ``model`` (one UTC ``date`` if given) as a DataFrame sorted by ts.

    Columns are the :class:`Prediction` or :class:`Feedback` fields (or ``columns``);
    ``inputs`` and ``probabilities`` hold one float64 array per row.
    """
    if kind not in _SCHEMAS:
        raise DatawheelError(f"ledger kind {kind!r} is unknown", "use predictions or feedback")
    if date is not None and not _DATE_RE.match(date):
        raise DatawheelError(f"ledger date {date!r} is not YYYY-MM-DD", "pass e.g. 2024-05-31")
    schema = _SCHEMAS[kind]
    names = list(columns) if columns is not None else schema.names
    if unknown := set(names) - set(schema.names):
        raise DatawheelError(f"unknown {kind} columns {sorted(unknown)}", f"use {schema.names}")
    prefix = f"ledger/{kind}/model={validate_name(model, 'model name')}"
    prefix += f"/date={date}" if date else ""
    read = sorted({*names, "ts"}, key=schema.names.index)
    tables = [
        pq.read_table(pa.BufferReader(store.get_bytes(key)), columns=read, schema=schema)
        for key in store.list(prefix)
        if key.endswith(".parquet")
    ]
    table = pa.concat_tables(tables) if tables else schema.empty_table().select(read)
    frame: pd.DataFrame = table.sort_by("ts").select(names).to_pandas()
    return frame
