"""The HTTP application: Open Inference Protocol v2, feedback, metrics; a plain ASGI app.

A small ASGI callable rather than a framework: every request is routed by splitting
its path, bodies are read with a size limit, and every client mistake is answered
with a 4xx and ``{"error": "..."}``. Server state lives in :class:`Serving`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import datawheel
from datawheel.monitoring.drift import DriftMonitor
from datawheel.serving.batcher import DynamicBatcher
from datawheel.serving.ledger import Feedback, Ledger, PredictionBatch
from datawheel.serving.metrics import ServingMetrics
from datawheel.serving.model import ServedModel
from datawheel.serving.predictions import PredictionIndex
from datawheel.serving.protocol import (
    InferRequest,
    ProtocolError,
    encode_infer_response,
    error_body,
    parse_infer_request,
)

__all__ = ["BatchResult", "Limits", "Serving", "ServingApp"]

log = logging.getLogger("datawheel.serve")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_rows: int = 1024


@dataclass(frozen=True)
class BatchResult:
    version: str
    probabilities: np.ndarray
    labels: list[str]
    ids: list[str]


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


def _drift_monitor(model: ServedModel) -> DriftMonitor:
    return DriftMonitor(list(model.feature_mean), list(model.feature_std))


class Serving:
    """Everything a request needs: the current model, batcher, ledger, metrics, index.

    ``model`` is swapped by assignment (atomic); a batch holds on to the model it
    started with, so in-flight requests finish on the old version.
    """

    def __init__(
        self,
        model: ServedModel,
        ledger: Ledger,
        metrics: ServingMetrics,
        *,
        max_batch_size: int = 64,
        max_latency_ms: float = 2.0,
        index: PredictionIndex | None = None,
    ) -> None:
        self.model = model
        self.ledger = ledger
        self.metrics = metrics
        self.index = index if index is not None else PredictionIndex()
        self.batcher: DynamicBatcher[BatchResult] = DynamicBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_latency_ms=max_latency_ms,
            on_batch=metrics.batch_rows.labels(model.name).observe,
        )
        metrics.serving(model.version, model.checksum, model.load_seconds)
        self.drift = _drift_monitor(model)

    def swap(self, model: ServedModel) -> None:
        old = self.model.version
        self.drift = _drift_monitor(model)
        self.model = model
        self.metrics.serving(model.version, model.checksum, model.load_seconds)
        self.metrics.swaps.labels(model.name).inc()
        if old != model.version:
            with contextlib.suppress(KeyError):
                self.metrics.drift.remove(model.name, old)

    def drift_score(self) -> float:
        """Update and return the drift gauge of the version being served."""
        model, score = self.model, self.drift.score()
        self.metrics.drift.labels(model.name, model.version).set(score)
        return score

    def _run_batch(self, rows: np.ndarray) -> BatchResult:
        """On the inference thread: predict, remember, and write the ledger (durably)."""
        model, drift = self.model, self.drift
        start = time.perf_counter()
        probabilities = model.predict(rows)
        labels = model.labels(probabilities)
        raw = os.urandom(16 * len(labels)).hex()  # one call for the whole batch's ids
        ids = [raw[k : k + 32] for k in range(0, len(raw), 32)]
        latency_ms = (time.perf_counter() - start) * 1000
        self.ledger.append(
            PredictionBatch(
                ids, time.time(), model.name, model.version, rows, labels, probabilities, latency_ms
            )
        )
        self.index.add(ids, model.version, labels)
        drift.observe(rows)
        counter = self.metrics.predictions
        for label in set(labels):
            counter.labels(model.name, model.version, label).inc(labels.count(label))
        return BatchResult(model.version, probabilities, labels, ids)

    def feedback(self, pid: str, label: str) -> dict[str, Any]:
        found = self.index.get(pid)
        if found is None:
            raise ProtocolError(404, f"no prediction with id {pid!r} (unknown or too old)")
        classes = self.model.classes  # the label space feedback is collected in
        if label not in classes:
            raise ProtocolError(422, f"label {label!r} is not one of the model's classes {classes}")
        outcome = self.index.record(pid, label)
        assert outcome is not None
        name = self.model.name
        if outcome.changed:
            self.ledger.append(
                [Feedback(pid, time.time(), name, outcome.version, label, outcome.predicted)]
            )
            result = "correct" if outcome.correct else "incorrect"
            self.metrics.feedback.labels(name, outcome.version, result).inc()
            accuracy = self.index.live_accuracy(outcome.version)
            if accuracy is not None:
                self.metrics.live_accuracy.labels(name, outcome.version).set(accuracy)
        return {
            "id": pid,
            "label": label,
            "predicted": outcome.predicted,
            "correct": outcome.correct,
            "duplicate": not outcome.changed,
        }


class ServingApp:
    """The ASGI application over a :class:`Serving`."""

    def __init__(
        self,
        serving: Serving,
        *,
        limits: Limits | None = None,
        token: str | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.serving = serving
        self.limits = limits or Limits()
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
            raise ProtocolError(404, f"no route /{'/'.join(parts)}")
        name, tail = rest[1], rest[2:]
        if name != self.serving.model.name:
            raise ProtocolError(
                404,
                f"model {name!r} is not served here; this server serves "
                f"{self.serving.model.name!r}",
            )
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                raise ProtocolError(404, "missing version after /versions/")
            if tail[1] != self.serving.model.version:
                raise ProtocolError(
                    404,
                    f"version {tail[1]!r} of {name!r} is not served; "
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
        raise ProtocolError(404, f"no route /{'/'.join(parts)}")

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

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
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
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _infer(self, scope: Scope, receive: Receive, parts: list[str]) -> Response:
        serving = self.serving
        serving.batcher.announce()
        try:
            body = await self._read_body(scope, receive)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            request: InferRequest = parse_infer_request(
                body, headers, n_features=serving.model.n_features, max_rows=self.limits.max_rows
            )
        except BaseException:
            serving.batcher.retract()
            raise
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

    async def _feedback(self, scope: Scope, receive: Receive, parts: list[str]) -> Response:
        body = await self._read_body(scope, receive)
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
        backlog = self.serving.ledger.backlog
        self.serving.metrics.ledger_backlog.labels(self.serving.model.name).set(backlog)
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
        m = self.serving.model
        return (
            200,
            orjson.dumps(
                {
                    "name": m.name,
                    "versions": [m.version],
                    "platform": "pytorch_torchscript",
                    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, m.n_features]}],
                    "outputs": [
                        {"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {
                            "name": "probabilities",
                            "datatype": "FP32",
                            "shape": [-1, len(m.classes)],
                        },
                    ],
                    "parameters": {"classes": m.classes, "checksum": m.checksum},
                }
            ),
            {},
        )


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
