"""The HTTP application: Open Inference Protocol v2, feedback, metrics; a plain ASGI app.

A small ASGI callable rather than a framework: every request is routed by splitting
its path, bodies are read with a size limit (:class:`RequestLimits`), infer and feedback
need the bearer token when one is set, and every client mistake is answered with a 4xx
and ``{"error": "..."}``. Server state lives in :class:`~datawheel.serving.state.Serving`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import datawheel
from datawheel.serving.inputs import image_pixels, image_rows
from datawheel.serving.ledger import LedgerUnavailable
from datawheel.serving.model import ServedModel
from datawheel.serving.prescan import CONTAINER_SLACK, VALUE_SLACK, JsonBudget, json_head_size
from datawheel.serving.protocol import (
    InferRequest,
    ProtocolError,
    brief,
    encode_infer_response,
    error_body,
    parse_infer_request,
)
from datawheel.serving.state import Serving

__all__ = ["RequestLimits", "ServingApp"]

log = logging.getLogger("datawheel.serve")
_INLINE_PIXELS = 64 * 64  # up to 4 images this small are decoded on the event loop
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class RequestLimits:
    """What one request may carry: its body size and the rows of an infer request."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_rows: int = 1024


class _ThrottledLog:
    """At most one traceback per ``every_s``; the ones in between are counted, not lost.

    A model that fails on every input would otherwise log a traceback per request.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._log, self._every, self._last, self._skipped = logger, every_s, -float("inf"), 0

    def exception(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            self._skipped += 1
            return
        if self._skipped:
            message += f" ({self._skipped} more since the last one logged)"
        self._last, self._skipped = now, 0
        self._log.exception(message)


class ServingApp:
    """The ASGI application over a :class:`Serving`."""

    def __init__(
        self,
        serving: Serving,
        *,
        limits: RequestLimits | None = None,
        token: str | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.serving = serving
        self.limits = limits or RequestLimits()
        self.token = token
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._error_log = _ThrottledLog(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.serving.batcher.start()
                if self._on_startup:
                    await self._on_startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown:
                    await self._on_shutdown()
                await self.serving.batcher.stop()
                await asyncio.get_running_loop().run_in_executor(None, self.serving.ledger.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        parts = [p for p in scope["path"].split("/") if p]
        model = self.serving.model
        endpoint = "other"
        start = time.perf_counter()
        status, body = 500, error_body("internal error")
        headers: dict[str, str] = {}
        metrics = self.serving.metrics
        in_flight = metrics.in_flight.labels(model.name)
        in_flight.inc()
        try:
            endpoint, handler = self._route(method, parts)
            status, body, headers = await handler(scope, receive, parts)
        except ProtocolError as exc:
            status, body = exc.status, error_body(exc.message)
        except LedgerUnavailable as exc:  # nothing was recorded: answer 503, a retry may land
            status, body, headers = 503, error_body(str(exc)), {"retry-after": "1"}
        except Exception:  # a bug, not the client's fault: log it and answer 500
            self._error_log.exception(f"unhandled error on {method} {scope['path']}")
        finally:
            in_flight.dec()
        metrics_page = endpoint == "metrics" and status == 200
        await _respond(
            send, status, body, headers, CONTENT_TYPE_LATEST if metrics_page else "application/json"
        )
        if endpoint != "metrics":
            version = self.serving.model.version
            metrics.requests.labels(model.name, version, endpoint, str(status)).inc()
            metrics.latency.labels(model.name, version, endpoint).observe(
                time.perf_counter() - start
            )

    def _route(self, method: str, parts: list[str]) -> tuple[str, Handler]:
        if parts == ["metrics"]:
            return "metrics", _only(method, "GET", self._metrics)
        if parts[:1] != ["v2"]:
            raise ProtocolError(
                404, "not found; the API is under /v2 (Open Inference Protocol) plus /metrics"
            )
        rest = parts[1:]
        if rest == []:
            return "server_metadata", _only(method, "GET", self._server_metadata)
        if rest in (["health", "live"], ["health", "ready"]):
            return f"health_{rest[1]}", _only(method, "GET", self._health)
        if len(rest) < 2 or rest[0] != "models":
            raise ProtocolError(404, f"no route {brief('/' + '/'.join(parts))}")
        name, tail = rest[1], rest[2:]
        if name != self.serving.model.name:
            raise ProtocolError(
                404,
                f"model {brief(name)} is not served here; this server serves "
                f"{self.serving.model.name!r}",
            )
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                raise ProtocolError(404, "missing version after /versions/")
            if tail[1] != self.serving.model.version:
                raise ProtocolError(
                    404,
                    f"version {brief(tail[1])} of {name!r} is not served; "
                    f"serving {self.serving.model.version!r}",
                )
            tail = tail[2:]
        if tail == []:
            return "model_metadata", _only(method, "GET", self._model_metadata)
        if tail == ["ready"]:
            return "model_ready", _only(method, "GET", self._model_ready)
        if tail == ["infer"]:
            return "infer", _only(method, "POST", self._guarded(self._infer))
        if tail == ["feedback"]:
            return "feedback", _only(method, "POST", self._guarded(self._feedback))
        raise ProtocolError(404, f"no route {brief('/' + '/'.join(parts))}")

    def _guarded(self, handler: Handler) -> Handler:
        if not self.token:
            return handler
        expected = f"Bearer {self.token}".encode()

        async def check(scope: Scope, receive: Receive, parts: list[str]) -> Response:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                raise ProtocolError(
                    401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
                )
            return await handler(scope, receive, parts)

        return check

    async def _read_body(self, scope: Scope, receive: Receive, budget: JsonBudget) -> bytes:
        """The body, up to the size limit; ``budget`` refuses a costly body as it arrives."""
        limit = self.limits.max_body_bytes
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise ProtocolError(
                    413, f"body of {int(value)} bytes exceeds the limit of {limit} bytes"
                )
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ProtocolError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ProtocolError(413, f"body exceeds the limit of {limit} bytes")
            budget.feed(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _infer(self, scope: Scope, receive: Receive, parts: list[str]) -> Response:
        serving = self.serving
        serving.batcher.announce()
        try:
            budget = JsonBudget.for_infer(
                max_rows=self.limits.max_rows,
                n_features=serving.model.n_features,
                head_bytes=json_head_size(scope["headers"]),
            )
            body = await self._read_body(scope, receive, budget)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            model = serving.model
            request = await self._parse(body, headers, model)
        except BaseException:
            serving.batcher.retract()
            raise
        result, rows = await serving.batcher.submit(request.rows)
        if result.version != model.version and not serving.model.signature.same_inputs(
            model.signature
        ):  # swapped between parsing and the batch to a version that encodes rows otherwise
            model = serving.model
            request = await self._parse(body, headers, model)
            serving.batcher.announce()
            result, rows = await serving.batcher.submit(request.rows)
        body, extra = encode_infer_response(
            request,
            model=serving.model.name,
            version=result.version,
            labels=result.labels[rows],
            probabilities=result.probabilities[rows],
            prediction_ids=result.ids[rows],
        )
        return 200, body, extra

    async def _parse(
        self, body: bytes, headers: dict[str, str], model: ServedModel
    ) -> InferRequest:
        """The request, its rows encoded for ``model`` (images decoded off the event loop)."""
        request = parse_infer_request(
            body,
            headers,
            n_features=model.n_features,
            max_rows=self.limits.max_rows,
            signature=model.signature,
        )
        prep = model.signature.image
        if request.images is not None and prep is not None:
            few = len(request.images) <= 4 and image_pixels(request.images) <= _INLINE_PIXELS
            if few:  # ~0.1 ms an image: the hop to a thread would cost more
                request.rows = image_rows(request.images, prep)
            else:  # decoding and resizing a photo takes milliseconds: off the event loop
                request.rows = await asyncio.get_running_loop().run_in_executor(
                    None, image_rows, request.images, prep
                )
        return request

    async def _feedback(self, scope: Scope, receive: Receive, parts: list[str]) -> Response:
        rows = self.limits.max_rows  # room for feedback on a whole batch in one body
        budget = JsonBudget(
            containers=4 * rows + CONTAINER_SLACK,
            commas=8 * rows + VALUE_SLACK,
            what="feedback on a batch of predictions",
        )
        body = await self._read_body(scope, receive, budget)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            raise ProtocolError(400, 'body must be {"id": "<prediction id>", "label": ...}')
        label = doc.get("label")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise ProtocolError(400, "'label' must be a string (or an integer class name)")
        return 200, orjson.dumps(self.serving.feedback(doc["id"], str(label))), {}

    async def _metrics(self, *_: Any) -> Response:
        ledger = self.serving.ledger
        self.serving.metrics.ledger(ledger.backlog, ledger.lost)
        self.serving.drift_score()
        return 200, generate_latest(self.serving.metrics.registry), {}

    async def _server_metadata(self, *_: Any) -> Response:
        return (
            200,
            orjson.dumps(
                {
                    "name": "datawheel",
                    "version": datawheel.__version__,
                    "extensions": ["binary_tensor_data", "feedback"],
                }
            ),
            {},
        )

    async def _health(self, *_: Any) -> Response:
        return 200, orjson.dumps({"live": True, "ready": True}), {}

    async def _model_ready(self, *_: Any) -> Response:
        m = self.serving.model
        return 200, orjson.dumps({"name": m.name, "version": m.version, "ready": True}), {}

    async def _model_metadata(self, *_: Any) -> Response:
        return 200, orjson.dumps(self.serving.model.metadata()), {}


Response = tuple[int, bytes, dict[str, str]]
Handler = Callable[[Scope, Receive, list[str]], Awaitable[Response]]


def _only(method: str, allowed: str, handler: Handler) -> Handler:
    if method != allowed:
        raise ProtocolError(405, f"method {method} not allowed here; use {allowed}")
    return handler


async def _respond(
    send: Send, status: int, body: bytes, headers: dict[str, str], content_type: str
) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
