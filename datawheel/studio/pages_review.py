"""/review: label what most needs a human, with the keyboard.

Two queues: **uncertain** predictions from the ledger (:mod:`.review_queue`, by margin or
entropy) and **issues**, dataset rows whose label is likely wrong (:mod:`.label_issues`).
The page is a shell; ``review.js`` fetches ``GET /api/review?queue=uncertain|issues&
by=margin|entropy&limit=N&offset=K`` and posts labels to ``POST /api/label``.

Keys: a class named by one digit has that digit; otherwise classes take the letters a-z in
order, skipping ``s`` (skip) and ``u`` (undo). Enter accepts the prediction.
"""

from __future__ import annotations

import string
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from datawheel.data import versions as ds
from datawheel.errors import DatawheelError
from datawheel.flywheel.harvest import current_dataset
from datawheel.studio.context import Studio
from datawheel.studio.label_issues import issue_page
from datawheel.studio.review_queue import BY, labeled_today_now, uncertain_page

__all__ = ["class_keys", "input_kind", "routes"]

QUEUES = ("uncertain", "issues")
MAX_LIMIT = 200
MAX_OFFSET = 10_000_000
_LETTERS = [c for c in string.ascii_lowercase if c not in "su"]


def class_keys(classes: list[str]) -> dict[str, str]:
    """class -> the key that picks it (classes beyond the keys have none)."""
    if classes and all(len(c) == 1 and c.isdigit() for c in classes):
        return {c: c for c in classes}
    return dict(zip(classes, _LETTERS, strict=False))


def input_kind(dv: ds.DatasetVersion | None) -> dict[str, Any]:
    """How items show their input: an image of ``shape`` or a table of ``features``."""
    if dv is None:
        return {"kind": "table", "features": []}
    shape = dv.manifest.get("image_shape")
    n = len(dv.features)
    if isinstance(shape, list) and len(shape) == 3 and shape[0] * shape[1] * shape[2] == n:
        return {"kind": "image", "shape": [int(v) for v in shape], "features": dv.features}
    return {"kind": "table", "features": dv.features}


def _dataset(studio: Studio) -> tuple[ds.DatasetVersion | None, str]:
    try:
        return current_dataset(studio.store, studio.model), ""
    except DatawheelError as exc:
        return None, str(exc)


def _int(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(
            400, f"{name}={raw[:40]!r} is not a whole number: use 0..{high}"
        ) from None
    if not 0 <= value <= high:
        raise HTTPException(400, f"{name}={value} is out of range: use 0..{high}")
    return value


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str:
    raw = request.query_params.get(name) or allowed[0]
    if raw not in allowed:
        raise HTTPException(400, f"{name}={raw[:40]!r} is not known: use one of {list(allowed)}")
    return raw


def routes(studio: Studio) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        queue = request.query_params.get("queue", "uncertain")
        by = request.query_params.get("by", "margin")
        dv, problem = await run_in_threadpool(_dataset, studio)
        classes = dv.classes if dv is not None else []
        return studio.page(
            request,
            "review.html",
            title="Review",
            queue=queue if queue in QUEUES else "uncertain",
            by=by if by in BY else "margin",
            keys=list(class_keys(classes).items()),
            problem=problem,
            dataset=dv,
        )

    async def api(request: Request) -> Response:
        queue = _choice(request, "queue", QUEUES)
        by = _choice(request, "by", BY)
        limit = _int(request, "limit", 20, MAX_LIMIT)
        offset = _int(request, "offset", 0, MAX_OFFSET)
        start = time.perf_counter()
        dv, problem = await run_in_threadpool(_dataset, studio)
        if queue == "uncertain":
            doc = await run_in_threadpool(uncertain_page, studio, by, limit, offset)
        else:
            if dv is None:
                raise HTTPException(409, f"no dataset to review: {problem}")
            doc = await run_in_threadpool(issue_page, studio, limit, offset, dv)
            doc["labeled_today"] = await run_in_threadpool(labeled_today_now, studio)
        classes = dv.classes if dv is not None else []
        return JSONResponse(
            {
                "queue": queue,
                "by": by,
                "limit": limit,
                "offset": offset,
                **doc,
                "classes": classes,
                "keys": class_keys(classes),
                "input": input_kind(dv),
                "ms": round((time.perf_counter() - start) * 1000, 2),
            }
        )

    return [
        Route("/review", page, methods=["GET"]),
        Route("/api/review", api, methods=["GET"]),
    ]
