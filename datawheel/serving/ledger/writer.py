"""The ledger writer: records are durable on local disk before ``append`` returns.

``append`` writes each batch to the WAL (:mod:`.wal`) in ``spool_dir`` with one ``os.write``
(plus ``fsync`` if asked) and checks that the file still has a link: if the spool folder
was deleted, it makes it again, locks it and writes the records to a new file, so every
append that returns is durable. A thread rotates the WAL every ``flush_interval`` seconds
(or at 64 MiB) and uploads each rotated file (:mod:`.spool`); a file that cannot be
uploaded is skipped, never retried forever. ``backlog`` = appended - uploaded - ``lost``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import Feedback, Prediction, PredictionBatch
from datawheel.serving.ledger.spool import (
    LedgerUnavailable,
    LossReport,
    SkipWal,
    background_priority,
    fsync_dir,
    lock_spool,
    open_spool,
    os_cause,
    scan_spool,
    upload_wal,
)
from datawheel.serving.ledger.wal import encode_batch, encode_records, wal_name
from datawheel.storage import Store, validate_name

__all__ = ["FINAL_FLUSH_TIMEOUT_S", "Ledger", "LedgerUnavailable"]

#: How long ``close`` waits for the final upload (the server's shutdown waits this long).
FINAL_FLUSH_TIMEOUT_S = 30.0
_MAX_WAL_BYTES = 64 << 20  # rotate early so one upload never parses a huge file
_MAX_BACKOFF_S = 30.0


def _stderr_log(line: str) -> None:
    print(f"ledger: {line}", file=sys.stderr, flush=True)


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
        self._backlog = self._lost = 0
        self._losses = LossReport(self.spool_dir, log)
        self._passes_started = self._passes_done = 0
        self._last_ok, self._failing = True, False
        self._closed = False
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def backlog(self) -> int:
        """Records appended (durable on local disk) and not yet in the store: exactly
        those this ledger will still upload."""
        return self._backlog

    @property
    def lost(self) -> int:
        """Records this ledger gave up on: in WAL files deleted by someone else (gone), or
        unreadable or undecodable (left in the spool folder)."""
        return self._lost

    def start(self) -> None:
        """Lock ``spool_dir``, queue WAL files an earlier process left, start the flusher."""
        if self._thread is not None:
            raise DatawheelError("the ledger is already started", "call start() once")
        lock_fd = open_spool(self.spool_dir)  # a one-line error if it cannot be written
        wals = [_Wal(path, count) for path, count in scan_spool(self.spool_dir, self._log)]
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
        straight from its arrays; a sequence of records is converted row by row. Raises
        :class:`LedgerUnavailable` if it cannot write; then nothing of the call was kept.
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
            if self._closed or self._thread is None:
                self._refuse_locked()
            try:
                wal = self._current or self._open_locked()
                done = os.write(wal.fd, data)  # one write, the common case: no loop
                if done != len(data) or self.fsync:
                    self._write(wal.fd, data, done)
                if not os.fstat(wal.fd).st_nlink:  # deleted (by hand?) before it was durable
                    wal = self._rewrite_locked(data)
            except OSError as exc:
                self._cut_locked()
                raise LedgerUnavailable(
                    os_cause(exc),
                    self.spool_dir,
                    "free disk space in the spool folder (or fix its permissions, mount or file "
                    "limit); nothing of this request was stored, so it can be retried",
                ) from exc
            wal.size += len(data)
            wal.count += count
            self._backlog += count  # count > 0: the gauge always changes
            self._on_backlog(self._backlog)
            if wal.size >= _MAX_WAL_BYTES:
                self._rotate_locked()
                self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Upload everything appended so far; True if none of it is pending any more (it
        is in the store, or in ``lost``)."""
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

    def close(self, timeout: float = FINAL_FLUSH_TIMEOUT_S) -> None:
        """Final flush (what cannot be uploaded within ``timeout`` stays spooled) and stop
        the flusher."""
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
            self._losses.final()
        if self._backlog:
            self._log(f"{self._backlog} records stay spooled in {self.spool_dir}; they are "
                      "uploaded when a ledger starts on that folder again")  # fmt: skip

    # --- writing (under self._lock) ----------------------------------------------------------

    def _refuse_locked(self) -> NoReturn:
        if self._closed:
            raise LedgerUnavailable(
                "the ledger is not running: it was closed (the server is shutting down)",
                self.spool_dir,
                "send the request to another replica",
            )
        raise DatawheelError("the ledger is not running", "call start() before append()")

    def _write(self, fd: int, data: bytes, done: int = 0) -> None:
        """Write what is left of ``data`` after ``done`` bytes, then fsync if asked."""
        view = memoryview(data)[done:]
        while view:
            view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)

    def _set_backlog(self, n: int) -> None:
        if n != self._backlog:
            self._backlog = n
            self._on_backlog(n)

    def _open_locked(self) -> _Wal:
        path = self.spool_dir / wal_name()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # the spool folder was deleted
            self._relock_locked()
            fd = os.open(path, flags, 0o644)
        self._current = _Wal(path, fd=fd)
        if self.fsync:  # make the new directory entry durable too
            fsync_dir(self.spool_dir)
        return self._current

    def _relock_locked(self) -> None:
        """Make the spool folder again and lock it, if its lock file is gone with it."""
        if self._lock_fd is not None and os.fstat(self._lock_fd).st_nlink:
            return
        try:
            fd = lock_spool(self.spool_dir)
        except BlockingIOError:
            raise OSError(errno.EBUSY, "the spool folder was deleted and another ledger "
                          "locked it when it was made again") from None  # fmt: skip
        old, self._lock_fd = self._lock_fd, fd
        if old is not None:
            os.close(old)
        if self.fsync:  # the folder's own entry, made again
            fsync_dir(self.spool_dir.parent)

    def _rewrite_locked(self, data: bytes) -> _Wal:
        """The current WAL file was deleted while open (its records are gone with it): count
        them lost, open a new file (making the folder again) and write ``data`` there."""
        for _ in range(3):
            gone = self._current
            assert gone is not None
            self._current = None
            with contextlib.suppress(OSError):
                os.close(gone.fd)
            self._lose_locked(gone)
            self._relock_locked()
            wal = self._open_locked()
            self._write(wal.fd, data)
            if os.fstat(wal.fd).st_nlink:
                self._wake.set()  # the flusher reports and skips what else was deleted
                return wal
        raise OSError(errno.ENOENT, "the spool folder is deleted again as soon as it is made")

    def _cut_locked(self) -> None:
        """After a failed write: cut the partial frame off the current file, so the next
        append follows the last whole frame; failing that, start a new file (the torn tail
        is then the last thing in the old one, where the CRC check skips it)."""
        if (wal := self._current) is None:
            return
        try:
            os.ftruncate(wal.fd, wal.size)
        except OSError:
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        """Close the current WAL file; new appends go to a new one."""
        if (wal := self._current) is None:
            return
        self._current = None
        with contextlib.suppress(OSError):  # the data is written; a failed close loses none
            os.close(wal.fd)
        if wal.count:
            self._pending.append(wal)
        else:
            with contextlib.suppress(OSError):
                wal.path.unlink(missing_ok=True)

    def _lose_locked(self, wal: _Wal) -> None:
        """``wal`` will not be uploaded: take it off the backlog and count it lost."""
        self._lost += wal.count
        self._set_backlog(self._backlog - wal.count)
        self._losses.add(wal.count)

    # --- uploading (the flusher thread) ------------------------------------------------------

    def _run(self) -> None:
        background_priority()
        delay = 0.0 if self._pending else self.flush_interval  # replay right away
        failures = 0
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            stopping = self._closed
            try:
                with self._upload_lock:
                    ok = self._pass()
            except Exception as exc:  # a bug or a local fault: the flusher never stops
                ok = False
                self._log(f"upload pass failed: {exc!r:.300}")
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
                self._upload(wal)
        except Exception as exc:
            ok, self._store = False, None
            if not self._failing:
                self._log(f"cannot upload to the store, spooling in {self.spool_dir} and "
                          f"retrying: {' '.join(str(exc).split())[:300]}")  # fmt: skip
        finally:
            if ok and self._failing and todo:
                self._log("the store is reachable again; spooled records uploaded")
            self._failing = not ok
            with self._cond:
                self._passes_done, self._last_ok = number, ok
                self._cond.notify_all()
        return ok

    def _store_or_open(self) -> Store:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def _upload(self, wal: _Wal) -> None:
        """Upload ``wal``'s records as Parquet segments named after it, then delete it; one
        that cannot be uploaded (:class:`SkipWal`) is reported and skipped."""
        skip = None
        try:
            upload_wal(self._store_or_open, wal.path, self._log)
        except SkipWal as exc:
            skip = exc
        with self._cond:
            self._pending.remove(wal)
            if skip and skip.gone:
                self._lose_locked(wal)
            else:
                if skip:
                    self._lost += wal.count
                    self._log(f"WAL file {wal.path.name} is {skip.reason}: its {wal.count} "
                              "records are skipped")  # fmt: skip
                self._set_backlog(self._backlog - wal.count)
            self._cond.notify_all()
