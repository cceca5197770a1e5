"""The server under load and under failure, as real processes: no error under concurrency,
no answered prediction lost to kill -9, no failed request during a hot swap, and a corrupted
model refused while the old one keeps serving. (The fuzz test is in test_serve_fuzz.py.)"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import ServerProcess, copy_store, digits_rows, infer_body, variant_file

from datawheel import registry
from datawheel.serving.ledger import read_ledger
from datawheel.storage import LocalStore, open_store

ROWS, _ = digits_rows(64)


class _Client:
    """One keep-alive HTTP connection, as a load-test client thread uses."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Content-Type": "application/json"}

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        response = self.conn.getresponse()
        return response.status, response.read()

    def infer(self, i: int) -> tuple[int, dict[str, Any]]:
        row = ROWS[i % len(ROWS) : i % len(ROWS) + 1]
        status, raw = self.request(
            "POST", "/v2/models/digits/infer", json.dumps(infer_body(row)).encode()
        )
        return status, json.loads(raw)


@pytest.fixture(scope="module")
def server(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        copy_store(model_store, tmp_path_factory.mktemp("load") / "store"),
        tmp_path_factory.mktemp("spool"),
        args=["--max-rows", "32", "--max-body-bytes", "200000"],
    )
    yield srv.start()
    srv.stop()


# --- concurrency ----------------------------------------------------------------------------


def _hammer(
    port: int,
    clients: int,
    requests: int,
    stop: threading.Event | None = None,
    results: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """``clients`` threads sending ``requests`` one-row requests each (until ``stop``); the
    answers go to ``results`` as they come (a list the caller may watch), and any failure
    to the errors."""
    results = [] if results is None else results
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        c = _Client(port)
        for i in range(requests):
            if stop is not None and stop.is_set():
                return
            try:
                status, doc = c.infer(n * requests + i)
            except Exception as exc:  # a dropped connection is a failed request too
                with lock:
                    errors.append(repr(exc))
                c = _Client(port)
                continue
            with lock:
                if status == 200:
                    results.append(doc)
                else:
                    errors.append(f"{status}: {doc}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_20_clients_x_500_requests_without_errors(server: ServerProcess) -> None:
    results, errors = _hammer(server.port, 20, 500)
    assert errors == []
    assert len(results) == 10_000
    ids = [pid for doc in results for pid in doc["parameters"]["prediction_ids"]]
    assert len(set(ids)) == 10_000
    text = server.metrics()
    batch_count = next(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("datawheel_inference_batch_rows_count")
    )
    batch_rows = next(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("datawheel_inference_batch_rows_sum")
    )
    assert batch_rows / batch_count > 1.0  # concurrent requests were coalesced


# --- durability -----------------------------------------------------------------------------


def test_kill_9_loses_no_answered_prediction(model_store: str, tmp_path: Path) -> None:
    store = copy_store(model_store, tmp_path / "store")
    spool = tmp_path / "spool"
    # a long flush interval: at the kill, the answered predictions exist only in the local log
    srv = ServerProcess(store, spool, args=["--ledger-flush-seconds", "3600"]).start()
    results, errors = _hammer(srv.port, 8, 40)
    assert errors == [] and len(results) == 320
    answered = {pid for doc in results for pid in doc["parameters"]["prediction_ids"]}
    srv.stop(signal.SIGKILL)
    before = set(read_ledger(open_store(store), model="digits")["id"])
    assert not answered & before  # none of them had reached the store

    again = ServerProcess(store, spool, args=["--ledger-flush-seconds", "0.2"]).start()
    try:
        deadline = time.monotonic() + 30
        stored = read_ledger(open_store(store), model="digits")
        while time.monotonic() < deadline and not answered <= set(stored["id"]):
            time.sleep(0.2)
            stored = read_ledger(open_store(store), model="digits")
        assert answered <= set(stored["id"])
        assert stored["id"].is_unique
        # feedback for a prediction answered before the crash is still accepted
        first = sorted(answered)[0]
        assert again.post("/v2/models/digits/feedback", {"id": first, "label": "3"})[0] == 200
    finally:
        again.stop()
    feedback = read_ledger(open_store(store), model="digits", kind="feedback")
    assert list(feedback["id"]).count(first) == 1  # the store copy may hold older feedback


# --- hot swap -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["torchscript", "onnx", "onnx-int8"])
def test_hot_swap_under_load_and_a_corrupt_version_is_refused(
    model_store: str, tmp_path: Path, variant: str
) -> None:
    store_uri = copy_store(model_store, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    srv = ServerProcess(
        store_uri, tmp_path / "spool", args=["--poll-seconds", "0.2"], variant=variant
    ).start()
    stop = threading.Event()
    outcome: dict[str, Any] = {}
    answered: list[dict[str, Any]] = []  # filled by the load as the answers come

    def load() -> None:
        outcome["results"], outcome["errors"] = _hammer(srv.port, 8, 100_000, stop, answered)

    def answers_of(version: str, at_least: int, after: int = 0) -> Any:
        return lambda: sum(d["model_version"] == version for d in answered[after:]) >= at_least

    loader = threading.Thread(target=load)
    loader.start()
    try:
        _wait_for(answers_of("v1", 100))  # the load is on before the swap
        registry.promote(store, "digits", "v2", alias="champion")
        _wait_for(lambda: srv.get_json("/v2/models/digits")["versions"] == ["v2"])
        _wait_for(answers_of("v2", 100))  # and goes on through it
        # v3: a registered version whose stored file of the served variant is then
        # corrupted (without model.pt its identity is model.ts's bytes: a new version)
        v3_dir = tmp_path / "v3"
        shutil.copytree(tmp_path / "store/models/digits/versions/v2", v3_dir)
        (v3_dir / "model.pt").unlink()
        with (v3_dir / "model.ts").open("ab") as f:
            f.write(b"v3")
        v3 = registry.register(
            store, "digits", v3_dir, card=dict(registry.resolve(store, "digits", "v2").card)
        )
        assert v3.version == "v3" and not v3.reused
        key = f"models/digits/versions/{v3.version}/{variant_file(variant)}"
        store.put_bytes(key, store.get_bytes(key)[:-100] + b"\0" * 100)
        registry.promote(store, "digits", v3.version, alias="champion")
        _wait_for(
            lambda: 'datawheel_model_load_failures_total{model="digits"} 1.0' in srv.metrics()
        )
        _wait_for(answers_of("v2", 100, after=len(answered)))  # and after the refusal
        # after the refusal, the server still says it serves v2 (and answers with it, below)
        served_after_refusal = srv.get_json("/v2/models/digits")["versions"]
    finally:
        stop.set()
        loader.join()
        srv.stop()
    results, errors = outcome["results"], outcome["errors"]
    assert errors == []
    versions = [doc["model_version"] for doc in results]
    assert versions[0] == "v1" and "v2" in versions and "v3" not in versions
    assert served_after_refusal == ["v2"]
    log = srv.log()
    assert f"refused digits:{v3.version}" in log and "still serving v2" in log
    assert f"{variant_file(variant)} does not match its checksum" in log
    assert f"now serving digits:v2 as {variant}" in log
    assert len(results) > 100


def _wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_rows_in_every_answer_match_the_request(server: ServerProcess) -> None:
    """Coalesced batches give each request exactly its own rows' predictions."""
    answers: dict[int, tuple[int, bytes]] = {}  # filled by the threads, checked below
    errors: list[str] = []

    def client(n: int) -> None:
        rows = ROWS[n : n + 1 + n % 3]
        try:
            answers[n] = _Client(server.port).request(
                "POST", "/v2/models/digits/infer", json.dumps(infer_body(rows)).encode()
            )
        except Exception as exc:
            errors.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {n: status for n, (status, _) in answers.items()} == dict.fromkeys(range(30), 200)
    results = {n: json.loads(raw)["outputs"][0]["data"] for n, (_, raw) in answers.items()}
    single = {n: _Client(server.port).infer(n)[1]["outputs"][0]["data"][0] for n in range(32)}
    for n, labels in results.items():
        assert len(labels) == 1 + n % 3
        assert labels == [single[n + k] for k in range(len(labels))]
