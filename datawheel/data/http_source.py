"""Fetch an ``http(s)://`` dataset source, safely.

- Nothing the server sent is ever put in an error: not the body, not even the status line's
  reason (the standard phrase for the code is shown instead). A URL that answers with a
  credentials file cannot have it printed.
- Credentials in the URL (``https://user:password@host/t.csv``) are sent as HTTP Basic
  auth, never to another origin a redirect leads to, and are masked (``***``) in every
  message, as is the query (``?…``), which often holds a token or a signature.
- At most ``DATAWHEEL_HTTP_MAX_BYTES`` (default 1 GiB) is read.
- ``DATAWHEEL_HTTP_SOURCES``: comma-separated URL prefixes (``https://data.example.com/ml/``).
  When it is set, any other URL is refused, and so is a redirect that leaves them. Scheme,
  host and port must be equal; the path must start with the prefix's path.
- An HTML page (a login form, a file viewer) is refused: it is not the table.
"""

from __future__ import annotations

import base64
import http
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from datawheel.errors import DatawheelError
from datawheel.redact import MASK

__all__ = [
    "ALLOW_ENV",
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "display_url",
    "http_allowed",
    "read_http",
]

ALLOW_ENV = "DATAWHEEL_HTTP_SOURCES"
MAX_BYTES_ENV = "DATAWHEEL_HTTP_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 30
_TIMEOUT_S = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


def display_url(url: str) -> str:
    """``url`` as it may be shown: credentials masked, a query or fragment cut to ``?…``."""
    try:
        parts = urlsplit(url.strip())
        netloc = parts.netloc
    except ValueError:
        return "(an unparseable URL)"
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    tail = "?…" if parts.query or parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + tail


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def of(cls, url: str, what: str) -> _Origin:
        parts = _split(url, what)
        return cls(parts.scheme, (parts.hostname or "").lower(), _port(parts, what), parts.path)

    def within(self, prefix: _Origin) -> bool:
        same = (self.scheme, self.host, self.port) == (prefix.scheme, prefix.host, prefix.port)
        return same and (self.path or "/").startswith(prefix.path or "/")


def _split(url: str, what: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise DatawheelError(
            f"{what} {display_url(url)!r} is not an http:// or https:// URL with a host",
            "write it like https://host/path/data.csv",
        )
    return parts._replace(scheme=parts.scheme.lower())


def _port(parts: SplitResult, what: str) -> int:
    try:
        return parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise DatawheelError(
            f"{what} {display_url(urlunsplit(parts))!r} has an invalid port",
            "write it like https://host:8443/path/data.csv",
        ) from None


def _allow_list(environ: Mapping[str, str]) -> list[_Origin] | None:
    raw = environ.get(ALLOW_ENV, "").strip()
    if not raw:
        return None
    return [_Origin.of(p, f"{ALLOW_ENV} entry") for p in raw.split(",") if p.strip()]


def http_allowed(url: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``DATAWHEEL_HTTP_SOURCES`` (unset: everything) lets ``url`` be fetched."""
    allowed = _allow_list(environ)
    target = _Origin.of(url, "source")
    return allowed is None or any(target.within(prefix) for prefix in allowed)


def _refuse_unlisted(url: str, environ: Mapping[str, str], via: str = "") -> None:
    if not http_allowed(url, environ):
        raise DatawheelError(
            f"source {display_url(url)!r}{via} is not under any prefix in {ALLOW_ENV}",
            f"add its prefix to {ALLOW_ENV} (comma-separated URL prefixes) or fetch the file "
            "yourself and ingest the local copy",
        )


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the allow-list, and never take the credentials along
    to another origin."""

    def __init__(self, environ: Mapping[str, str], start: str) -> None:
        self.environ, self.start = environ, start

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        _split(newurl, f"source {display_url(self.start)!r} redirects to")
        _refuse_unlisted(newurl, self.environ, f" (a redirect from {display_url(self.start)!r})")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        before, after = _Origin.of(req.full_url, "url"), _Origin.of(newurl, "url")
        if new is not None and (before.scheme, before.host, before.port) != (
            after.scheme,
            after.host,
            after.port,
        ):
            new.remove_header("Authorization")
        return new


def _max_bytes(environ: Mapping[str, str]) -> int:
    raw = environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise DatawheelError(
            f"{MAX_BYTES_ENV}={raw!r} is not a positive number of bytes",
            f"set {MAX_BYTES_ENV} to a byte count, e.g. {DEFAULT_MAX_BYTES}",
        )
    return int(raw)


def _request(url: str) -> urllib.request.Request:
    """A GET for ``url`` with its userinfo moved into an Authorization header."""
    parts = _split(url, "source")
    if "@" not in parts.netloc:
        return urllib.request.Request(url.strip(), method="GET")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=hostport)), method="GET")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")  # dropped by a cross-origin redirect
    return request


def read_http(url: str, environ: Mapping[str, str] = os.environ) -> bytes:
    """The bytes at ``url`` (see the module docstring for what is checked and refused)."""
    shown = display_url(url)
    _refuse_unlisted(url, environ)
    limit = _max_bytes(environ)
    request = _request(url)
    opener = urllib.request.build_opener(_Redirects(environ, url))
    try:
        with opener.open(request, timeout=_TIMEOUT_S) as response:
            return _body(response, shown, limit)
    except urllib.error.HTTPError as exc:
        exc.close()  # its body is the server's, and stays unread
        raise DatawheelError(
            f"source {shown!r} answered HTTP {exc.code} {_phrase(exc.code)}", _http_fix(exc.code)
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DatawheelError(
            f"cannot fetch source {shown!r} ({_cause(exc)})",
            "check the URL, that the server is up, and the network",
        ) from None


def _body(response: http.client.HTTPResponse, shown: str, limit: int) -> bytes:
    kind = response.headers.get_content_type()
    if kind in ("text/html", "application/xhtml+xml"):
        raise DatawheelError(
            f"source {shown!r} answered an HTML page, not a CSV or Parquet file",
            "use the URL of the file itself (a login page or a file viewer is not the file)",
        )
    length = response.headers.get("Content-Length", "")
    too_big = DatawheelError(
        f"source {shown!r} is larger than {limit} bytes ({MAX_BYTES_ENV})",
        f"raise {MAX_BYTES_ENV}, or ingest a smaller file",
    )
    if length.isdigit() and int(length) > limit:
        raise too_big
    data = response.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data


def _phrase(code: int) -> str:
    try:
        return f"({http.HTTPStatus(code).phrase})"
    except ValueError:
        return "(a status that is not standard)"


def _http_fix(code: int) -> str:
    if code in (401, 403):
        return "put credentials the server accepts in the URL (https://USER:PASSWORD@host/...)"
    if code == 404:
        return "check the URL: the server has no file there"
    return "check the URL, and the server's logs"


def _cause(exc: BaseException) -> str:
    """A short local cause (``Connection refused``, ``timed out``); never server text."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, OSError):
        return reason.strerror or type(reason).__name__
    if isinstance(reason, http.client.HTTPException) or isinstance(exc, http.client.HTTPException):
        return "the server's answer is not valid HTTP"
    return type(reason).__name__ if not isinstance(reason, str) else "the request failed"
