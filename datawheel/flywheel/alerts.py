"""The Alertmanager webhook receiver: firing drift and accuracy alerts start a flywheel run.

``POST /alertmanager`` takes Alertmanager's webhook payload, version "4"::

    {"version": "4", "groupKey": "...", "status": "firing", "receiver": "...",
     "groupLabels": {...}, "commonLabels": {...}, "alerts": [{"status": "firing",
     "labels": {"alertname": "DatawheelInputDrift", "model": "digits", ...}, ...}]}

Firing alerts named in manifests/monitoring/prometheusrule.yaml map to a trigger: the drift
alerts (:data:`DRIFT_ALERTS`) and the live-accuracy alert (:data:`ACCURACY_ALERTS`), for the
watched model (an alert with another ``model`` label is ignored). Alertmanager repeats a
group's notification (every ``repeat_interval``, and on every change of the group): the
trigger's key is the groupKey within the cooldown period, so repeats are one reason, and the
watcher's guards (one run in flight, the cooldown, a reason claimed once) stop the rest. A
group already answered in this cooldown period is answered from memory without touching
the store, so a storm costs nothing. A bad body is a 4xx with a JSON error, never a 5xx.
``GET /healthz`` is the probe.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from datawheel.flywheel.controller import Decision, Watcher
from datawheel.flywheel.rules import Trigger, bucket

__all__ = ["ACCURACY_ALERTS", "DRIFT_ALERTS", "MAX_BODY", "PayloadError", "create_app", "triggers"]

DRIFT_ALERTS = ("DatawheelInputDrift", "DatawheelPredictionDrift")
ACCURACY_ALERTS = ("DatawheelLiveAccuracyLow",)
MAX_BODY = 1 << 20  # Alertmanager truncates at max_alerts; a megabyte is far beyond a group


class PayloadError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _check(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PayloadError(422, "the body must be a JSON object (Alertmanager webhook payload)")
    version = payload.get("version")
    if version != "4":
        raise PayloadError(422, f'unsupported payload version {version!r}: expected "4"')
    for name, kind in (("groupKey", str), ("status", str), ("alerts", list)):
        if not isinstance(payload.get(name), kind):
            raise PayloadError(422, f"field {name!r} is missing or not a {kind.__name__}")
    if payload["status"] not in ("firing", "resolved"):
        raise PayloadError(422, f"status {payload['status']!r} is not 'firing' or 'resolved'")
    for i, alert in enumerate(payload["alerts"]):
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise PayloadError(422, f"alerts[{i}] is not an object with a 'labels' object")
        if alert.get("status") not in ("firing", "resolved"):
            raise PayloadError(422, f"alerts[{i}].status is not 'firing' or 'resolved'")
        if not all(isinstance(v, str) for v in alert["labels"].values()):
            raise PayloadError(422, f"alerts[{i}].labels has a value that is not a string")
    return payload


def triggers(
    payload: dict[str, Any], model: str, *, now: float, cooldown_s: float
) -> list[Trigger]:
    """The triggers of a checked payload for ``model``, accuracy first."""
    group = hashlib.sha256(payload["groupKey"].encode()).hexdigest()[:16]
    out: list[Trigger] = []
    for kind, names in (("accuracy", ACCURACY_ALERTS), ("drift", DRIFT_ALERTS)):
        firing = [
            a["labels"]
            for a in payload["alerts"]
            if a["status"] == "firing"
            and a["labels"].get("alertname") in names
            and a["labels"].get("model", model) == model
        ]
        if not firing:
            continue
        first = firing[0]
        where = f"{model}:{first['version']}" if first.get("version") else model
        out.append(
            Trigger(
                f"alert-{kind}",
                f"alert:{model}:{group}:{bucket(now, cooldown_s)}",
                f"alert {first['alertname']} firing for {where}"
                + (f" (+{len(firing) - 1} more)" if len(firing) > 1 else ""),
            )
        )
    return out


def create_app(
    watcher: Watcher, *, on_decision: Callable[[Decision], None] = lambda d: None
) -> Starlette:
    """The webhook for ``watcher``'s model; ``on_decision`` sees each run it starts or not."""
    model, cfg = watcher.config.model, watcher.config
    answered: dict[str, dict[str, Any]] = {}  # trigger key -> the answer given
    lock = threading.Lock()

    def handle(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        now = watcher.now()
        found = triggers(payload, model, now=now, cooldown_s=cfg.cooldown_s)
        if not found:
            return 200, {
                "action": "ignored",
                "detail": f"no firing drift or accuracy alert for {model}",
            }
        with lock:
            if found[0].key in answered:
                return 200, {**answered[found[0].key], "repeat": True}
            decision: Decision = watcher.fire(found[0])
            on_decision(decision)
            body = decision.to_json()
            if decision.action == "started" or decision.refused == "duplicate":
                answered[found[0].key] = body
            return 200, body

    async def alertmanager(request: Request) -> JSONResponse:
        if "json" not in request.headers.get("content-type", "application/json"):
            return _error(415, "send the payload as application/json")
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
            return _error(413, f"the body is over {MAX_BODY} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return _error(413, f"the body is over {MAX_BODY} bytes")
        try:
            payload = _check(json.loads(raw))
        except ValueError as exc:
            status = exc.status if isinstance(exc, PayloadError) else 400
            message = str(exc) if isinstance(exc, PayloadError) else f"the body is not JSON: {exc}"
            return _error(status, message)
        try:
            status, body = await run_in_threadpool(handle, payload)
        except Exception as exc:  # the store unreachable: Alertmanager retries on 5xx only
            return JSONResponse({"error": f"cannot decide now: {exc}"}, status_code=503)
        return JSONResponse(body, status_code=status)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": model})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        code = exc.status_code if isinstance(exc, HTTPException) else 400
        return _error(code, f"{request.method} {request.url.path}: {getattr(exc, 'detail', exc)}")

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/alertmanager", alertmanager, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
    )
