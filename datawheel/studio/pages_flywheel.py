"""``/`` (the overview), ``/flywheel`` (the flywheel at a glance) and the reports they link.

* ``GET /``: the champion and its metrics, what the model server serves (its v2 metadata,
  when ``--serve-url`` is set; a note when it is down), the ledger's counts, the pages.
* ``GET /flywheel``: dataset lineage, model versions, drift and live accuracy over time,
  the watcher's runs and the alias moves (:mod:`.flywheel_view`, :mod:`.flywheel_history`).
* ``GET /reports/model/{version}``: the version's HTML evaluation report from the registry
  (checked against the card's checksum);
  ``GET /reports/drift/{version}?start=&end=``: the drift engine's HTML report of the rows
  the version served in that window (nothing keeps drift reports in the store, so the
  studio makes it, as ``datawheel drift --model`` does);
  ``GET /reports/dataset/{name}/{version}``: the version's validation report (text).

The reports are self-contained pages with inline ``<style>``, which the studio's CSP
refuses, so they are served under a CSP of their own: ``sandbox`` (a unique origin, no
scripts, no forms), nothing fetched but ``data:`` images, inline styles only.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from datawheel.errors import DatawheelError
from datawheel.storage import KeyNotFoundError
from datawheel.studio import flywheel_history as fh
from datawheel.studio import flywheel_view as fv
from datawheel.studio import model_files
from datawheel.studio.charts import Series, bar_chart, line_chart
from datawheel.studio.context import Studio

__all__ = ["REPORT_CSP", "routes"]

REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_VERSION = re.compile(r"^v[1-9][0-9]{0,8}$")
_DATASET_VERSION = re.compile(r"^[0-9a-f]{16}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_WINDOW_S = 31 * 86400


def _report(body: str | bytes, media: str = "text/html; charset=utf-8") -> Response:
    kind = HTMLResponse if media.startswith("text/html") else PlainTextResponse
    return kind(body, headers={"content-security-policy": REPORT_CSP, "cache-control": "no-store"})


def _overview(studio: Studio) -> dict[str, Any]:
    store, model = studio.store, studio.model
    models = fv.section(lambda: fv.model_rows(store, model))
    champion = next((m for m in models.items if "champion" in m.aliases), None)
    counts = fv.section(lambda: [fv.ledger_counts(store, model, time.time())])
    predicted = counts.items[0]["predicted"][:30] if counts.items else []
    chart = None
    if predicted:
        chart = bar_chart(
            predicted,
            chart_id="predicted-classes",
            title=f"Predicted classes of all stored predictions of {model}",
            value_format=lambda v: f"{v:.0f}",
        )
    trained_on = fv.section(lambda: _dataset_of(studio, champion))
    return {
        "models": models,
        "champion": champion,
        "trained_on": trained_on.items[0] if trained_on.items else None,
        "counts": counts.items[0] if counts.items else None,
        "counts_error": counts.error,
        "predicted_chart": chart,
    }


def _dataset_of(studio: Studio, champion: fv.ModelRow | None) -> list[dict[str, Any]]:
    """The champion's dataset version: its features (the first few), label and classes."""
    from datawheel.data import versions as ds

    if champion is None or not champion.dataset or not champion.dataset_version:
        return []
    dv = ds.get_version(studio.store, champion.dataset, champion.dataset_version)
    return [
        {
            "features": dv.features[:8],
            "feature_count": len(dv.features),
            "label": dv.label,
            "classes": dv.classes[:12],
            "class_count": len(dv.classes),
            "rows": int(dv.manifest.get("rows") or 0),
        }
    ]


async def _served(studio: Studio) -> tuple[dict[str, Any] | None, str]:
    if studio.client is None:
        return None, ""
    try:
        doc = await model_files.metadata(studio)  # cached a few seconds, as /try has it
    except HTTPException as exc:
        return None, str(exc.detail)
    found = doc.get("parameters")
    params: dict[str, Any] = found if isinstance(found, dict) else {}
    versions = doc.get("versions") or ["?"]
    return {
        "version": str(versions[0]),
        "platform": str(doc.get("platform", "")),
        "variant": str(params.get("variant", "")),
        "runtime": str(params.get("runtime", "")),
        "device": str(params.get("device", "")),
        "classes": [str(c) for c in params.get("classes") or []],
    }, ""


def _accuracy_chart(studio: Studio) -> dict[str, Any]:
    history, size = fh.accuracy_history(studio.store, studio.model)
    if not history:
        return {"chart": None, "size": 0, "rows": []}
    series = [
        Series(
            f"{studio.model}:{version}",
            [(p.start, p.accuracy) for p in points],
            [f"{p.labels} labels" for p in points],
        )
        for version, points in sorted(history.items())
    ]
    chart = line_chart(
        series,
        chart_id="live-accuracy",
        title=f"Live accuracy of {studio.model} from feedback, per {_span(size)}",
        y_label="share of labels that confirm the prediction",
        y_range=(0.0, 1.0),
    )
    rows = [
        (version, fv.when(p.start), p.accuracy, p.labels)
        for version, points in sorted(history.items())
        for p in points[-8:]
    ]
    return {"chart": chart, "size": size, "rows": rows}


def _drift_charts(studio: Studio) -> list[dict[str, Any]]:
    cache: dict[str, Any] = studio.cache.setdefault("flywheel-drift", {})
    if len(cache) > 5000:  # finished buckets accumulate; the references stay
        for key in [k for k in list(cache) if k.startswith("drift:")]:
            cache.pop(key, None)
    out = []
    for h in fh.drift_history(studio.store, studio.model, cache):
        top = h.top_features()
        chart = None
        if h.buckets:
            series = [
                Series(name, [(b.start, b.severity.get(name, math.nan)) for b in h.buckets])
                for name in top
            ]
            chart = line_chart(
                series,
                chart_id=f"drift-{h.version}",
                title=f"Drift of {studio.model}:{h.version}'s served rows, the {len(top)} "
                f"most drifting features, per {_span(h.size)}",
                y_label="severity, log scale (statistic / threshold; 1 = the threshold)",
                threshold=1.0,
                log_y=True,
            )
        rows = [
            {
                "when": fv.when(b.start),
                "rows": b.rows,
                "drift": b.dataset_drift,
                "drifted": len(b.drifted),
                "worst": sorted(b.severity.items(), key=lambda kv: -kv[1])[:3],
                "start": int(b.start),
                "end": int(b.end),
            }
            for b in reversed(h.buckets[-12:])
        ]
        out.append({"version": h.version, "chart": chart, "rows": rows, "notes": h.notes})
    return out


def _span(seconds: int) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}s"
    return f"{seconds} s"


def _flywheel(studio: Studio) -> dict[str, Any]:
    store, model = studio.store, studio.model
    models = fv.section(lambda: fv.model_rows(store, model))
    datasets = fv.section(lambda: fv.dataset_rows(store, model, models.items))
    accuracy = fv.section(lambda: [_accuracy_chart(studio)])
    drift = fv.section(lambda: _drift_charts(studio))
    happened = fv.section(lambda: fv.events(store, model))
    return {
        "models": models,
        "datasets": datasets,
        "accuracy": accuracy.items[0] if accuracy.items else None,
        "accuracy_error": accuracy.error,
        "drift": drift,
        "events": happened,
    }


def _model_report(studio: Studio, version: str) -> bytes:
    from datawheel import registry

    try:
        card = registry.read_card(studio.store, studio.model, version).card
    except KeyNotFoundError:
        raise HTTPException(404, f"model {studio.model} has no version {version}") from None
    digest = (card.get("files") or {}).get("report.html")
    if not digest:
        raise HTTPException(
            404,
            f"{studio.model}:{version} was registered without an HTML report (only the "
            "pipeline's evaluate step writes one)",
        )
    try:
        data = studio.store.get_bytes(f"models/{studio.model}/versions/{version}/report.html")
    except KeyNotFoundError:
        raise HTTPException(
            404, f"the report of {studio.model}:{version} is listed on its card but missing"
        ) from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise HTTPException(409, f"the report of {studio.model}:{version} fails its checksum")
    return data


def _window(request: Request) -> tuple[float, float]:
    now = time.time()
    try:
        end = float(request.query_params.get("end") or now)
        start = float(request.query_params.get("start") or end - 86400)
    except ValueError:
        raise HTTPException(400, "start and end must be seconds since the epoch") from None
    if not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start < end:
        raise HTTPException(400, "the window needs 0 <= start < end (seconds since the epoch)")
    if end - start > _MAX_WINDOW_S:
        raise HTTPException(400, "the window is longer than 31 days: pick a shorter one")
    return start, end


def _drift_report(studio: Studio, version: str, start: float, end: float) -> str:
    from datawheel.monitoring.report_html import drift_html

    cache: dict[str, Any] = studio.cache.setdefault("flywheel-drift", {})
    report, ref_name, cur_name = fh.window_report(
        studio.store, studio.model, version, start, end, cache
    )
    title = f"Drift of {studio.model}:{version}"
    return drift_html(report, title=title, reference_name=ref_name, current_name=cur_name)


def _dataset_report(studio: Studio, name: str, version: str) -> bytes:
    try:
        return studio.store.get_bytes(f"datasets/{name}/versions/{version}/report.md")
    except KeyNotFoundError:
        raise HTTPException(404, f"dataset {name}@{version} has no validation report") from None


def routes(studio: Studio) -> list[BaseRoute]:
    async def overview(request: Request) -> Response:
        ctx = await run_in_threadpool(_overview, studio)
        served, served_error = await _served(studio)
        return studio.page(
            request, "overview.html", served=served, served_error=served_error, **ctx
        )

    async def flywheel(request: Request) -> Response:
        ctx = await run_in_threadpool(_flywheel, studio)
        return studio.page(request, "flywheel.html", **ctx)

    async def model_report(request: Request) -> Response:
        version = request.path_params["version"]
        if not _VERSION.match(version):
            raise HTTPException(404, f"{version!r} is not a model version (v1, v2, ...)")
        return _report(await run_in_threadpool(_model_report, studio, version))

    async def drift_report(request: Request) -> Response:
        version = request.path_params["version"]
        if not _VERSION.match(version):
            raise HTTPException(404, f"{version!r} is not a model version (v1, v2, ...)")
        start, end = _window(request)
        try:
            page = await run_in_threadpool(_drift_report, studio, version, start, end)
        except DatawheelError as exc:
            raise HTTPException(404, str(exc)) from None
        return _report(page)

    async def dataset_report(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        if not _NAME.match(name) or not _DATASET_VERSION.match(version):
            raise HTTPException(404, "no such dataset version (NAME / 16 hex digits)")
        data = await run_in_threadpool(_dataset_report, studio, name, version)
        return _report(data, "text/plain; charset=utf-8")

    return [
        Route("/", overview, methods=["GET"]),
        Route("/flywheel", flywheel, methods=["GET"]),
        Route("/reports/model/{version}", model_report, methods=["GET"]),
        Route("/reports/drift/{version}", drift_report, methods=["GET"]),
        Route("/reports/dataset/{name}/{version}", dataset_report, methods=["GET"]),
    ]
