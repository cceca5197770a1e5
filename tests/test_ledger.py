"""The prediction ledger: durable WAL, batched Parquet uploads, spooling, crash replay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datawheel.errors import DatawheelError
from datawheel.serving.ledger import Feedback, Ledger, Prediction, read_ledger
from datawheel.storage import LocalStore, Store, StoreError

MODEL = "digits"
DAY1 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY2 = DAY1 + 86_400.0  # 2023-11-15


def _pred(i: int, ts: float = DAY1) -> Prediction:
    return Prediction(f"p{i:06d}", ts + i * 1e-3, MODEL, "v1", [i / 7, -1.5, 0.0, 1e300],
                      str(i % 10), [0.25, 0.75], 1.5 + i)  # fmt: skip


def _fb(i: int, ts: float = DAY1) -> Feedback:
    return Feedback(f"p{i:06d}", ts + 50 + i * 1e-3, MODEL, "v1", "7", str(i % 10))


def _wals(spool: Path) -> list[Path]:
    return sorted(spool.glob("wal-*.wal"))


def _ids(store: Store, kind: str = "predictions") -> list[str]:
    return [str(i) for i in read_ledger(store, model=MODEL, kind=kind)["id"]]


def _rows(store: Store, kind: str, date: str | None = None) -> list[tuple[object, ...]]:
    df = read_ledger(store, model=MODEL, kind=kind, date=date)
    return [
        tuple(v.tolist() if isinstance(v, np.ndarray) else v for v in row)
        for row in df.itertuples(index=False)
    ]


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def count(self, word: str) -> int:
        return sum(word in line for line in self.lines)


def _ledger(store: Store | Callable[[], Store], spool: Path, **kw: Any) -> Ledger:
    """A started ledger; ``store`` is a store or a store factory."""
    factory = store if not isinstance(store, Store) else lambda: store
    kw.setdefault("flush_interval", 3600.0)
    ledger = Ledger(factory, model=MODEL, spool_dir=spool, **kw)
    ledger.start()
    return ledger


def test_append_flush_read_back_partitioned_by_date(store: Store, tmp_path: Path) -> None:
    preds = [_pred(i) for i in range(5)] + [_pred(i, DAY2) for i in range(5, 8)]
    feedback = [_fb(1), _fb(6, DAY2)]
    ledger = _ledger(store, tmp_path / "spool")
    ledger.append(preds[:4])
    ledger.append([*preds[4:], *feedback])  # one batch may mix kinds and days
    assert ledger.backlog == 10
    assert ledger.flush()
    assert ledger.backlog == 0

    expected = [astuple(p) for p in preds]
    assert _rows(store, "predictions") == expected
    assert _rows(store, "feedback") == [astuple(f) for f in feedback]
    assert _rows(store, "predictions", "2023-11-15") == expected[5:]
    dates = {k.split("/")[3] for k in store.list("ledger/predictions/model=digits")}
    assert dates == {"date=2023-11-14", "date=2023-11-15"}
    assert all(k.endswith(".parquet") for k in store.list("ledger"))
    ledger.close()
    some = read_ledger(store, model=MODEL, columns=["version", "id"])
    assert list(some.columns) == ["version", "id"] and list(some.id) == [p.id for p in preds]
    assert read_ledger(store, model="other").empty
    empty = read_ledger(store, model=MODEL, date="2020-01-01")
    assert list(empty.columns) == list(Prediction.__dataclass_fields__)


def test_concurrent_appends_land_exactly_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ledger = _ledger(store, tmp_path / "spool", flush_interval=0.02)  # rotate under load

    errors: list[BaseException] = []  # an exception in a thread would only be a warning

    def worker(t: int) -> None:
        try:
            for i in range(500):
                ledger.append([_pred(t * 1000 + i)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    assert errors == []
    ids = _ids(store)
    assert len(ids) == 4000 and len(set(ids)) == 4000
    assert ledger.backlog == 0 and _wals(tmp_path / "spool") == []


class _FlakyStore(LocalStore):
    """A real local store whose puts fail with StoreError while ``down`` is set."""

    def __init__(self, root: Path, down: threading.Event) -> None:
        super().__init__(root)
        self.down = down

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.down.is_set():
            raise StoreError("injected: store unreachable")
        super().put_bytes(key, data)


@pytest.mark.parametrize("failure", ["put", "factory"])
def test_store_down_spools_then_uploads_when_back(
    failure: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spool, log, gauge = tmp_path / "spool", _Log(), list[int]()
    down = threading.Event()
    down.set()
    real: Store
    if failure == "put":  # the store opens, but every upload fails
        real = _FlakyStore(tmp_path / "store", down)
        factory: Callable[[], Store] = lambda: real  # noqa: E731
    else:  # opening the store fails: a real S3 endpoint that refuses connections
        from datawheel.storage.s3 import S3Store
        from datawheel.storage.settings import S3Settings

        server = request.getfixturevalue("seaweedfs")
        up = S3Settings(server.endpoint, server.access_key, server.secret_key)
        dead = S3Settings("127.0.0.1:9", server.access_key, server.secret_key)
        uri = f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}"
        real = S3Store.from_uri(uri, up)
        factory = lambda: S3Store.from_uri(uri, dead if down.is_set() else up)  # noqa: E731
    ledger = _ledger(factory, spool, flush_interval=0.1, log=log, on_backlog=gauge.append)
    ledger.append([_pred(i) for i in range(50)])
    ledger.append([_fb(i) for i in range(10)])
    started = time.monotonic()
    assert not ledger.flush(timeout=20)  # a failed attempt answers False, not after timeout
    assert time.monotonic() - started < 10
    time.sleep(0.5)
    assert ledger.backlog == 60 and gauge[-1] == 60
    assert _wals(spool) and real.list("ledger") == []
    assert log.count("cannot upload") == 1, log.lines  # one line per outage, not one per retry

    down.clear()
    deadline = time.monotonic() + 10
    while ledger.backlog and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.backlog == 0 and gauge[-1] == 0
    assert sorted(_ids(real)) == [f"p{i:06d}" for i in range(50)]
    assert len(_ids(real, "feedback")) == 10
    assert _wals(spool) == [] and log.count("reachable again") == 1
    ledger.close()


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from datawheel.serving.ledger import Ledger, Prediction
    from datawheel.storage import LocalStore
    store_dir, spool, interval = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    ledger = Ledger(lambda: LocalStore(store_dir), model="digits", spool_dir=spool,
                    flush_interval=interval)
    ledger.start()
    for b in range(1_000_000):
        batch = [Prediction(f"k{b:07d}-{j}", 1.7e9 + b, "digits", "v1", [0.5] * 64, "3",
                            [0.1] * 10, 1.0) for j in range(1 + b % 8)]
        ledger.append(batch)
        print(*(p.id for p in batch), sep="\\n", flush=True)
    """
)


@pytest.mark.parametrize("interval", [3600.0, 0.01])  # nothing uploaded / killed mid-upload
def test_kill_9_loses_no_acknowledged_record(interval: float, tmp_path: Path) -> None:
    store_dir, spool = tmp_path / "store", tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(store_dir), str(spool), str(interval)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    acked = [child.stdout.readline().strip() for _ in range(2000)]
    os.kill(child.pid, signal.SIGKILL)
    acked += [line.strip() for line in child.stdout if line.endswith("\n")]  # printed, so acked
    assert child.wait(timeout=10) == -signal.SIGKILL
    left = _wals(spool)
    assert left or interval < 1, "the killed process left its WAL behind"
    last = left[-1] if left else spool / f"wal-{time.time_ns():020d}-0badf00d.wal"
    with last.open("ab") as f:
        f.write(b"DWAL\x01garbage without a newline")  # a torn last write
    store, log, gauge = LocalStore(store_dir), _Log(), list[int]()
    ledger = _ledger(store, spool, log=log, on_backlog=gauge.append)
    assert log.count("replaying") == 1 and (gauge[0] > 0 or interval < 1)
    ledger.close()
    stored = Counter(_ids(store))
    assert set(acked) <= set(stored)
    assert max(stored.values()) == 1, "a replayed record was stored twice"
    assert log.count("torn or corrupt write") >= 1 and _wals(spool) == []


def test_torn_and_corrupt_frames_are_skipped(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    ledger = _ledger(LocalStore(tmp_path / "s1"), first)
    for batch in ([_pred(0), _pred(1)], [_pred(2)], [_pred(3)]):
        ledger.append(batch)
    (wal,) = _wals(first)
    frames = [b"DWAL" + f for f in wal.read_bytes().split(b"DWAL")[1:]]
    ledger.close()
    assert len(frames) == 3
    flipped = frames[1][:-1] + bytes([frames[1][-1] ^ 0xFF])  # fails its CRC
    second.mkdir()
    (second / wal.name).write_bytes(frames[0] + flipped + frames[2] + frames[0][:-9])
    store, log, gauge = LocalStore(tmp_path / "s2"), _Log(), list[int]()
    ledger = _ledger(store, second, log=log, on_backlog=gauge.append)
    assert gauge[0] == 3  # intact frames only
    ledger.close()
    assert _ids(store) == ["p000000", "p000001", "p000003"]
    assert log.count("torn or corrupt write") == 1 and _wals(second) == [], log.lines


def test_replay_after_crash_between_upload_and_delete_does_not_duplicate(
    store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    ledger = _ledger(store, spool)
    ledger.append([_pred(i) for i in range(20)])
    ledger.append([_fb(3)])
    (wal,) = _wals(spool)
    saved = wal.read_bytes()
    assert ledger.flush() and not wal.exists()
    ledger.close()
    keys = store.list("ledger")
    wal.write_bytes(saved)  # as if the process died after the upload, before the delete

    gauge = list[int]()
    again = _ledger(store, spool, on_backlog=gauge.append)
    assert gauge[0] == 21
    assert again.flush()
    again.close()
    assert store.list("ledger") == keys  # same segment keys, overwritten
    assert sorted(_ids(store)) == [f"p{i:06d}" for i in range(20)]
    assert _ids(store, "feedback") == ["p000003"]


@pytest.mark.parametrize("fsync", [False, True])
def test_close_flushes_and_leaves_no_wal(fsync: bool, tmp_path: Path) -> None:
    store, spool = LocalStore(tmp_path / "store"), tmp_path / "spool"
    ledger = _ledger(store, spool, fsync=fsync)
    ledger.append([_pred(i) for i in range(64)])
    assert _wals(spool) and ledger.backlog == 64
    ledger.close()
    assert len(_ids(store)) == 64 and ledger.backlog == 0 and _wals(spool) == []
    with pytest.raises(DatawheelError, match="not running"):
        ledger.append([_pred(99)])
    _ledger(store, spool).close()  # the spool folder's lock was released


def test_bad_records_and_shared_spool_are_refused(tmp_path: Path) -> None:
    store, spool = LocalStore(tmp_path / "store"), tmp_path / "spool"
    ledger = _ledger(store, spool)
    with pytest.raises(DatawheelError, match=r"spool folder .* in use"):
        _ledger(store, spool)
    wrong_model = Prediction("x", DAY1, "other", "v1", [1.0], "1", [1.0], 1.0)
    with pytest.raises(DatawheelError, match="model 'digits'"):
        ledger.append([_pred(1), wrong_model])
    with pytest.raises(DatawheelError, match="do not fit"):
        ledger.append([Prediction("x", DAY1, MODEL, "v1", ["a"], "1", [1.0], 1.0)])  # type: ignore[list-item]
    assert ledger.backlog == 0 and _wals(spool) == []  # nothing half-written
    ledger.close()
