"""http(s):// dataset sources against a real http.server on 127.0.0.1: no remote content and
no credentials in any error, a size cap, an allow-list, and redirects that keep to both."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datawheel.data.http_source import ALLOW_ENV, MAX_BYTES_ENV, display_url, read_http
from datawheel.errors import DatawheelError

CSV = b"a,b,label\n1,2,x\n3,4,y\n"
SECRET = "SECRET"


@dataclass
class Server:
    base: str
    port: int
    seen_auth: dict[str, str | None] = field(default_factory=dict)  # path -> Authorization


Routes = dict[str, tuple[int, dict[str, str], bytes]]
Serve = Callable[[Routes], Server]


def _handler(server: Server, routes: Routes) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server.seen_auth[path] = self.headers.get("Authorization")
            status, headers, body = routes.get(path, (404, {}, b"no SECRET here"))
            # the reason phrase is remote content too: it must not be shown either
            self.send_response(status, f"{SECRET}-REASON")
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers and headers.get("X-Chunked") != "1":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[ThreadingHTTPServer] = []

    def start(routes: Routes) -> Server:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        port = httpd.server_address[1]
        server = Server(f"http://127.0.0.1:{port}", port)
        httpd.RequestHandlerClass = _handler(server, routes)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return server

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _error(url: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(DatawheelError) as info:
        read_http(url, env or {})
    text = str(info.value)
    assert "\n" not in text and ". Fix: " in text, text
    assert SECRET not in text and "password" not in text, text
    return text


def test_a_csv_is_fetched_with_basic_auth_from_the_url(serve: Serve) -> None:
    srv = serve({"/t.csv": (200, {"Content-Type": "text/csv"}, CSV)})
    assert read_http(f"{srv.base}/t.csv", {}) == CSV
    assert srv.seen_auth["/t.csv"] is None
    host = srv.base.removeprefix("http://")
    assert read_http(f"http://me:pa%40ss@{host}/t.csv?x=1", {}) == CSV
    assert srv.seen_auth["/t.csv"] == "Basic bWU6cGFAc3M="  # me:pa@ss


@pytest.mark.parametrize("status", [500, 401, 403, 404, 302])
def test_an_error_answer_never_shows_its_body_reason_or_credentials(
    serve: Serve, status: int
) -> None:
    body = b"aws_secret_access_key=SECRET\npassword=SECRET\n"
    headers = {"Content-Type": "text/plain"} if status != 302 else {}
    srv = serve({"/t.csv": (status, headers, body)})
    host = srv.base.removeprefix("http://")
    text = _error(f"http://user:{SECRET}@{host}/t.csv?token={SECRET}")
    assert f"source 'http://***@{host}/t.csv?…'" in text, text
    if status != 302:  # a redirect without a Location is urllib's own error
        assert f"answered HTTP {status} (" in text, text


def test_a_credentials_file_that_parses_is_still_only_bytes(serve: Serve) -> None:
    # A 200 with a secret is returned (to be parsed) but never put in an error here; an HTML
    # page (a login form) is refused without showing it.
    srv = serve({"/login": (200, {"Content-Type": "text/html"}, b"<html>SECRET</html>")})
    text = _error(f"{srv.base}/login")
    assert "answered an HTML page" in text


def test_the_size_is_capped(serve: Serve) -> None:
    big = b"a,label\n" + b"1,x\n" * 1000
    srv = serve(
        {
            "/declared.csv": (200, {"Content-Type": "text/csv"}, big),
            "/undeclared.csv": (200, {"Content-Type": "text/csv", "X-Chunked": "1"}, big),
        }
    )
    env = {MAX_BYTES_ENV: "1000"}
    for path in ("/declared.csv", "/undeclared.csv"):
        assert f"larger than 1000 bytes ({MAX_BYTES_ENV})" in _error(f"{srv.base}{path}", env)
    assert read_http(f"{srv.base}/declared.csv", {MAX_BYTES_ENV: str(len(big))}) == big
    assert MAX_BYTES_ENV in _error(f"{srv.base}/declared.csv", {MAX_BYTES_ENV: "lots"})


def test_the_allow_list(serve: Serve) -> None:
    srv = serve({"/ml/t.csv": (200, {}, CSV), "/other/t.csv": (200, {}, CSV)})
    allow = {ALLOW_ENV: f"https://data.example.com/, {srv.base}/ml/"}
    assert read_http(f"{srv.base}/ml/t.csv", allow) == CSV
    text = _error(f"{srv.base}/other/t.csv", allow)
    assert (
        f"is not under any prefix in {ALLOW_ENV}" in text
        and f"add its prefix to {ALLOW_ENV}" in text
    )
    # a prefix is matched by scheme, host and port, not as text: :8 is not :80..
    short = {ALLOW_ENV: f"http://127.0.0.1:{str(srv.port)[:-1]}"}
    assert ALLOW_ENV in _error(f"{srv.base}/ml/t.csv", short)
    tricky = {ALLOW_ENV: "http://127.0.0"}
    assert "entry" in _error(f"{srv.base}/ml/t.csv", {ALLOW_ENV: "ftp://x"})
    assert ALLOW_ENV in _error(f"{srv.base}/ml/t.csv", tricky)


def test_redirects_keep_to_the_allow_list_and_credentials_stay_home(serve: Serve) -> None:
    other = serve({"/t.csv": (200, {}, CSV)})
    srv = serve(
        {
            "/away": (302, {"Location": f"{other.base}/t.csv"}, b"SECRET"),
            "/here": (302, {"Location": "/t.csv"}, b""),
            "/t.csv": (200, {}, CSV),
        }
    )
    host = srv.base.removeprefix("http://")
    assert read_http(f"http://u:p@{host}/here", {}) == CSV
    assert srv.seen_auth["/t.csv"] is not None  # the same origin keeps them
    assert read_http(f"http://u:p@{host}/away", {}) == CSV
    assert other.seen_auth["/t.csv"] is None  # another origin never gets them
    text = _error(f"{srv.base}/away", {ALLOW_ENV: f"{srv.base}/"})
    assert "(a redirect from" in text and ALLOW_ENV in text


def test_unreachable_and_malformed_urls_are_one_line() -> None:
    text = _error("http://127.0.0.1:9/t.csv")  # discard port: nothing listens
    assert "cannot fetch source 'http://127.0.0.1:9/t.csv'" in text
    assert "is not an http:// or https:// URL" in _error("http:///t.csv")
    assert "invalid port" in _error("http://u:SECRET@127.0.0.1:99999999/t.csv")


def test_display_url() -> None:
    assert display_url("https://u:SECRET@h:1/p/t.csv?sig=SECRET#x") == "https://***@h:1/p/t.csv?…"
    assert display_url("https://h/t.csv") == "https://h/t.csv"
