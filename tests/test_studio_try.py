"""The studio's try page in-process (starlette TestClient on create_app) against a real
`datawheel serve` process on a private copy of the digits store, and a small tabular model
(trained by the pipeline's own steps) with a feature named ``<script>alert(1)</script>``:
the canvas page, the form built from the served schema (escaped), /api/predict answering
what the model file answers and landing in the ledger, 4xx for bad bodies and a missing
server, and /api/model.onnx serving the registry's bytes of the variant the server runs."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_support import (
    ServerProcess,
    copy_store,
    digits_rows,
    reference_probabilities,
    rewrite_card,
    table_model_store,
)
from starlette.testclient import TestClient

from datawheel import registry
from datawheel.serving.ledger.reader import read_ledger
from datawheel.storage import LocalStore
from datawheel.studio.config import StudioConfig
from datawheel.studio.model_files import edge_file
from datawheel.studio.pages_try import build_form
from datawheel.studio.webapp import create_app

TOKEN = "studio-test-token-0123"
XSS = "<script>alert(1)</script>"
FLUSH = ["--ledger-flush-seconds", "0.2"]


def _client(store: str, model: str = "digits", serve_url: str | None = None) -> TestClient:
    config = StudioConfig(store=store, model=model, serve_url=serve_url, token=TOKEN)
    return TestClient(create_app(config))


def _csrf(client: TestClient) -> str:
    page = client.get("/try").text
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "the page carries no csrf-token"
    return found.group(1)


def _config(page: str) -> dict[str, Any]:
    found = re.search(r'id="try-config" data-config="([^"]+)"', page)
    assert found, "the page carries no try-config"
    doc: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return doc


def _root(store: str) -> Path:
    return Path(store.removeprefix("file://"))


@pytest.fixture(scope="module")
def digits(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("try-digits")
    store = copy_store(model_store, tmp / "store")
    server = ServerProcess(store=store, spool_dir=tmp / "spool", args=FLUSH).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(digits: ServerProcess) -> Iterator[TestClient]:
    with _client(digits.store, serve_url=digits.url) as c:
        c.headers["x-csrf-token"] = _csrf(c)
        yield c


def test_the_digits_page_has_a_canvas_an_upload_and_the_served_version(client: TestClient) -> None:
    answer = client.get("/try")
    assert answer.status_code == 200
    assert "'self'" in answer.headers["content-security-policy"]
    page = answer.text
    assert '<canvas id="draw" width="256" height="256"' in page
    assert '<label for="upload">' in page and 'type="file" accept="image/*"' in page
    assert 'href="/login?next=/try"' in page  # not logged in: correcting needs the login
    assert "<style" not in page and "style=" not in page and "<script>" not in page
    config = _config(page)
    assert config["kind"] == "image" and config["image_shape"] == [1, 8, 8]
    assert config["classes"] == [str(i) for i in range(10)]
    assert config["version"] == "v1" and config["served_variant"] == "torchscript"
    assert config["edge_file"] == "model.onnx"
    for path in (
        "/static/try.js",
        "/static/try.css",
        "/static/vendor/onnxruntime-web/ort.wasm.min.js",
    ):
        assert client.get(path).status_code == 200, path


def test_predict_answers_what_the_model_file_answers_and_lands_in_the_ledger(
    client: TestClient, digits: ServerProcess
) -> None:
    rows, _ = digits_rows(3, offset=40)
    answer = client.post("/api/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    expected = reference_probabilities(digits.store, rows, "v1", "torchscript")
    classes = [str(i) for i in range(10)]
    assert doc["classes"] == classes and doc["version"] == "v1"
    assert doc["variant"] == "torchscript" and doc["latency_ms"] > 0
    got = np.asarray([[p["probabilities"][c] for c in classes] for p in doc["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [p["label"] for p in doc["predictions"]] == [str(i) for i in expected.argmax(1)]
    assert doc["id"] == doc["predictions"][0]["id"] and doc["label"] == str(expected[0].argmax())
    ids = [p["id"] for p in doc["predictions"]]
    deadline = time.monotonic() + 30
    ledger = read_ledger(LocalStore(_root(digits.store)), model="digits")
    while not set(ids) <= set(ledger["id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        ledger = read_ledger(LocalStore(_root(digits.store)), model="digits")
    stored = ledger.set_index("id").loc[ids]
    assert list(stored["label"]) == [p["label"] for p in doc["predictions"]]
    np.testing.assert_allclose(np.stack(list(stored["inputs"])), rows, atol=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rows": []},
        {"rows": "1,2,3"},
        {"rows": [[0.5] * 63]},
        {"rows": [["a"] * 64]},
        {"rows": [[True] * 64]},
        "1e400",  # parsed as infinity
        "NaN",
        {"rows": [[0.0] * 64] * 33},
        {"rows": [[0.0] * 64], "inputs": {}},
        {"inputs": {"px_0": 1.0}},  # the digits model takes pixels
        [1, 2],
    ],
    ids=lambda b: json.dumps(b)[:40],
)
def test_bad_bodies_are_400_with_a_message(client: TestClient, body: Any) -> None:
    if isinstance(body, str):  # a number JSON cannot carry, spelled out
        body = '{"rows": [[' + ", ".join([body] * 64) + "]]}"
    raw = body if isinstance(body, str) else json.dumps(body)
    answer = client.post("/api/predict", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert len(answer.json()["error"]) > 20


def test_not_json_and_no_csrf_are_refused(client: TestClient) -> None:
    answer = client.post(
        "/api/predict", content=b"{rows", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    answer = client.post("/api/predict", content=b"rows=1", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    answer = client.post(
        "/api/predict", json={"rows": [[0.0] * 64]}, headers={"x-csrf-token": "forged"}
    )
    assert answer.status_code == 403 and "CSRF" in answer.json()["error"]


def test_model_onnx_is_the_registry_file(client: TestClient, digits: ServerProcess) -> None:
    answer = client.get("/api/model.onnx")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    assert (
        answer.headers["x-model-version"] == "v1" and answer.headers["x-model-file"] == "model.onnx"
    )
    assert answer.headers["x-served-variant"] == "torchscript"
    path = _root(digits.store) / "models/digits/versions/v1/model.onnx"
    assert answer.content == path.read_bytes()


def test_an_int8_server_gets_the_int8_file_in_the_browser(model_store: str, tmp_path: Path) -> None:
    store = copy_store(model_store, tmp_path / "store")
    server = ServerProcess(store=store, spool_dir=tmp_path / "spool", variant="onnx-int8").start()
    try:
        with _client(store, serve_url=server.url) as c:
            assert _config(c.get("/try").text)["edge_file"] == "model_int8.onnx"
            answer = c.get("/api/model.onnx")
    finally:
        server.stop()
    assert answer.status_code == 200
    assert answer.headers["x-model-file"] == "model_int8.onnx"
    assert answer.headers["x-model-variant"] == answer.headers["x-served-variant"] == "onnx-int8"
    path = _root(store) / "models/digits/versions/v1/model_int8.onnx"
    assert answer.content == path.read_bytes()


def test_the_edge_file_is_the_variant_the_server_runs() -> None:
    files = {f: "x" for f in ("model.ts", "model.onnx", "model_int8.onnx", "student.onnx")}
    card = {"version": "v1", "files": files}
    assert edge_file(card, "onnx-int8") is not None
    assert edge_file(card, "onnx-int8").file == "model_int8.onnx"  # type: ignore[union-attr]
    assert edge_file(card, "student").file == "student.onnx"  # type: ignore[union-attr]
    full = edge_file(card, "torchscript")
    assert full is not None and full.file == "model.onnx" and not full.same_as_server
    assert edge_file({"files": {"model.ts": "x"}}, "torchscript") is None


def test_without_a_server_the_page_says_how_and_predict_is_409(
    model_store: str, tmp_path: Path
) -> None:
    store = copy_store(model_store, tmp_path / "store")
    with _client(store) as c:
        page = c.get("/try")
        assert page.status_code == 200 and '<canvas id="draw"' in page.text
        assert "--serve-url" in page.text
        assert _config(page.text)["version"] == "v1"  # the champion, from the registry
        answer = c.post(
            "/api/predict", json={"rows": [[0.0] * 64]}, headers={"x-csrf-token": _csrf(c)}
        )
        assert answer.status_code == 409 and "--serve-url" in answer.json()["error"]
        assert (
            c.get("/api/model.onnx").content
            == (_root(store) / "models/digits/versions/v1/model.onnx").read_bytes()
        )
        # a corrupt copy is refused, never sent to the browser
        (_root(store) / "models/digits/versions/v2/model.onnx").write_bytes(b"not a model")
        registry.promote(LocalStore(_root(store)), "digits", "v2", alias="champion")
        answer = c.get("/api/model.onnx")
        assert answer.status_code == 503 and "SHA-256" in answer.json()["error"]
        # a version without an ONNX file: 404 that says so
        rewrite_card(store, "v2", lambda card: card["files"].pop("model.onnx"))
        answer = c.get("/api/model.onnx")
        assert answer.status_code == 404 and "no ONNX file" in answer.json()["error"]


# --- a tabular model ------------------------------------------------------------------------


def tabular_store(root: Path) -> str:
    """A 3-class table with a numeric feature named like a script and a categorical one."""
    rng = np.random.default_rng(0)
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], 240)
    bill = rng.normal(44.0, 5.0, 240).round(1)
    species = np.where(island == "Biscoe", "Gentoo", np.where(bill > 44, "Chinstrap", "Adelie"))
    frame = pd.DataFrame({XSS: bill, "island": island, "species": species})
    return table_model_store(root, frame, "xss", "species", epochs=3)


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("try-tabular")
    store = tabular_store(tmp / "store")
    server = ServerProcess(store=store, spool_dir=tmp / "spool", model="xss", args=FLUSH).start()
    yield server
    server.stop()


def test_the_tabular_form_comes_from_the_schema_and_escapes_names(tabular: ServerProcess) -> None:
    with _client(tabular.store, "xss", tabular.url) as c:
        page = c.get("/try").text
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<form id="tabular-form"' in page and '<canvas id="draw"' not in page
    for i in (0, 1):  # every input has its label
        assert f'<label for="feature-{i}">' in page and f'id="feature-{i}"' in page
    select = re.search(r'<select id="feature-1"[^>]*>(.*?)</select>', page, re.S)
    assert select is not None
    options = re.findall(r'<option value="([^"]*)">', select.group(1))
    assert sorted(options) == ["", "Biscoe", "Dream", "Torgersen"]  # "": missing or other
    assert re.search(r'id="feature-0"[^>]*type="number"[^>]*min="25.1" max="57.8"', page)
    assert "training range" in page
    config = _config(page)
    assert config["kind"] == "tabular" and [f["name"] for f in config["schema"]] == [XSS, "island"]


def test_the_form_without_a_server_comes_from_the_transform(tabular: ServerProcess) -> None:
    with _client(tabular.store, "xss") as c:
        page = c.get("/try").text
    assert XSS not in page and '<label for="feature-0">&lt;script&gt;' in page
    assert [f["name"] for f in _config(page)["schema"]] == [XSS, "island"]


def test_named_inputs_predict_through_the_server(tabular: ServerProcess) -> None:
    with _client(tabular.store, "xss", tabular.url) as c:
        c.headers["x-csrf-token"] = _csrf(c)
        answer = c.post("/api/predict", json={"inputs": {XSS: 50.0, "island": "Dream"}})
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert sorted(doc["classes"]) == ["Adelie", "Chinstrap", "Gentoo"]
        assert abs(sum(doc["probabilities"].values()) - 1) < 1e-5
        assert doc["label"] == max(doc["probabilities"], key=doc["probabilities"].get)
        missing = c.post("/api/predict", json={"inputs": {"island": None}})
        assert missing.status_code == 200, missing.text  # missing values are imputed
        for body in (
            {"inputs": {"nope": 1}},
            {"inputs": {XSS: "fifty"}},
            {"inputs": {"island": 3}},
            {"inputs": [1]},
            {"rows": [[1.0, 1.0]]},  # categorical features: no tensor
        ):
            bad = c.post("/api/predict", json=body)
            assert bad.status_code == 400 and bad.json()["error"], body


def test_build_form_ranges_defaults_and_categories() -> None:
    fields = build_form(
        [
            {"name": "a", "type": "numeric", "range": [0.0, 10.0]},
            {"name": "b", "type": "numeric", "range": [None, None]},
            {"name": "c", "type": "categorical", "categories": ["x", "y"]},
        ],
        {"a": {"mean": 2.5}},
    )
    assert [(f.name, f.kind, f.input_id) for f in fields] == [
        ("a", "numeric", "feature-0"),
        ("b", "numeric", "feature-1"),
        ("c", "categorical", "feature-2"),
    ]
    assert (fields[0].low, fields[0].high, fields[0].default) == (0.0, 10.0, "2.5")
    assert fields[1].default == "" and fields[2].categories == ["x", "y"]
    assert build_form([{"name": "d", "type": "numeric", "range": [0, 4]}])[0].default == "2"
