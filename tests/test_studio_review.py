"""The review page's queues in-process (starlette TestClient on create_app) against a real
`datawheel serve` process on a private copy of the digits store: the uncertainty queue's
ranking (margin ascending, entropy descending, computed here independently from the
ledger), paging, labelled items leaving the queue, today's progress, 4xx for bad
parameters and bad row ids; and a dataset row corrected through the studio becoming,
through the flywheel's harvest, a dataset version whose row has the new label and whose
lineage names the parent."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from serving_support import ServerProcess, copy_store, digits_rows, infer_body
from starlette.testclient import TestClient

from datawheel.data import versions as ds
from datawheel.flywheel.harvest import harvest
from datawheel.serving.ledger.reader import read_ledger
from datawheel.storage import open_store
from datawheel.studio.config import StudioConfig
from datawheel.studio.pages_review import class_keys
from datawheel.studio.webapp import create_app

TOKEN = "studio-test-token-0123"
N = 40


@pytest.fixture(scope="module")
def stack(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("review")
    store = copy_store(model_store, tmp / "store")
    args = ["--ledger-flush-seconds", "0.2"]
    server = ServerProcess(store=store, spool_dir=tmp / "spool", args=args).start()
    # Blends of two digits: predictions the model is unsure of, in three model calls.
    a, _ = digits_rows(N, offset=200)
    b, _ = digits_rows(N, offset=700)
    w = np.linspace(0.35, 0.65, N, dtype=np.float32)[:, None]
    x = (w * a + (1 - w) * b).astype(np.float32)
    for part in np.array_split(x, 3):
        status, doc = server.post("/v2/models/digits/infer", infer_body(part))
        assert status == 200, doc
    _wait(lambda: len(read_ledger(open_store(store), model="digits")) >= N)
    yield server
    server.stop()


def _wait(ok: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "timed out waiting for the ledger"
        time.sleep(0.1)


def _client(server: ServerProcess) -> TestClient:
    config = StudioConfig(store=server.store, model="digits", serve_url=server.url, token=TOKEN)
    return TestClient(create_app(config))


def _login(client: TestClient) -> str:
    page = client.get("/login").text
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found
    csrf = found.group(1)
    answer = client.post(
        "/login", data={"token": TOKEN, "csrf": csrf, "next": "/review"}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return csrf


def _expected(store: str, by: str) -> list[tuple[str, float]]:
    """(id, score) of every unlabelled prediction, ranked here from read_ledger."""
    preds = read_ledger(open_store(store), model="digits")
    labelled = set(read_ledger(open_store(store), model="digits", kind="feedback")["id"])
    out = []
    for pid, ts, probs in zip(preds["id"], preds["ts"], preds["probabilities"], strict=True):
        if pid in labelled:
            continue
        p = sorted((float(v) for v in probs), reverse=True)
        score = p[0] - p[1] if by == "margin" else -sum(v * np.log(v) for v in p if v > 0)
        out.append((pid, score, ts))
    sign = 1 if by == "margin" else -1
    out.sort(key=lambda r: (sign * r[1], -r[2]))
    return [(pid, score) for pid, score, _ in out]


def _queue(client: TestClient, **params: Any) -> dict[str, Any]:
    answer = client.get("/api/review", params={"queue": "uncertain", **params})
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


@pytest.mark.parametrize("by", ["margin", "entropy"])
def test_ranking_matches_an_independent_computation(stack: ServerProcess, by: str) -> None:
    client = _client(stack)
    doc = _queue(client, by=by, limit=200)
    expected = _expected(stack.store, by)
    assert doc["total"] == len(expected) == N
    got = [(it["id"], it["score"]) for it in doc["items"]]
    assert sorted(i for i, _ in got) == sorted(i for i, _ in expected)
    assert np.allclose([s for _, s in got], [s for _, s in expected], atol=1e-9)
    scores = {i: s for i, s in expected}
    assert all(abs(scores[i] - s) < 1e-9 for i, s in got)  # each item's own score
    first = doc["items"][0]
    assert first["version"] == "v1" and first["predicted"] in [str(i) for i in range(10)]
    assert len(first["inputs"]) == 64 and len(first["probabilities"]) == 10
    assert first["confidence"] == pytest.approx(max(first["probabilities"]))
    page = _queue(client, by=by, limit=5, offset=5)
    assert [it["id"] for it in page["items"]] == [it["id"] for it in doc["items"][5:10]]
    assert doc["input"] == {
        "kind": "image",
        "shape": [1, 8, 8],
        "features": doc["input"]["features"],
    }


@pytest.mark.parametrize(
    "query",
    [
        "queue=nope",
        "by=confidence",
        "limit=-1",
        "limit=abc",
        "limit=100000",
        "offset=-3",
        "offset=1.5",
    ],
)
def test_bad_parameters_are_400_with_a_message(stack: ServerProcess, query: str) -> None:
    answer = _client(stack).get(f"/api/review?{query}")
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert query.split("=")[0] in message and "use" in message


def test_labelled_items_leave_the_queue_and_count_today(stack: ServerProcess) -> None:
    client = _client(stack)
    before = _queue(client, limit=200)
    csrf = _login(client)
    chosen = before["items"][:5]
    for item in chosen:
        answer = client.post(
            "/api/label", json={"id": item["id"], "label": "3"}, headers={"x-csrf-token": csrf}
        )
        assert answer.status_code == 200, answer.text
    now = _queue(client, limit=200)  # at once: the studio knows what it sent
    ids = {it["id"] for it in chosen}
    assert not ids & {it["id"] for it in now["items"]}
    assert now["total"] == before["total"] - 5
    assert now["labeled_today"] == before["labeled_today"] + 5
    store = open_store(stack.store)
    _wait(lambda: ids <= set(read_ledger(store, model="digits", kind="feedback")["id"]))
    fresh = _queue(_client(stack), limit=200)  # a new studio: only the ledger says so
    assert not ids & {it["id"] for it in fresh["items"]}
    assert fresh["total"] == len(_expected(stack.store, "margin"))
    feedback = read_ledger(store, model="digits", kind="feedback")
    today = np.floor(time.time() / 86400) * 86400
    assert fresh["labeled_today"] == feedback[feedback["ts"] >= today]["id"].nunique()
    # a label changed later (U in the page, then another key) is one more ledger row
    answer = client.post(
        "/api/label", json={"id": chosen[0]["id"], "label": "5"}, headers={"x-csrf-token": csrf}
    )
    assert answer.status_code == 200 and answer.json()["label"] == "5"


def test_bad_row_ids_and_labels_are_refused(stack: ServerProcess) -> None:
    client = _client(stack)
    csrf = _login(client)
    version = ds.get_version(open_store(stack.store), "digits").version
    cases = {
        "row:digits:nothex:1": 400,
        "row:digits": 400,
        f"row:digits:{version}:999999": 400,
        f"row:other:{version}:1": 400,
        "row:digits:0123456789abcdef:1": 404,
    }
    for row, status in cases.items():
        answer = client.post(
            "/api/label", json={"id": row, "label": "1"}, headers={"x-csrf-token": csrf}
        )
        assert answer.status_code == status, (row, answer.text)
        assert answer.json()["error"]
    answer = client.post(
        "/api/label",
        json={"id": f"row:digits:{version}:3", "label": "ten"},
        headers={"x-csrf-token": csrf},
    )
    assert answer.status_code == 400 and "classes" in answer.json()["error"]


def test_a_corrected_row_becomes_a_dataset_version_through_harvest(stack: ServerProcess) -> None:
    client = _client(stack)
    csrf = _login(client)
    answer = client.get("/api/review", params={"queue": "issues", "limit": 50})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["total"] > 0 and doc["items"], doc
    qualities = [it["quality"] for it in doc["items"]]
    assert qualities == sorted(qualities)  # lowest label quality first
    item = doc["items"][0]
    assert item["given"] != item["predicted"] or item["quality"] < 0.5
    store = open_store(stack.store)
    parent = ds.get_version(store, "digits")
    assert item["id"].startswith(f"row:digits:{parent.version}:")
    new_label = (
        item["predicted"]
        if item["predicted"] != item["given"]
        else str((int(item["given"]) + 1) % 10)
    )
    answer = client.post(
        "/api/label", json={"id": item["id"], "label": new_label}, headers={"x-csrf-token": csrf}
    )
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert sent["label"] == new_label and sent["given"] == item["given"]
    again = client.get("/api/review", params={"queue": "issues", "limit": 200}).json()
    assert item["id"] not in {it["id"] for it in again["items"]}
    assert again["total"] == doc["total"] - 1
    pid = sent["prediction_id"]
    _wait(lambda: pid in set(read_ledger(store, model="digits", kind="feedback")["id"]))
    _wait(lambda: pid in set(read_ledger(store, model="digits")["id"]))
    result = harvest(store, "digits", reason="studio review test")
    assert result.created and result.parent == parent.version, result.message
    dv = ds.get_version(store, "digits")
    assert dv.version == result.version and dv.manifest["parent"] == parent.version
    assert dv.manifest["lineage"]["parent"] == parent.version
    assert dv.manifest["lineage"]["kind"] == "harvest"
    index = int(item["id"].rsplit(":", 1)[1])
    frame = ds.read_frame(store, dv)
    before = ds.read_frame(store, parent)
    assert str(before[parent.label].iloc[index]) == item["given"]
    assert str(frame[dv.label].iloc[index]) == new_label  # relabelled in place
    assert dv.manifest["lineage"]["relabelled"] >= 1
    # a new studio (no memory) still keeps the corrected row out: the ledger has it
    later = _client(stack).get("/api/review", params={"queue": "issues", "limit": 200}).json()
    assert later["dataset"]["version"] == dv.version
    assert all(not it["id"].endswith(f":{index}") for it in later["items"])


def test_the_page_renders_with_the_key_map(stack: ServerProcess) -> None:
    page = _client(stack).get("/review?queue=issues&by=entropy")
    assert page.status_code == 200
    text = page.text
    for needle in (
        'id="queue-size"',
        'id="labeled-today"',
        'id="review-status"',
        "/static/review.js",
    ):
        assert needle in text
    assert 'data-queue="issues"' in text and 'data-by="entropy"' in text
    assert text.count('<tr data-key="') == 10 and "<script>" not in text.split("</head>")[1]
    bad = _client(stack).get("/review?queue=<script>")
    assert bad.status_code == 200 and 'data-queue="uncertain"' in bad.text


def test_class_keys_are_digits_or_letters_without_s_and_u() -> None:
    assert class_keys([str(i) for i in range(10)]) == {str(i): str(i) for i in range(10)}
    assert class_keys(["cat", "dog"]) == {"cat": "a", "dog": "b"}
    many = class_keys([f"c{i}" for i in range(30)])
    assert len(many) == 24 and not {"s", "u"} & set(many.values())
    assert class_keys(["1", "12"]) == {"1": "a", "12": "b"}


def test_tabular_inputs_show_categories_as_text() -> None:
    from datawheel.flywheel.rows import ServedVersion
    from datawheel.studio.review_queue import _inputs

    sv = ServedVersion("v1", ["n", "c"], ["a", "b"], categories={"c": ["x", "y"]})
    assert _inputs(sv, [1.5, 2.0]) == [1.5, "y"]
    assert _inputs(sv, [float("nan"), 0.0]) == [None, None]  # missing; code 0 is "other"
    assert _inputs(ServedVersion("v9"), [0.25, 1.0]) == [0.25, 1.0]  # unregistered: as sent
