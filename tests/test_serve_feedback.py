"""Feedback on any replica: two real servers on one store, forged ids, a failing ledger.

Replicas behind one Service share nothing but the store, so feedback for a prediction one
made lands on another: the id itself says the version and predicted class, signed with a
key they share. A label is in the ledger before it is answered: a failed append is a 503
that records nothing, so the retry lands, once.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from serving_support import ServerProcess, copy_store, digits_rows, free_port, infer_body

from datawheel.serving.ids import KEY_ENV, PredictionIds
from datawheel.serving.ledger import Feedback, PredictionBatch, read_ledger
from datawheel.serving.server import ServeConfig, build_app
from datawheel.serving.state import Serving
from datawheel.storage import open_store


def _predict(srv: ServerProcess, rows: np.ndarray) -> list[tuple[str, str, str]]:
    """(id, version, predicted label) of each row, as the client sees them."""
    status, doc = srv.post("/v2/models/digits/infer", infer_body(rows))
    assert status == 200, doc
    labels = doc["outputs"][0]["data"]
    ids = doc["parameters"]["prediction_ids"]
    return [(pid, doc["model_version"], label) for pid, label in zip(ids, labels, strict=True)]


def _metric(text: str, prefix: str) -> float:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_feedback_for_one_replicas_ids_lands_on_another(model_store: str, tmp_path: Path) -> None:
    store = copy_store(model_store, tmp_path / "store")
    args = ["--ledger-flush-seconds", "0.2"]
    # no key configured: the first replica creates it in the store, the other reads it;
    # b serves another version, so it learns v1's classes from the registry, and another
    # variant of it (ONNX int8 where a runs TorchScript)
    a = ServerProcess(store, tmp_path / "spool-a", args=args).start()
    b = ServerProcess(
        store, tmp_path / "spool-b", model="digits:v2", args=args, variant="onnx-int8"
    ).start()
    try:
        x, y = digits_rows(96, offset=200)
        on_a = [p for k in range(0, 80, 8) for p in _predict(a, x[k : k + 8])]
        on_b = _predict(b, x[80:96])
        truth = {pid: str(t) for (pid, _, _), t in zip(on_a + on_b, y, strict=True)}
        accepted_on_b = 0
        for pid, version, predicted in on_a:
            status, fb = b.post("/v2/models/digits/feedback", {"id": pid, "label": truth[pid]})
            assert status == 200, fb
            assert (fb["version"], fb["predicted"], fb["duplicate"]) == (version, predicted, False)
            assert fb["correct"] == (predicted == truth[pid])
            accepted_on_b += 1
        for pid, version, predicted in on_b:  # and the other way round
            status, fb = a.post("/v2/models/digits/feedback", {"id": pid, "label": truth[pid]})
            assert status == 200 and (fb["version"], fb["predicted"]) == (version, predicted)
        # a repeat on the same replica is idempotent
        pid = on_a[0][0]
        status, fb = b.post("/v2/models/digits/feedback", {"id": pid, "label": truth[pid]})
        assert status == 200 and fb["duplicate"] is True
        # live accuracy of v1 on b, over the labels b received for a's predictions
        expected = np.mean([predicted == truth[pid] for pid, _, predicted in on_a])
        text = b.metrics()
        live = 'datawheel_live_accuracy_ratio{model="digits",version="v1"}'
        assert abs(_metric(text, live) - expected) < 1e-9
        total = sum(
            _metric(text, f'datawheel_feedback_total{{model="digits",outcome="{o}",version="v1"}}')
            for o in ("correct", "incorrect")
            if f'outcome="{o}",version="v1"' in text
        )
        assert total == len(on_a)
    finally:
        a.stop()  # SIGTERM: both flush their ledgers before exiting
        b.stop()
    feedback = read_ledger(open_store(store), model="digits", kind="feedback")
    assert feedback["id"].is_unique  # the repeat was not written again
    stored = {
        row.id: (row.version, row.predicted, row.label) for row in feedback.itertuples(index=False)
    }
    expected_rows = {pid: (v, p, truth[pid]) for pid, v, p in on_a + on_b}
    assert stored == expected_rows
    predictions = read_ledger(open_store(store), model="digits", columns=["id", "variant"])
    assert set(truth) <= set(predictions["id"])
    variant_of = dict(zip(predictions["id"], predictions["variant"], strict=True))
    assert {variant_of[pid] for pid, *_ in on_a} == {"torchscript"}  # which file answered
    assert {variant_of[pid] for pid, *_ in on_b} == {"onnx-int8"}
    found_from_a = sum(1 for pid, *_ in on_a if pid in stored)
    print(
        f"\nids issued on A: {len(on_a)}, feedback for them accepted on B: {accepted_on_b}, "
        f"labels found in the ledger: {found_from_a} (+{len(on_b)} for B's ids sent to A)"
    )
    assert len(on_a) == accepted_on_b == found_from_a == 80


def test_a_replica_with_another_key_refuses_the_ids(model_store: str, tmp_path: Path) -> None:
    store = copy_store(model_store, tmp_path / "store")
    configured = {KEY_ENV: "a-shared-secret-from-a-kubernetes-secret"}
    c = ServerProcess(store, tmp_path / "spool-c", env=configured).start()
    d = ServerProcess(store, tmp_path / "spool-d").start()  # the store's key: not c's
    try:
        x, _ = digits_rows(2)
        (pid, _, _), (other, _, _) = _predict(c, x)
        status, err = d.post("/v2/models/digits/feedback", {"id": pid, "label": "1"})
        assert status == 404 and "did not issue it" in err["error"]
        assert c.post("/v2/models/digits/feedback", {"id": pid, "label": "1"})[0] == 200
        assert PredictionIds("digits", configured[KEY_ENV].encode()).verify(other) is not None
    finally:
        c.stop()
        d.stop()
    assert f"${KEY_ENV}" in c.log()  # the start-up line says where the key came from


# --- in-process: the real app on a real socket, with the ledger's append watched ---------------


class _FailingAppend:
    """Wraps ``Ledger.append``: keeps what it was sent, fails the next ``fail`` calls."""

    def __init__(self, serving: Serving) -> None:
        self.real = serving.ledger.append
        self.sent: list[Sequence[Any] | PredictionBatch] = []
        self.fail = 0

    def __call__(self, records: Sequence[Any] | PredictionBatch) -> None:
        self.sent.append(records)
        if self.fail:
            self.fail -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real(records)


@contextmanager
def _in_process(
    store: str, spool: Path, variant: str = "auto"
) -> Iterator[tuple[ServerProcess, Serving]]:
    """build_app's real app under uvicorn on a free port, in a thread of this process."""
    port = free_port()
    config = ServeConfig(
        model="digits", store=store, spool_dir=str(spool), port=port, variant=variant
    )
    app, serving = build_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield ServerProcess(store, spool, port=port), serving  # its HTTP helpers, no process
    finally:
        server.should_exit = True
        thread.join(30)


def test_tampered_and_forged_ids_get_a_json_404(model_store: str, tmp_path: Path) -> None:
    store = copy_store(model_store, tmp_path / "store")
    with _in_process(store, tmp_path / "spool") as (srv, _):
        x, _ = digits_rows(1)
        ((pid, version, predicted),) = _predict(srv, x)
        head, tag = pid.rsplit(".", 1)
        v, ms, index, nonce = head.split(".")
        other_class = str((int(index) + 1) % 10)
        forged = PredictionIds("digits", b"not the servers' key, 32 bytes..").issue(
            version, time.time(), [int(index)]
        )[0]
        for bad in (
            f"{v}.{ms}.{other_class}.{nonce}.{tag}",  # claims another predicted class
            f"v9.{ms}.{index}.{nonce}.{tag}",  # claims another version
            f"{head}.{tag[:-1]}{'0' if tag[-1] != '0' else '1'}",  # a changed tag
            forged,
            "0123456789abcdef" * 2,  # the earlier format, not known here
            "x" * 5000,
        ):
            status, err = srv.post("/v2/models/digits/feedback", {"id": bad, "label": "1"})
            assert status == 404 and "did not issue it" in err["error"], (bad, err)
            assert len(err["error"]) < 500  # a long id is cut in the message
        status, fb = srv.post("/v2/models/digits/feedback", {"id": pid, "label": "1"})
        assert status == 200 and fb["predicted"] == predicted
    feedback = read_ledger(open_store(store), model="digits", kind="feedback")
    assert list(feedback["id"]) == [pid]


@pytest.mark.parametrize("variant", ["torchscript", "onnx", "onnx-int8"])
def test_a_failing_ledger_append_answers_503_and_the_retry_lands_once(
    model_store: str, tmp_path: Path, variant: str
) -> None:
    store = copy_store(model_store, tmp_path / "store")
    with _in_process(store, tmp_path / "spool", variant) as (srv, serving):
        append = _FailingAppend(serving)
        serving.ledger.append = append  # type: ignore[method-assign]
        x, _ = digits_rows(6)
        answered = _predict(srv, x[:3])
        pid, version, predicted = answered[0]

        append.fail = 1
        status, err = srv.post("/v2/models/digits/feedback", {"id": pid, "label": "7"})
        assert status == 503 and "ENOSPC" in err["error"] and "No space left" in err["error"]
        records = append.sent[-1]  # what the ledger was asked to write
        assert not isinstance(records, PredictionBatch)
        (sent,) = records
        assert isinstance(sent, Feedback)
        assert (sent.id, sent.model, sent.version, sent.label, sent.predicted) == (
            pid,
            "digits",
            version,
            "7",
            predicted,
        )
        calls = len(append.sent)
        status, fb = srv.post("/v2/models/digits/feedback", {"id": pid, "label": "7"})
        assert status == 200 and fb["duplicate"] is False  # the failure was not remembered
        assert len(append.sent) == calls + 1
        status, fb = srv.post("/v2/models/digits/feedback", {"id": pid, "label": "7"})
        assert status == 200 and fb["duplicate"] is True
        assert len(append.sent) == calls + 1  # a repeat writes nothing

        append.fail = 1  # a prediction whose rows cannot be written is never answered 200
        status, err = srv.post("/v2/models/digits/infer", infer_body(x[3:6]))
        assert status == 503 and "ENOSPC" in err["error"]
        batch = append.sent[-1]
        assert isinstance(batch, PredictionBatch) and len(batch.ids) == 3
        assert batch.variant == variant
        refused = set(batch.ids)
        answered += _predict(srv, x[3:6])
        assert 'code="503"' in srv.metrics()
    feedback = read_ledger(open_store(store), model="digits", kind="feedback")
    assert list(feedback["id"]) == [pid] and list(feedback["label"]) == ["7"]
    rows = read_ledger(open_store(store), model="digits", columns=["id", "variant"])
    stored = set(rows["id"])
    assert {p for p, _, _ in answered} <= stored and not refused & stored
    assert set(rows["variant"]) == {variant}
