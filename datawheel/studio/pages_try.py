"""/try: draw a digit (or fill a form) and get the model's answer, from the server and the browser.

* ``GET /try``: for an image model (its dataset's manifest has ``image_shape``) a canvas to
  draw on or an image to upload, which the page averages down to the model's pixels; for a
  tabular model a form built from the served model's feature schema (its v2 metadata, or
  the version's ``transform.json`` without a server), with each feature's range.
* ``POST /api/predict``: ``{"rows": [[...]]}`` (raw feature rows) or ``{"inputs":
  {feature: value}}`` (one named tabular row) -> the server's v2 infer, answered as
  ``{"id", "label", "probabilities": {class: p}, "classes", "version", "variant",
  "latency_ms"}`` (the studio's round trip to the server) and ``predictions`` (one per
  row). It is traffic like any other, so it lands in the ledger; no login, but the CSRF
  header (it is a POST).
* ``GET /api/model.onnx`` (:mod:`.model_files`): the ONNX file the page runs in the
  browser with onnxruntime-web, to show both answers side by side.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from datawheel import registry
from datawheel.data.transform import Transform
from datawheel.data.versions import get_version
from datawheel.errors import DatawheelError
from datawheel.studio import model_files
from datawheel.studio.context import Studio, read_json

__all__ = ["Field", "build_form", "parse_predict", "routes"]

_MAX_ROWS = 32
_NO_SERVER = (
    "the studio has no model server to ask: start it with --serve-url http://HOST:PORT "
    "(the address of `datawheel serve`)"
)


@dataclass(frozen=True)
class Field:
    """One input of the tabular form (``input_id`` is positional: names come from data)."""

    index: int
    name: str
    kind: str  # "numeric" or "categorical"
    low: float | None = None
    high: float | None = None
    default: str = ""
    categories: list[str] = field(default_factory=list)

    @property
    def input_id(self) -> str:
        return f"feature-{self.index}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _short(value: float) -> str:
    return f"{value:.6g}"


def build_form(features: list[dict[str, Any]], stats: dict[str, Any] | None = None) -> list[Field]:
    """The form's fields from a feature schema (``[{name, type: numeric, range: [low,
    high]} | {name, type: categorical, categories}]``); a numeric field starts at the
    dataset's mean (``stats``, the manifest's) or the middle of its range."""
    out: list[Field] = []
    for i, spec in enumerate(features):
        name = str(spec.get("name", f"feature {i}"))
        if spec.get("type") == "categorical":
            cats = [str(c) for c in spec.get("categories") or []]
            out.append(Field(i, name, "categorical", categories=cats))
            continue
        span = spec.get("range") or [None, None]
        low, high = (_number(span[0]), _number(span[1])) if len(span) == 2 else (None, None)
        mean = _number(((stats or {}).get(name) or {}).get("mean"))
        if mean is None and low is not None and high is not None:
            mean = (low + high) / 2
        out.append(Field(i, name, "numeric", low, high, _short(mean) if mean is not None else ""))
    return out


def _check_value(name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None  # missing: the server imputes it as training did
    if kind == "categorical":
        if not isinstance(value, str):
            raise HTTPException(400, f"feature {name!r} is categorical: send a string (or null)")
        return value
    number = _number(value)
    if number is None:
        raise HTTPException(400, f"feature {name!r} is numeric: send a finite number (or null)")
    return number


def _rows(raw: Any, width: int) -> list[list[float | None]]:
    if not isinstance(raw, list) or not raw or len(raw) > _MAX_ROWS:
        raise HTTPException(400, f"'rows' must be a list of 1 to {_MAX_ROWS} rows")
    rows: list[list[float | None]] = []
    for i, row in enumerate(raw):
        if not isinstance(row, list) or len(row) != width:
            raise HTTPException(400, f"row {i} must be a list of {width} numbers (the features)")
        values = [None if v is None else _number(v) for v in row]
        if any(v is None and r is not None for v, r in zip(values, row, strict=True)):
            raise HTTPException(400, f"row {i} must hold only finite numbers (or null)")
        rows.append(values)
    return rows


def parse_predict(doc: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The v2 infer body for a ``/api/predict`` body, checked against the server's metadata
    (a 400 that says what to send otherwise)."""
    params = meta.get("parameters") or {}
    schema: list[dict[str, Any]] = list(params.get("features") or [])
    width = int(((meta.get("inputs") or [{}])[0].get("shape") or [0, 0])[-1])
    tensor_ok = "tensor" in (params.get("input_forms") or {})
    if ("rows" in doc) == ("inputs" in doc):
        raise HTTPException(
            400, 'send {"rows": [[number, ...]]} (raw feature rows) or {"inputs": {feature: value}}'
        )
    if "rows" in doc:
        if not tensor_ok:
            raise HTTPException(
                400, 'this model has categorical features: send {"inputs": {feature: value}}'
            )
        rows = _rows(doc["rows"], width)
        flat = [v for row in rows for v in row]
        tensor = {"name": "input", "shape": [len(rows), width], "datatype": "FP32", "data": flat}
        return {"inputs": [tensor]}
    given = doc["inputs"]
    if not schema:
        raise HTTPException(400, 'this model takes pixels, not named features: send {"rows"}')
    if not isinstance(given, dict):
        raise HTTPException(400, "'inputs' must be an object {feature: value}")
    kinds = {str(f["name"]): str(f.get("type", "numeric")) for f in schema}
    if unknown := sorted(set(given) - set(kinds)):
        shown = ", ".join(map(repr, unknown[:5]))
        raise HTTPException(400, f"unknown feature(s) {shown}; the model takes {len(kinds)}")
    inputs = []
    for name, kind in kinds.items():
        value = _check_value(name, kind, given.get(name))
        datatype = "BYTES" if kind == "categorical" else "FP32"
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    return {"inputs": inputs}


def _answer(doc: dict[str, Any], classes: list[str], latency_ms: float) -> dict[str, Any]:
    outputs = {o.get("name"): o for o in doc.get("outputs") or []}
    labels = [str(x) for x in outputs["label"]["data"]]
    flat = [float(x) for x in outputs["probabilities"]["data"]]
    ids = (doc.get("parameters") or {}).get("prediction_ids") or [doc.get("id")]
    k = int((outputs["probabilities"].get("shape") or [0, len(classes)])[-1])
    if len(classes) != k:  # the server moved to a version with other classes since
        classes = [str(i) for i in range(k)]
    predictions = [
        {
            "id": ids[i] if i < len(ids) else None,
            "label": labels[i],
            "probabilities": dict(zip(classes, flat[i * k : (i + 1) * k], strict=True)),
        }
        for i in range(len(labels))
    ]
    return {
        **predictions[0],
        "classes": classes,
        "version": doc.get("model_version"),
        "latency_ms": round(latency_ms, 3),
        "predictions": predictions,
    }


def _manifest(studio: Studio, card: dict[str, Any]) -> dict[str, Any]:
    try:
        dv = get_version(studio.store, str(card.get("dataset")), str(card.get("dataset_version")))
    except (DatawheelError, KeyError, ValueError):
        return {}
    return dv.manifest


def _transform_schema(studio: Studio, card: dict[str, Any]) -> list[dict[str, Any]]:
    """The feature schema from the version's ``transform.json`` (without a server)."""
    if "transform.json" not in (card.get("files") or {}):
        return []
    mv = registry.read_card(studio.store, studio.model, str(card["version"]))
    with TemporaryDirectory() as tmp:
        registry.fetch(studio.store, mv, tmp, only=["transform.json"])
        return Transform.load(Path(tmp, "transform.json")).feature_schema()


def routes(studio: Studio) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        served = await model_files.served_model(studio)
        manifest = await run_in_threadpool(_manifest, studio, served.card)
        params = (served.metadata or {}).get("parameters") or {}
        shape = manifest.get("image_shape") or (params.get("image") or {}).get("shape")
        classes = [str(c) for c in params.get("classes") or manifest.get("classes") or []]
        fields: list[Field] = []
        schema: list[dict[str, Any]] = []
        if not shape:
            schema = list(params.get("features") or [])
            if not schema:
                schema = await run_in_threadpool(_transform_schema, studio, served.card)
            fields = build_form(schema, manifest.get("stats"))
        edge = model_files.edge_file(served.card, served.variant)
        config = {
            "kind": "image" if shape else "tabular",
            "image_shape": list(shape) if shape else None,
            "classes": classes,
            "schema": schema,
            "version": served.version,
            "served_variant": served.variant,
            "edge_file": edge.file if edge else None,
            "has_server": studio.client is not None,
        }
        return studio.page(
            request,
            "try.html",
            title="Try it",
            served=served,
            image_shape=shape,
            fields=fields,
            classes=classes,
            edge=edge,
            config_json=json.dumps(config),
            no_server=_NO_SERVER if studio.client is None else "",
        )

    async def predict(request: Request) -> Response:
        studio.guard.check_csrf(request, None)
        doc = await read_json(request)
        if studio.client is None:
            raise HTTPException(409, _NO_SERVER)
        meta = await model_files.metadata(studio)
        body = parse_predict(doc, meta)
        started = time.perf_counter()
        answer = await run_in_threadpool(studio.client.infer, body)
        latency_ms = (time.perf_counter() - started) * 1000
        classes = [str(c) for c in (meta.get("parameters") or {}).get("classes") or []]
        result = _answer(answer, classes, latency_ms)
        result["variant"] = str((meta.get("parameters") or {}).get("variant", "torchscript"))
        return JSONResponse(result)

    return [
        Route("/try", page, methods=["GET"]),
        Route("/api/predict", predict, methods=["POST"]),
        *model_files.routes(studio),
    ]
