"""The ledger writer: records are durable on local disk before ``append`` returns.

``append`` writes each batch to a local write-ahead log (WAL, :mod:`.wal`) in ``spool_dir``
with one ``os.write`` (plus ``fsync`` if asked), so it survives a kill -9 once the call
returns. A background thread rotates the WAL every ``flush_interval`` seconds (or when a
file reaches 64 MiB), uploads each rotated file as Parquet segments (:mod:`.segments`),
then deletes it. While the store is down the files stay (the spool) and are retried with
capped backoff; ``start`` replays what an earlier process left. ``backlog`` counts the
records appended but not yet in the store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import KINDS, Feedback, Prediction, PredictionBatch
from datawheel.serving.ledger.segments import write_segments
from datawheel.serving.ledger.wal import (
    decode_frames,
    encode_batch,
    encode_records,
    frame_tables,
    wal_name,
    wal_segment,
)
from datawheel.storage import Store, validate_name

__all__ = ["Ledger", "LedgerUnavailable"]

_MAX_WAL_BYTES = 64 << 20  # rotate early so one upload never parses a huge file
_MAX_BACKOFF_S = 30.0


def _stderr_log(line: str) -> None:
    print(f"ledger: {line}", file=sys.stderr, flush=True)


class LedgerUnavailable(DatawheelError):
    """The ledger cannot make records durable now (the spool disk is full or read-only, the
    process is out of file descriptors, the ledger is closed): nothing of the call was
    written, so the request can be answered 503 and retried. ``cause`` names the reason
    (e.g. ``ENOSPC: No space left on device``), ``spool_dir`` the folder."""

    def __init__(self, cause: str, spool_dir: Path, fix: str) -> None:
        self.cause = cause
        self.spool_dir = spool_dir
        super().__init__(f"the ledger cannot write to its spool folder {spool_dir}: {cause}", fix)


def _cause(exc: OSError) -> str:
    """``ENOSPC: No space left on device`` for an OSError; its text where it has no errno."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{name}: {text}" if name else text


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
        found = [p for p in sorted(self.spool_dir.iterdir()) if wal_segment(p.name)]
        wals = [_Wal(p, sum(c for _, c, _ in decode_frames(p.read_bytes())[0])) for p in found]
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
            data, count = encode_batch(records), len(records.ids)
        elif not records:
            return
        else:
            data, count = encode_records(records, self.model), len(records)
        with self._lock:
            if self._closed:
                raise LedgerUnavailable(
                    "the ledger is not running: it was closed (the server is shutting down)",
                    self.spool_dir,
                    "send the request to another replica",
                )
            if self._thread is None:
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
                raise LedgerUnavailable(
                    _cause(exc),
                    self.spool_dir,
                    "free disk space in the spool folder (or fix its permissions, mount or file "
                    "limit); nothing of this request was stored, so it can be retried",
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
        path = self.spool_dir / wal_name()
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
        frames, skipped = decode_frames(wal.path.read_bytes())
        if skipped:
            self._log(f"skipped {skipped} bytes of a torn or corrupt write in {wal.path.name} "
                      "(an append that never returned)")  # fmt: skip
        segment = wal_segment(wal.path.name)
        assert segment is not None
        tables = frame_tables(frames)
        for kind in KINDS:
            write_segments(store, kind, tables[kind], segment)
        wal.path.unlink(missing_ok=True)


def _background_priority() -> None:
    """Run this thread at a lower OS priority (Linux niceness is per thread), so uploading
    never takes CPU from the threads answering requests. A thread waiting for the GIL
    sleeps, so this cannot starve the server; where it is not allowed, nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
