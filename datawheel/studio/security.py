"""The studio's guards: the token session, CSRF, and the security headers on every answer.

* **Session.** Labeling needs the token, entered once on ``/login``. The answer sets
  ``dw_session`` (HttpOnly, SameSite=Strict): a random nonce and its HMAC under the token,
  so any replica can check it and a new token logs everyone out.
* **CSRF.** Every visitor gets ``dw_csrf`` (HttpOnly, SameSite=Strict), a random nonce; the
  pages carry its HMAC (``<meta name="csrf-token">`` and a hidden ``csrf`` form field). A
  POST must send that value back (``X-CSRF-Token`` header or ``csrf`` field), and its
  ``Origin``, when sent, must be this host. SameSite=Strict alone would leave older browsers
  and same-site subdomains open; the token closes both.
* **Headers.** A Content-Security-Policy with no inline script (``'wasm-unsafe-eval'`` lets
  onnxruntime-web compile its WebAssembly), no framing, no sniffing, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "CSRF_COOKIE",
    "FRAMED_HEADERS",
    "HEADERS",
    "SESSION_COOKIE",
    "Guard",
    "SecurityMiddleware",
    "safe_next",
]

SESSION_COOKIE = "dw_session"
CSRF_COOKIE = "dw_csrf"
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}
#: With ``--allow-framing`` (the Kubeflow central dashboard shows apps in a frame of its own
#: origin): pages of this origin may frame the studio; no other site may.
FRAMED_HEADERS = {
    **HEADERS,
    "content-security-policy": CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'"),
    "x-frame-options": "SAMEORIGIN",
}
_SESSION_DAYS = 7


class Guard:
    """Signs and checks the session and CSRF values with the labeling token."""

    def __init__(self, token: str) -> None:
        self._key = token.encode()

    def _mac(self, purpose: str, nonce: str) -> str:
        return hmac.new(self._key, f"{purpose}:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.strip().encode(), self._key)

    def new_session(self) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._mac('session', nonce)}"

    def session_ok(self, request: Request) -> bool:
        nonce, _, mac = request.cookies.get(SESSION_COOKIE, "").partition(".")
        return bool(nonce) and hmac.compare_digest(mac, self._mac("session", nonce))

    def csrf_value(self, request: Request) -> str:
        """The value this visitor's pages carry (from its ``dw_csrf`` nonce)."""
        return self._mac("csrf", request.state.csrf_nonce)

    def check_csrf(self, request: Request, sent: str | None) -> None:
        """Refuse (403) a state-changing request without this visitor's CSRF value."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, f"cross-origin request from {origin!r} refused")
        nonce = request.cookies.get(CSRF_COOKIE, "")
        given = sent if sent is not None else request.headers.get("x-csrf-token", "")
        if not nonce or not given or not hmac.compare_digest(given, self._mac("csrf", nonce)):
            raise HTTPException(
                403,
                "missing or wrong CSRF value: send the page's csrf-token as X-CSRF-Token "
                "(reload the page if it is old)",
            )

    def require_session(self, request: Request) -> None:
        if not self.session_ok(request):
            raise HTTPException(401, "labeling needs the studio token: log in on /login first")

    def set_session(self, response: Response, request: Request) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.new_session(),
            max_age=_SESSION_DAYS * 86400,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class SecurityMiddleware:
    """Adds the security headers to every answer and the ``dw_csrf`` nonce to every visitor."""

    def __init__(self, app: ASGIApp, allow_framing: bool = False) -> None:
        self.app = app
        self.headers = FRAMED_HEADERS if allow_framing else HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        nonce = request.cookies.get(CSRF_COOKIE, "")
        fresh = not (16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum())
        if fresh:
            nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csrf_nonce"] = nonce
        secure = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in self.headers.items():
                    if name.encode() not in names:
                        headers.append((name.encode(), value.encode()))
                if fresh:
                    cookie = f"{CSRF_COOKIE}={nonce}; Path=/; HttpOnly; SameSite=Strict"
                    headers.append(
                        (b"set-cookie", (cookie + ("; Secure" if secure else "")).encode())
                    )
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
