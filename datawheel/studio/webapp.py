"""The studio app: pages, the label API, login, static files and error answers.

Each page lives in its own module and contributes its routes (``routes(studio)``):
:mod:`.pages_try`, :mod:`.pages_review`, :mod:`.pages_flywheel` (``/`` and ``/flywheel``).
``POST /api/label`` (``{"id", "label"}``) is shared: a prediction id goes to the model
server's feedback API; a dataset row id (``row:...``, from the label-issue queue) is sent
through the server as a prediction and then labelled (:mod:`.label_rows`), so both land in
the ledger and the flywheel's harvest turns them into the next dataset version.

Errors: a request the studio refuses is a 4xx with ``{"error": ...}`` (an HTML page for a
page route); only a bug is a 500, logged with its traceback and answered without one.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from datawheel.errors import DatawheelError
from datawheel.storage import Store, StoreError, open_store
from datawheel.studio import pages_flywheel, pages_review, pages_try
from datawheel.studio.config import StudioConfig
from datawheel.studio.context import STATIC_DIR, Studio, read_json
from datawheel.studio.review_queue import remember_label
from datawheel.studio.security import SESSION_COOKIE, Guard, SecurityMiddleware, safe_next
from datawheel.studio.serve_client import ServeClient

__all__ = ["create_app"]

_log = logging.getLogger("datawheel.studio")


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/static/")) or "application/json" in request.headers.get(
        "accept", ""
    )


def create_app(config: StudioConfig, *, store: Store | None = None) -> Starlette:
    studio = Studio(
        config=config,
        store=store if store is not None else open_store(config.store),
        guard=Guard(config.token),
        client=(
            ServeClient(config.serve_url, config.model, config.serve_token)
            if config.serve_url
            else None
        ),
    )

    def refuse(request: Request, status: int, message: str) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return studio.page(
            request, "error.html", status_code=status, status=status, message=message
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return refuse(request, exc.status_code, str(exc.detail))

    async def datawheel_error(request: Request, exc: Exception) -> Response:
        status = 503 if isinstance(exc, StoreError) else 400
        return refuse(request, status, str(exc))

    async def bug(request: Request, exc: Exception) -> Response:
        _log.exception(f"unhandled error on {request.method} {request.url.path}", exc_info=exc)
        return JSONResponse({"error": "internal error; see the studio's log"}, status_code=500)

    async def login_page(request: Request) -> Response:
        return studio.page(request, "login.html", next=safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        studio.guard.check_csrf(request, str(form.get("csrf", "")))
        target = safe_next(str(form.get("next", "/")))
        if not studio.guard.token_ok(str(form.get("token", ""))):
            return studio.page(
                request,
                "login.html",
                status_code=401,
                next=target,
                error="That token is not right. Use $DATAWHEEL_STUDIO_TOKEN (or the one the "
                "studio printed when it started).",
            )
        response = RedirectResponse(studio.url(target), status_code=303)
        studio.guard.set_session(response, request)
        return response

    async def logout(request: Request) -> Response:
        form = await request.form()
        studio.guard.check_csrf(request, str(form.get("csrf", "")))
        response = RedirectResponse(studio.url("/"), status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def label(request: Request) -> Response:
        studio.guard.check_csrf(request, None)
        studio.guard.require_session(request)
        doc = await read_json(request)
        pid, given = doc.get("id"), doc.get("label")
        if not isinstance(pid, str) or not pid or len(pid) > 256:
            raise HTTPException(400, 'body must be {"id": "<prediction id>", "label": "<class>"}')
        if isinstance(given, bool) or not isinstance(given, str | int) or not str(given).strip():
            raise HTTPException(400, "'label' must be a class name (a string or an integer)")
        if studio.client is None:
            raise HTTPException(
                409, "no model server to send the label to: start the studio with --serve-url"
            )
        if pid.startswith("row:"):
            from datawheel.studio.label_rows import label_row

            answer = await label_row(studio, pid, str(given))
        else:
            answer = await run_in_threadpool(studio.client.feedback, pid, str(given))
            remember_label(studio, pid, str(given))  # it leaves the review queue now
        return JSONResponse(answer)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "model": config.model})

    routes: list[BaseRoute] = [
        *pages_flywheel.routes(studio),
        *pages_try.routes(studio),
        *pages_review.routes(studio),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/label", label, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityMiddleware, allow_framing=config.allow_framing)],
        exception_handlers={
            HTTPException: http_error,
            DatawheelError: datawheel_error,
            Exception: bug,
        },
    )
    app.state.studio = studio
    if config.root_path:
        app.add_middleware(_StripRoot, root=config.root_path)
    return app


class _StripRoot:
    """Requests that still carry the root path (a proxy that does not strip it, or the
    address `datawheel studio` prints) reach the same routes as stripped ones."""

    def __init__(self, app: ASGIApp, root: str) -> None:
        self.app, self.root = app, root

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == self.root or path.startswith(self.root + "/")):
            scope = {**scope, "path": path[len(self.root) :] or "/"}
            scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)
