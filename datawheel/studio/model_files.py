"""Which model version the studio shows, and its ONNX file for the browser.

:func:`served_model` is the version and variant the model server runs (from its v2
metadata, cached for a few seconds), or, without a server, the champion and the variant
its card chose. ``GET /api/model.onnx`` answers that version's ONNX file from the
registry, its bytes checked against the card's SHA-256: the file of the variant the
server runs when that is an ONNX one (onnx, onnx-int8, student), else ``model.onnx``, so
the browser's answer can be held against the server's. The headers say which:
``X-Model-Version``, ``X-Model-Variant`` (the variant of the file), ``X-Model-File``,
``X-Served-Variant`` (what the server runs) and ``ETag`` (the file's SHA-256).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from datawheel import registry
from datawheel.errors import DatawheelError
from datawheel.serving.variants import VARIANTS, pick_variant
from datawheel.storage import KeyNotFoundError
from datawheel.storage.files import sha256_bytes
from datawheel.studio.context import Studio

__all__ = ["EdgeFile", "Served", "edge_file", "metadata", "routes", "served_model"]

_METADATA_TTL_S = 5.0
_FULL_ONNX = "model.onnx"


@dataclass(frozen=True)
class Served:
    """The version the studio shows: what the server runs, or the champion without one."""

    version: str
    variant: str  # the variant the server runs (or would run: the card's choice)
    card: dict[str, Any]
    metadata: dict[str, Any] | None  # the server's v2 metadata; None without a server
    warning: str = ""  # why the server's view is missing, when it should be there


@dataclass(frozen=True)
class EdgeFile:
    """The ONNX file the browser runs for a version."""

    file: str
    variant: str  # the variant that file is
    same_as_server: bool  # True: the very file the server runs


async def metadata(studio: Studio) -> dict[str, Any]:
    """The server's ``GET /v2/models/NAME`` (cached ``_METADATA_TTL_S``); needs a client."""
    assert studio.client is not None
    cached = studio.cache.get("try.metadata")
    if cached is not None and time.monotonic() - cached[0] < _METADATA_TTL_S:
        doc: dict[str, Any] = cached[1]
        return doc
    doc = await run_in_threadpool(studio.client.metadata)
    studio.cache["try.metadata"] = (time.monotonic(), doc)
    return doc


def _card(studio: Studio, version: str) -> dict[str, Any]:
    return dict(registry.resolve(studio.store, studio.model, version).card)


async def served_model(studio: Studio) -> Served:
    """The served version and variant (see the module docstring). A server that cannot be
    reached leaves the champion shown, with a warning."""
    warning = ""
    if studio.client is not None:
        try:
            meta = await metadata(studio)
        except HTTPException as exc:
            warning = str(exc.detail)
        else:
            version = str((meta.get("versions") or ["champion"])[0])
            params = meta.get("parameters") or {}
            card = await run_in_threadpool(_card, studio, version)
            return Served(version, str(params.get("variant", "torchscript")), card, meta)
    card = await run_in_threadpool(_card, studio, "champion")
    try:
        variant = pick_variant(card).name
    except DatawheelError:
        variant = "torchscript"
    return Served(str(card["version"]), variant, card, None, warning)


def edge_file(card: dict[str, Any], served_variant: str) -> EdgeFile | None:
    """The ONNX file of ``served_variant`` when it is an ONNX one, else ``model.onnx``;
    None when the version has neither."""
    files = card.get("files") or {}
    variant = VARIANTS.get(served_variant)
    if variant is not None and variant.runtime == "onnxruntime" and variant.file in files:
        return EdgeFile(variant.file, variant.name, True)
    if _FULL_ONNX in files:
        return EdgeFile(_FULL_ONNX, "onnx", served_variant == "onnx")
    return None


def _read_verified(studio: Studio, card: dict[str, Any], fname: str) -> bytes:
    version = str(card["version"])
    key = f"models/{studio.model}/versions/{version}/{fname}"
    cache_key = f"try.onnx:{version}:{fname}:{card['files'][fname]}"
    cached = studio.cache.get(cache_key)
    if isinstance(cached, bytes):
        return cached
    try:
        data = studio.store.get_bytes(key)
    except KeyNotFoundError:
        raise HTTPException(
            404,
            f"model {studio.model}:{version} lists {fname} but the store has no {key}; "
            "re-register the version or promote another",
        ) from None
    if sha256_bytes(data) != card["files"][fname]:
        raise HTTPException(
            503,
            f"model {studio.model}:{version} file {fname} does not match its card's SHA-256; "
            "the stored copy is corrupt: re-register the version or promote another",
        )
    for old in [k for k in studio.cache if k.startswith("try.onnx:")]:
        del studio.cache[old]  # one file kept: the version shown now
    studio.cache[cache_key] = data
    return data


def routes(studio: Studio) -> list[BaseRoute]:
    async def model_onnx(request: Request) -> Response:
        served = await served_model(studio)
        edge = edge_file(served.card, served.variant)
        where = f"model {studio.model}:{served.version}"
        if edge is None:
            raise HTTPException(
                404,
                f"{where} has no ONNX file (model.onnx is not among its files), so it cannot "
                "run in the browser; retrain it with this datawheel (the train step exports "
                "model.onnx) and register it",
            )
        if any(f.startswith(edge.file + ".") for f in served.card.get("files") or {}):
            raise HTTPException(
                404,
                f"{where}'s {edge.file} keeps its weights in a separate file (a model over "
                "2 GB), too large to run in the browser",
            )
        data = await run_in_threadpool(_read_verified, studio, served.card, edge.file)
        headers = {
            "x-model-version": served.version,
            "x-model-variant": edge.variant,
            "x-model-file": edge.file,
            "x-served-variant": served.variant,
            "etag": f'"{served.card["files"][edge.file]}"',
            "cache-control": "no-cache",
        }
        return Response(data, media_type="application/octet-stream", headers=headers)

    return [Route("/api/model.onnx", model_onnx, methods=["GET"])]
