"""The spool folder on local disk: its lock, the WAL files left in it, and turning one WAL
file into the Parquet segments to upload.

A WAL file that cannot be uploaded now or ever (deleted by someone else, unreadable,
undecodable) raises :class:`SkipWal`, so the writer reports it and goes on with the next
file instead of retrying it forever; an error that passes (out of file descriptors or
memory) is raised as is and retried like a store outage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import KINDS
from datawheel.serving.ledger.segments import encode_segments
from datawheel.serving.ledger.wal import decode_frames, frame_tables, wal_segment
from datawheel.storage import Store

__all__ = [
    "LedgerUnavailable",
    "LossReport",
    "SkipWal",
    "background_priority",
    "fsync_dir",
    "lock_spool",
    "open_spool",
    "os_cause",
    "scan_spool",
    "upload_wal",
    "wal_segments",
]

# errors that pass: the file is fine, this process is short of something for a moment
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR}


class LedgerUnavailable(DatawheelError):
    """The ledger cannot make records durable now (the spool disk is full or read-only, the
    process is out of file descriptors, the ledger is closed): nothing of the call was
    written, so the request can be answered 503 and retried. ``cause`` names the reason
    (e.g. ``ENOSPC: No space left on device``), ``spool_dir`` the folder."""

    def __init__(self, cause: str, spool_dir: Path, fix: str) -> None:
        self.cause = cause
        self.spool_dir = spool_dir
        super().__init__(f"the ledger cannot write to its spool folder {spool_dir}: {cause}", fix)


class SkipWal(Exception):
    """This WAL file will not be uploaded: ``gone`` if it was deleted (its records are
    lost), else it is unreadable or undecodable and stays on disk (``reason`` says how)."""

    def __init__(self, reason: str, *, gone: bool) -> None:
        super().__init__(reason)
        self.reason, self.gone = reason, gone


def os_cause(exc: OSError) -> str:
    """``ENOSPC: No space left on device`` for an OSError; its text where it has no errno."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{name}: {text}" if name else text


def fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (a file made or renamed in it) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_spool(folder: Path) -> int:
    """Make ``folder`` (and its parents) and take an exclusive flock on its ``.lock`` file;
    the locked fd. OSError if it cannot (BlockingIOError: another process holds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def open_spool(folder: Path) -> int:
    """:func:`lock_spool` for a ledger that starts, and a probe write: a folder that cannot
    be made, locked or written (read-only mount, no permission, full disk) is refused at once
    with a one-line :class:`LedgerUnavailable`, instead of answering every request 503."""
    try:
        fd = lock_spool(folder)
    except BlockingIOError as exc:
        raise DatawheelError(
            f"ledger spool folder {folder} is in use by another ledger",
            "give each server process its own spool folder (--spool-dir)",
        ) from exc
    except OSError as exc:
        raise LedgerUnavailable(os_cause(exc), folder, _spool_fix(exc)) from None
    probe = folder / f".probe-{os.getpid()}-{threading.get_native_id()}"
    try:
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    except OSError as exc:
        os.close(fd)
        raise LedgerUnavailable(os_cause(exc), folder, _spool_fix(exc)) from None
    return fd


def _spool_fix(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space there, or pass --spool-dir (or DATAWHEEL_SPOOL_DIR) elsewhere"
    return (
        "pass --spool-dir (or set DATAWHEEL_SPOOL_DIR) to a folder this process may write, "
        "on a local disk"
    )


def scan_spool(folder: Path, log: Callable[[str], None]) -> list[tuple[Path, int]]:
    """The WAL files in ``folder``, oldest first, with the count of intact records in each;
    one that cannot be read is logged and left out (and on disk)."""
    found = []
    for path in sorted(folder.iterdir()):
        if not wal_segment(path.name):
            continue
        try:
            frames, _ = decode_frames(path.read_bytes())
        except OSError as exc:
            log(f"cannot read WAL file {path.name} ({os_cause(exc)}): not replayed; it stays "
                f"in {folder}")  # fmt: skip
            continue
        found.append((path, sum(count for _, count, _ in frames)))
    return found


def upload_wal(store: Callable[[], Store], path: Path, log: Callable[[str], None]) -> None:
    """Put the segments of the WAL file at ``path`` in ``store()``, then delete the file
    (if that fails, the segments are in all the same: a restart uploads it again, in place).
    Raises :class:`SkipWal` as :func:`wal_segments` does, and whatever the store raises."""
    target = store()  # first: while the store cannot even be opened, nothing is parsed
    for key, data in wal_segments(path, log):
        target.put_bytes(key, data)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log(f"cannot delete uploaded WAL file {path.name}: {os_cause(exc)}")


def wal_segments(path: Path, log: Callable[[str], None]) -> list[tuple[str, bytes]]:
    """``(key, Parquet bytes)`` of the segments to upload for the WAL file at ``path``.

    Raises :class:`SkipWal` if the file is gone, unreadable, or undecodable (then it is
    renamed ``NAME.corrupt``, which no ledger replays); an OSError that passes as is.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise SkipWal("deleted", gone=True) from exc
    except OSError as exc:
        if exc.errno in _TRANSIENT:
            raise
        raise SkipWal(f"unreadable ({os_cause(exc)}), left on disk", gone=False) from exc
    frames, skipped = decode_frames(raw)
    if skipped:
        log(f"skipped {skipped} bytes of a torn or corrupt write in {path.name} "
            "(an append that never returned)")  # fmt: skip
    segment = wal_segment(path.name)
    assert segment is not None
    try:
        tables = frame_tables(frames)
        return [blob for kind in KINDS for blob in encode_segments(kind, tables[kind], segment)]
    except MemoryError:
        raise
    except Exception as exc:  # intact frames that do not decode: a bug, or a foreign file
        aside = path.with_name(path.name + ".corrupt")
        with contextlib.suppress(OSError):
            path.rename(aside)
        detail = " ".join(str(exc).split())[:200]
        raise SkipWal(f"undecodable ({detail}), moved aside to {aside.name}", gone=False) from exc


class LossReport:
    """Tells the log about WAL files deleted under the ledger: the first loss at once, then
    at most one line a ``every`` seconds (losses in between are summed into the next one,
    or into the line :meth:`final` writes), so one ``rm -rf`` is one line, not one a file."""

    def __init__(self, folder: Path, log: Callable[[str], None], every: float = 60.0) -> None:
        self.folder, self.log, self.every = folder, log, every
        self.files = self.records = 0  # lost, not yet told
        self._told = -math.inf

    def add(self, records: int) -> None:
        self.files += 1
        self.records += records
        if time.monotonic() - self._told >= self.every:
            self._tell()

    def final(self) -> None:
        if self.files:
            self._tell()

    def _tell(self) -> None:
        if self._told == -math.inf:
            self.log(f"WAL files were deleted from the spool folder {self.folder} (not by the "
                     f"ledger): {self.records} records in {self.files} files are lost; new "
                     "records go to new files")  # fmt: skip
        else:
            self.log(f"{self.records} more records in {self.files} more deleted WAL files are "
                     "lost")  # fmt: skip
        self.files = self.records = 0
        self._told = time.monotonic()


def background_priority() -> None:
    """Run this thread at a lower OS priority (Linux niceness is per thread), so uploading
    never takes CPU from the threads answering requests. A thread waiting for the GIL
    sleeps, so this cannot starve the server; where it is not allowed, nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
