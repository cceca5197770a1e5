"""The ledger when its spool goes wrong: WAL files or the whole folder deleted, files that
cannot be read or decoded, a full disk. It never wedges, its backlog is exact, and every
append that returned is in the store in the end."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from failing_store import FailingStore

from datawheel.errors import DatawheelError
from datawheel.serving.ledger import (
    Ledger,
    LedgerUnavailable,
    Prediction,
    PredictionBatch,
    read_ledger,
)
from datawheel.serving.ledger.wal import decode_frames, wal_name
from datawheel.storage import LocalStore, Store

MODEL = "digits"
TS = 1_700_000_000.0


def _preds(start: int, n: int) -> list[Prediction]:
    return [
        Prediction(f"p{i:06d}", TS + i, MODEL, "v1", [0.5, i / 3], str(i % 10), [0.3, 0.7], 1.0)
        for i in range(start, start + n)
    ]


def _batch(tag: str, rows: int = 32) -> PredictionBatch:
    ids = [f"{tag}-{j:03d}" for j in range(rows)]
    inputs = np.full((rows, 64), 0.25, np.float32)
    probabilities = np.full((rows, 10), 0.1, np.float32)
    return PredictionBatch(ids, TS, MODEL, "v1", inputs, ["3"] * rows, probabilities, 1.0)


def _ids(store: Store) -> set[str]:
    return {str(i) for i in read_ledger(store, model=MODEL, columns=["id"])["id"]}


def _wals(spool: Path) -> list[Path]:
    return sorted(spool.glob("wal-*.wal"))


def _on_disk(spool: Path) -> int:
    """The records in the spool's WAL files: what is truly pending."""
    return sum(c for p in _wals(spool) for _, c, _ in decode_frames(p.read_bytes())[0])


class _Log(list[str]):
    def count_of(self, words: str) -> int:
        return sum(words in line for line in self)


class _Outage:
    """A store factory: a real LocalStore behind a switch; while down, every put fails."""

    def __init__(self, root: Path) -> None:
        self.real = LocalStore(root)
        self.store = FailingStore(self.real, fail_suffix="\0 (never)")

    def set_down(self, down: bool) -> None:
        self.store.fail_suffix = ".parquet" if down else "\0 (never)"

    def __call__(self) -> Store:
        return self.store  # type: ignore[return-value]


def _ledger(factory: Callable[[], Store], spool: Path, **kw: Any) -> Ledger:
    kw.setdefault("flush_interval", 3600.0)
    ledger = Ledger(factory, model=MODEL, spool_dir=spool, **kw)
    ledger.start()
    return ledger


def test_backlog_is_appended_minus_uploaded_minus_lost(tmp_path: Path) -> None:
    spool, store, gauge, log = tmp_path / "spool", _Outage(tmp_path / "store"), [0], _Log()
    ledger = _ledger(store, spool, on_backlog=gauge.append, log=log.append)

    def check(expected: int) -> None:
        assert ledger.backlog == gauge[-1] == expected == _on_disk(spool), log

    ledger.append(_preds(0, 30))
    check(30)
    assert ledger.flush()
    check(0)  # 30 appended, 30 uploaded
    store.set_down(True)
    ledger.append(_preds(30, 20))
    assert not ledger.flush(timeout=10)  # rotated, upload failed: file A
    ledger.append(_preds(50, 15))
    assert not ledger.flush(timeout=10)  # file B
    ledger.append(_preds(65, 7))  # the current file C
    check(42)
    first = _wals(spool)[0]  # A, then B and the current file C
    first.unlink()  # file A's 20 records are gone: no longer pending, never uploadable
    assert not ledger.flush(timeout=10)
    check(22)
    assert ledger.lost == 20 and log.count_of("deleted from the spool folder") == 1
    ledger.close(timeout=10)  # the store is still down: B and C stay spooled
    check(22)

    gauge.clear()
    again = _ledger(store, spool, on_backlog=gauge.append, log=log.append)
    assert gauge == [22] and again.backlog == 22  # replayed, counted once
    store.set_down(False)
    assert again.flush()
    assert again.backlog == gauge[-1] == 0 and _wals(spool) == []
    again.close()
    assert _ids(store.real) == {f"p{i:06d}" for i in (*range(30), *range(50, 72))}


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("what", ["folder, mid-file", "folder, idle", "current file"])
def test_a_deleted_spool_is_made_again_and_later_appends_are_durable(
    what: str, fsync: bool, tmp_path: Path
) -> None:
    spool, store, log = tmp_path / "spool", LocalStore(tmp_path / "store"), _Log()
    ledger = _ledger(lambda: store, spool, log=log.append, fsync=fsync)
    ledger.append(_preds(0, 10))
    assert ledger.flush()
    if what != "folder, idle":
        ledger.append(_preds(10, 5))  # in the file being written when it is deleted
    if what == "current file":
        (current,) = _wals(spool)
        current.unlink()
    else:
        shutil.rmtree(spool)
    ledger.append(_preds(100, 3))  # returns only once it is in a linked file
    assert _on_disk(spool) == ledger.backlog == 3
    assert (spool / ".lock").exists()
    with pytest.raises(DatawheelError, match="in use by another ledger"):
        _ledger(lambda: store, spool)  # the new folder is locked again
    ledger.append(_preds(103, 4))
    assert ledger.flush() and ledger.backlog == 0
    ledger.close()
    assert _ids(store) == {f"p{i:06d}" for i in (*range(10), *range(100, 107))}
    assert ledger.lost == (0 if what == "folder, idle" else 5)
    told = log.count_of("deleted from the spool folder")
    assert told == (0 if what == "folder, idle" else 1), log  # nothing was lost when idle


def _frame(kind: int, count: int, payload: bytes) -> bytes:
    return struct.pack("<4sBIII", b"DWAL", kind, count, len(payload), zlib.crc32(payload)) + payload


def test_unreadable_and_undecodable_files_are_skipped_not_retried(tmp_path: Path) -> None:
    spool, store, log = tmp_path / "spool", LocalStore(tmp_path / "store"), _Log()
    down = _Outage(tmp_path / "unused")
    down.set_down(True)
    writer = _ledger(down, spool, log=lambda line: None)
    writer.append(_preds(0, 6))
    writer.close(timeout=10)  # the store is down: the file stays spooled
    (good,) = _wals(spool)
    (spool / wal_name()).mkdir()  # an entry that cannot be read as a file
    poison = spool / wal_name()  # intact frames (the CRC holds) that are not Arrow
    poison.write_bytes(_frame(1, 4, b"not an arrow stream"))
    good.rename(spool / wal_name())  # sorts after the two above
    gauge: list[int] = []
    ledger = _ledger(lambda: store, spool, log=log.append, on_backlog=gauge.append)
    assert gauge[0] == 10 and log.count_of("cannot read WAL file") == 1, log
    assert ledger.flush()  # the undecodable file does not hold the good one back
    assert ledger.backlog == 0 and ledger.lost == 4
    assert _ids(store) == {f"p{i:06d}" for i in range(6)}
    assert log.count_of("undecodable") == 1, log
    assert poison.with_name(poison.name + ".corrupt").exists()  # kept for a post-mortem
    ledger.close()
    assert log.count_of("undecodable") == 1 and log.count_of("cannot upload") == 0


def test_a_failed_write_is_unavailable_and_leaves_no_torn_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC after half a frame was written (injected at os.write: runs anywhere)."""
    spool, store = tmp_path / "spool", LocalStore(tmp_path / "store")
    ledger = _ledger(lambda: store, spool)
    ledger.append(_batch("a"))
    (wal,) = _wals(spool)
    real_write, fd = os.write, os.open(wal, os.O_RDONLY)
    wal_inode = os.fstat(fd).st_ino
    os.close(fd)

    def half_then_full(fd: int, data: Any) -> int:
        if os.fstat(fd).st_ino != wal_inode:
            return real_write(fd, data)
        if len(data) > 100:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(LedgerUnavailable, match="ENOSPC: No space left on device") as caught:
        ledger.append(_batch("b"))
    monkeypatch.undo()
    assert str(spool) in str(caught.value) and caught.value.spool_dir == spool
    assert isinstance(caught.value, DatawheelError)
    assert ledger.backlog == 32
    ledger.append(_batch("c"))
    frames, skipped = decode_frames(wal.read_bytes())
    assert skipped == 0 and [c for _, c, _ in frames] == [32, 32]
    ledger.close()
    assert _ids(store) == {f"{t}-{j:03d}" for t in "ac" for j in range(32)}
    with pytest.raises(LedgerUnavailable, match="closed"):
        ledger.append(_batch("d"))


def test_a_full_disk_is_unavailable_and_every_returned_append_is_kept(
    tmp_path: Path, tiny_disk: Path
) -> None:
    spool, store = tiny_disk / "spool", _Outage(tmp_path / "store")
    store.set_down(True)  # nothing uploads, so nothing frees the disk
    ledger = _ledger(store, spool, flush_interval=0.05)
    kept: list[str] = []
    refused: list[LedgerUnavailable] = []
    for b in range(200):  # ~11 KB a batch: the 1 MiB disk is full after ~90
        batch = _batch(f"b{b:03d}")
        try:
            ledger.append(batch)
            kept += batch.ids
        except LedgerUnavailable as exc:
            refused.append(exc)
        if b % 10 == 0:
            time.sleep(0.06)  # let the flusher rotate: the disk fills across files
    assert refused and kept
    assert "ENOSPC: No space left on device" in str(refused[0]) and str(spool) in str(refused[0])
    assert ledger.backlog == len(kept) == _on_disk(spool)
    assert all(decode_frames(p.read_bytes())[1] == 0 for p in _wals(spool))  # nothing torn
    store.set_down(False)  # the store is back: uploading frees the disk
    assert ledger.flush(timeout=30)
    ledger.append(_batch("after"))  # there is room again
    ledger.close()
    assert _ids(store.real) == {*kept, *_batch("after").ids}
    assert ledger.backlog == 0 and _wals(spool) == []
