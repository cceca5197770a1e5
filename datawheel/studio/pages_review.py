"""/review (placeholder until the try page lands)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from datawheel.studio.context import Studio

__all__ = ["routes"]


def routes(studio: Studio) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        return studio.page(request, "error.html", status=200, message="coming")

    return [Route("/review", page, methods=["GET"])]
