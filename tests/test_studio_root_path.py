"""The studio behind a proxy under a prefix (Kubeflow's gateway at /studio/, which strips it)
and in the central dashboard's frame: --root-path and --allow-framing, in process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flywheel_store_support import build
from starlette.testclient import TestClient

from datawheel.storage import LocalStore
from datawheel.studio.config import StudioConfig
from datawheel.studio.context import with_root
from datawheel.studio.webapp import create_app

TOKEN = "root-path-test-token"
PAGES = ("/", "/try", "/review", "/flywheel", "/login")
LINK = re.compile(r'\s(?:href|src|action)="([^"]*)"')


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    yield build(tmp_path_factory.mktemp("root"), features=["a", "b"], classes=["x", "y"])


def _client(store: LocalStore, **options: object) -> TestClient:
    config = StudioConfig(
        store=store.uri,
        model="toy",
        serve_url=None,
        token=TOKEN,
        **options,  # type: ignore[arg-type]
    )
    return TestClient(create_app(config, store=store), raise_server_exceptions=False)


def test_every_site_link_of_every_page_carries_the_prefix(store: LocalStore) -> None:
    c = _client(store, root_path="/studio")
    for page in PAGES:
        answer = c.get(page)  # as the gateway passes it on: the prefix taken off
        assert answer.status_code == 200, (page, answer.text[:200])
        assert '<meta name="root-path" content="/studio">' in answer.text
        links = [u for u in LINK.findall(answer.text) if u.startswith("/")]
        assert links, page
        assert all(u.startswith("/studio/") for u in links), (page, links)


def test_the_prefixed_address_works_too(store: LocalStore) -> None:
    """A proxy that does not strip the prefix, or the address `datawheel studio` prints."""
    c = _client(store, root_path="/studio")
    assert c.get("/studio/try").status_code == 200
    assert c.get("/studio/static/studio.js").status_code == 200
    assert c.get("/static/studio.js").status_code == 200
    assert c.get("/studiox").status_code == 404


def test_login_redirects_under_the_prefix(store: LocalStore) -> None:
    c = _client(store, root_path="/studio")
    page = c.get("/login").text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert csrf
    answer = c.post(
        "/login",
        data={"token": TOKEN, "csrf": csrf.group(1), "next": "/review"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/studio/review"


def test_framing_is_refused_unless_allowed_and_then_only_by_the_same_origin(
    store: LocalStore,
) -> None:
    plain = _client(store).get("/")
    assert "frame-ancestors 'none'" in plain.headers["content-security-policy"]
    assert plain.headers["x-frame-options"] == "DENY"
    framed = _client(store, allow_framing=True).get("/")
    csp = framed.headers["content-security-policy"]
    assert (
        "frame-ancestors 'self'" in csp
        and "'none'" not in csp.split("frame-ancestors")[1].split(";")[0]
    )
    assert framed.headers["x-frame-options"] == "SAMEORIGIN"
    assert "script-src 'self' 'wasm-unsafe-eval';" in csp  # nothing else loosened


def test_without_a_prefix_links_stay_as_written(store: LocalStore) -> None:
    text = _client(store).get("/try").text
    assert '<meta name="root-path" content="">' in text
    assert 'href="/static/studio.css"' in text


def test_only_site_links_are_rewritten() -> None:
    html = '<a href="/try">t</a><a href="//cdn.example/x">c</a><a href="https://e.com/">e</a>'
    html += '<img src="/static/x.png"><form action="/login"></form><p>href="/not-a-link"</p>'
    out = with_root(html, "/studio")
    assert 'href="/studio/try"' in out and 'src="/studio/static/x.png"' in out
    assert 'action="/studio/login"' in out
    assert 'href="//cdn.example/x"' in out and 'href="https://e.com/"' in out
    assert '<p>href="/not-a-link"</p>' in out  # text, not an attribute


def test_a_bad_root_path_is_a_one_line_error(tmp_path: Path) -> None:
    from datawheel.errors import DatawheelError
    from datawheel.studio.config import check_root_path

    assert check_root_path("/studio/") == "/studio" and check_root_path("") == ""
    for bad in ("studio", "/a//b", '/a"b', "/a?b"):
        with pytest.raises(DatawheelError, match="not a URL path"):
            check_root_path(bad)
