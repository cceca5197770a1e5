"""`datawheel serve` as a real process when its spool folder goes wrong: deleted while
serving, or out of space. Every prediction answered 200 still reaches the store."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from serving_support import ServerProcess, copy_store, digits_rows, infer_body

from datawheel.serving.ledger import read_ledger
from datawheel.storage import open_store

ROWS, _ = digits_rows(64)


def _stored_ids(store: str) -> set[str]:
    return {str(i) for i in read_ledger(open_store(store), model="digits", columns=["id"])["id"]}


def _gauge(srv: ServerProcess, name: str = "datawheel_ledger_backlog_records") -> float:
    for line in srv.metrics().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def _backlog(srv: ServerProcess) -> float:
    return _gauge(srv)


class _Load:
    """Client threads predicting until stopped; each answer kept with the time it was sent."""

    def __init__(self, srv: ServerProcess, clients: int = 4) -> None:
        self.srv = srv
        self.answers: list[tuple[float, int, dict[str, Any]]] = []  # sent at, status, body
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            row = ROWS[(n * 7 + i) % len(ROWS)][None, :]
            sent = time.monotonic()
            try:
                status, doc = self.srv.post("/v2/models/digits/infer", infer_body(row))
            except Exception as exc:  # a dropped connection is a failed request too
                with self._lock:
                    self.errors.append(repr(exc))
                continue
            with self._lock:
                self.answers.append((sent, status, doc))

    def ids(self, sent_after: float = 0.0) -> set[str]:
        with self._lock:
            answers = list(self.answers)
        return {
            pid
            for sent, status, doc in answers
            if status == 200 and sent > sent_after
            for pid in doc["parameters"]["prediction_ids"]
        }

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.answers) >= count, (len(self.answers), self.errors)


def test_deleting_the_spool_while_serving_loses_nothing_answered_after(
    model_store: str, tmp_path: Path
) -> None:
    store, spool = copy_store(model_store, tmp_path / "store"), tmp_path / "spool"
    srv = ServerProcess(store, spool, args=["--ledger-flush-seconds", "0.2"]).start()
    try:
        with _Load(srv) as load:
            load.wait_for(200)
            while spool.exists():  # as `rm -rf`: the server may write a new file meanwhile
                shutil.rmtree(spool, ignore_errors=True)
            deleted = time.monotonic()
            load.wait_for(len(load.answers) + 400)  # several flush intervals of traffic
            time.sleep(0.5)
        after = load.ids(sent_after=deleted)
        assert len(after) >= 400 and load.errors == []
        assert {status for _, status, _ in load.answers} == {200}
        # the flusher carries on while the server serves: no restart, no shutdown flush
        deadline = time.monotonic() + 30
        while not after <= (stored := _stored_ids(store)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert after <= stored, f"{len(after - stored)} of {len(after)} never reached the store"
        assert (spool / ".lock").exists()  # the folder was made again, and locked
        deadline = time.monotonic() + 10
        while _backlog(srv) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _backlog(srv) == 0  # records in the deleted files are not pending forever
        # ... they are counted lost: exactly the answered predictions that never got stored
        lost = load.ids() - _stored_ids(store)
        assert _gauge(srv, "datawheel_ledger_lost_records_total") == len(lost)
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
    log = srv.log_path.read_text() if srv.log_path else ""
    assert log.count("deleted from the spool folder") == 1, log[-3000:]
    assert "cannot upload" not in log, log[-3000:]


# --- a full spool disk: a real 1 MiB tmpfs ---------------------------------------------------


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with one file until about ``leave`` bytes are free."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        chunk = b"\0" * 4096
        try:
            while shutil.disk_usage(disk).free > leave:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_spool_disk_answers_503_and_every_200_is_stored(
    model_store: str, tmp_path: Path, tiny_disk: Path
) -> None:
    store, spool = copy_store(model_store, tmp_path / "store"), tiny_disk / "spool"
    # nothing is uploaded (so nothing frees the disk) until the final flush
    srv = ServerProcess(store, spool, args=["--ledger-flush-seconds", "3600"]).start()
    try:
        rows = ROWS[:32]
        ok: set[str] = set()
        status, doc = srv.post("/v2/models/digits/infer", infer_body(rows))
        assert status == 200
        ok |= set(doc["parameters"]["prediction_ids"])
        filler = _fill(tiny_disk, leave=48 * 1024)
        refused: list[dict[str, Any]] = []
        for _ in range(40):  # ~11 KB per answer: the disk is full within a few
            status, doc = srv.post("/v2/models/digits/infer", infer_body(rows))
            if status == 200:
                ok |= set(doc["parameters"]["prediction_ids"])
            else:
                assert status == 503, (status, doc)
                refused.append(doc)
        assert refused, "the disk never filled up"
        error = refused[0]["error"]
        assert "No space left on device" in error and str(spool) in error, error
        assert srv.get_json("/v2/health/live")["live"] is True
        filler.unlink()  # space returns: answers are 200 again
        for _ in range(5):
            status, doc = srv.post("/v2/models/digits/infer", infer_body(rows[:1]))
            assert status == 200, doc
            ok |= set(doc["parameters"]["prediction_ids"])
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)  # the final flush uploads the spool
    stored = _stored_ids(store)
    assert ok <= stored, f"{len(ok - stored)} answered predictions are not in the ledger"
    assert len(json.dumps(refused[0])) < 1000
