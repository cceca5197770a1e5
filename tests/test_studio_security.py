"""The studio's security, studio-wide, in process (Starlette's TestClient on a real store):
CSP and security headers on every answer, the token session and CSRF guard, safe redirects,
4xx JSON for bad requests, the default bind address, and data rendered as text (a column
named ``<script>alert(1)</script>`` and a class label with HTML in it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flywheel_store_support import build
from markupsafe import escape
from starlette.testclient import TestClient

from datawheel.storage import LocalStore
from datawheel.studio.config import StudioConfig
from datawheel.studio.security import CSRF_COOKIE, SESSION_COOKIE
from datawheel.studio.webapp import create_app

TOKEN = "security-test-token-42"
XSS_COLUMN = "<script>alert(1)</script>"
XSS_CLASS = '<b onmouseover="alert(2)">b</b>&'
FEATURES = [XSS_COLUMN, "f1", "f2", "f3"]
CLASSES = ["a", XSS_CLASS, "c"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    """Model ``toy`` trained on a dataset with the hostile column and class, with history."""
    yield build(tmp_path_factory.mktemp("xss"), features=FEATURES, classes=CLASSES)


def new_client(store: LocalStore) -> TestClient:
    config = StudioConfig(store=store.uri, model="toy", serve_url=None, token=TOKEN)
    return TestClient(create_app(config, store=store), raise_server_exceptions=False)


def csrf_of(c: TestClient, path: str = "/login") -> str:
    """This visitor's CSRF value, as a page carries it."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', c.get(path).text)
    assert found, "the page has no csrf-token meta"
    return found.group(1)


def logged_in(store: LocalStore) -> tuple[TestClient, str]:
    c = new_client(store)
    csrf = csrf_of(c)
    answer = c.post(
        "/login", data={"token": TOKEN, "csrf": csrf, "next": "/"}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return c, csrf


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def script_sources(csp: str) -> list[str]:
    d = directives(csp)
    return d.get("script-src", d.get("default-src", []))


ANSWERS = [
    ("GET", "/"),
    ("GET", "/flywheel"),
    ("GET", "/try"),
    ("GET", "/review"),
    ("GET", "/login"),
    ("GET", "/healthz"),
    ("GET", "/static/studio.css"),
    ("GET", "/static/flywheel.css"),
    ("GET", "/static/nothing-here.js"),
    ("GET", "/no-such-page"),
    ("GET", "/api/no-such-thing"),
    ("POST", "/api/label"),
    ("POST", "/login"),
    ("GET", "/reports/model/v1"),
    ("GET", "/reports/model/v9"),
    ("GET", "/reports/drift/v1?start=abc"),
]


@pytest.mark.parametrize(("method", "path"), ANSWERS)
def test_every_answer_has_the_csp_and_security_headers(
    store: LocalStore, method: str, path: str
) -> None:
    answer = new_client(store).request(method, path)
    assert answer.status_code < 500, answer.text[:300]
    csp = answer.headers["content-security-policy"]
    sources = script_sources(csp)
    assert sources and "'unsafe-inline'" not in sources and "*" not in sources
    assert "'unsafe-eval'" not in sources
    d = directives(csp)
    assert d.get("frame-ancestors") == ["'none'"] or "sandbox" in d
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_pages_carry_no_inline_script_or_style(store: LocalStore) -> None:
    c = new_client(store)
    for path in ("/", "/flywheel", "/login", "/no-such-page"):
        text = c.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), path
        assert "<style" not in text and "style=" not in text, path
        assert not re.search(r"<[^>]*\son[a-z]+=", text), path  # no inline event handlers


def test_the_cookies_are_httponly_and_samesite_strict(store: LocalStore) -> None:
    c = new_client(store)
    first = c.get("/login")
    csrf_cookie = [v for v in first.headers.get_list("set-cookie") if v.startswith(CSRF_COOKIE)]
    assert csrf_cookie and "HttpOnly" in csrf_cookie[0] and "SameSite=Strict" in csrf_cookie[0]
    csrf = csrf_of(c)
    answer = c.post("/login", data={"token": TOKEN, "csrf": csrf}, follow_redirects=False)
    session = [v for v in answer.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE)]
    assert session, answer.headers
    assert "httponly" in session[0].lower() and "samesite=strict" in session[0].lower()


def test_label_without_the_session_is_401(store: LocalStore) -> None:
    c = new_client(store)
    csrf = csrf_of(c)
    answer = c.post("/api/label", json={"id": "x", "label": "a"}, headers={"x-csrf-token": csrf})
    assert answer.status_code == 401
    assert "log in" in answer.json()["error"]


def test_label_without_the_csrf_value_is_403(store: LocalStore) -> None:
    c, _ = logged_in(store)
    for headers in ({}, {"x-csrf-token": "0" * 32}):
        answer = c.post("/api/label", json={"id": "x", "label": "a"}, headers=headers)
        assert answer.status_code == 403
        assert "CSRF" in answer.json()["error"]


def test_label_from_another_origin_is_403(store: LocalStore) -> None:
    c, csrf = logged_in(store)
    answer = c.post(
        "/api/label",
        json={"id": "x", "label": "a"},
        headers={"x-csrf-token": csrf, "origin": "https://evil.example"},
    )
    assert answer.status_code == 403 and "cross-origin" in answer.json()["error"]
    # the same request from this origin passes the guards (and finds no server: 409)
    same = c.post("/api/label", json={"id": "x", "label": "a"}, headers={"x-csrf-token": csrf})
    assert same.status_code == 409 and "--serve-url" in same.json()["error"]


def test_a_wrong_token_is_401_with_a_message(store: LocalStore) -> None:
    c = new_client(store)
    csrf = csrf_of(c)
    answer = c.post("/login", data={"token": "not-the-token", "csrf": csrf})
    assert answer.status_code == 401
    assert "That token is not right" in answer.text
    assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", ""],
)
def test_next_never_leaves_the_site(store: LocalStore, target: str) -> None:
    c = new_client(store)
    page = c.get("/login", params={"next": target}).text
    assert 'name="next" value="/"' in page
    csrf = csrf_of(c)
    answer = c.post(
        "/login", data={"token": TOKEN, "csrf": csrf, "next": target}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    ok = c.post(
        "/login", data={"token": TOKEN, "csrf": csrf, "next": "/review"}, follow_redirects=False
    )
    assert ok.headers["location"] == "/review"


def test_unknown_routes_are_404_json_for_the_api_and_a_page_otherwise(store: LocalStore) -> None:
    c = new_client(store)
    api = c.get("/api/nothing")
    assert api.status_code == 404 and "error" in api.json()
    page = c.get("/nothing")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in page.text and "<main" in page.text
    wrong_method = c.put("/api/label")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


GARBAGE: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"null", "application/json"),
    (b'{"id": 5, "label": "a"}', "application/json"),
    (b'{"id": "x", "label": true}', "application/json"),
    (b'{"id": "x", "label": "   "}', "application/json"),
    (b'{"id": "x", "label": {"a": 1}}', "application/json"),
    (b'{"id": "' + b"x" * 300 + b'", "label": "a"}', "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b'{"id": "x", "label": "a"}', "text/plain"),
    (b"id=x&label=a", "application/x-www-form-urlencoded"),
    (b'{"a": "' + b"x" * 70_000 + b'"}', "application/json"),
]


@pytest.mark.parametrize(("body", "kind"), GARBAGE)
def test_garbage_bodies_are_4xx_json(store: LocalStore, body: bytes, kind: str) -> None:
    c, csrf = logged_in(store)
    answer = c.post(
        "/api/label", content=body, headers={"content-type": kind, "x-csrf-token": csrf}
    )
    assert 400 <= answer.status_code < 500, answer.text[:300]
    error = answer.json()["error"]
    assert isinstance(error, str) and error and "Traceback" not in error


def test_garbage_forms_and_queries_are_4xx_never_5xx(store: LocalStore) -> None:
    c = new_client(store)
    for answer in (
        c.post("/login", content=b"\xff\x00=%%%", headers={"content-type": "multipart/form-data"}),
        c.post("/login", data={"token": TOKEN}),  # no CSRF value
        c.post("/logout", data={}),
        c.get("/reports/drift/v1", params={"start": "nan", "end": "inf"}),
        c.get("/reports/drift/v1", params={"start": "-5", "end": "1"}),
        c.get("/reports/model/%00"),
        c.get("/reports/dataset/toy/%3Cscript%3E"),
    ):
        assert 400 <= answer.status_code < 500, (answer.request.url, answer.text[:300])
        assert "Traceback" not in answer.text


def test_the_studio_binds_to_localhost_by_default() -> None:
    from datawheel.cli.studio import studio

    host = next(p for p in studio.params if p.name == "host")
    assert host.default == "127.0.0.1"


@pytest.mark.parametrize("path", ["/", "/flywheel"])
def test_hostile_names_from_data_render_as_text(store: LocalStore, path: str) -> None:
    text = new_client(store).get(path).text
    assert XSS_COLUMN not in text and "<b onmouseover" not in text
    assert str(escape(XSS_COLUMN)) in text
    assert str(escape(XSS_CLASS)) in text


@pytest.mark.parametrize("path", ["/try", "/review"])
def test_hostile_names_never_appear_raw_on_the_other_pages(store: LocalStore, path: str) -> None:
    answer = new_client(store).get(path)
    assert answer.status_code < 500
    assert XSS_COLUMN not in answer.text and "<b onmouseover" not in answer.text


def test_the_report_pages_are_sandboxed(store: LocalStore, tmp_path: Path) -> None:
    answer = new_client(store).get("/reports/model/v1")
    assert answer.status_code == 200 and "<script>" in answer.text  # the stored report as is...
    d = directives(answer.headers["content-security-policy"])
    assert "sandbox" in d and d["sandbox"] == []  # ...in a sandbox without allow-scripts
    assert d["default-src"] == ["'none'"] and "script-src" not in d
