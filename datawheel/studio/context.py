"""What every page handler gets: the config, the store, the templates, the server client."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from datawheel.storage import Store
from datawheel.studio.config import StudioConfig
from datawheel.studio.security import Guard
from datawheel.studio.serve_client import ServeClient

__all__ = ["STATIC_DIR", "TEMPLATE_DIR", "Studio", "read_json", "with_root"]

_HERE = Path(__file__).parent
TEMPLATE_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"

#: The navigation bar: (path, title).
NAV = (("/", "Overview"), ("/try", "Try it"), ("/review", "Review"), ("/flywheel", "Flywheel"))


def _templates() -> Jinja2Templates:
    """Every template autoescaped, whatever its name: data from the store renders as text."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True)
    return Jinja2Templates(env=env)


@dataclass
class Studio:
    config: StudioConfig
    store: Store
    guard: Guard
    client: ServeClient | None
    templates: Jinja2Templates = field(default_factory=lambda: _templates())
    cache: dict[str, Any] = field(default_factory=dict)  # per-process caches, by page module

    @property
    def model(self) -> str:
        return self.config.model

    def page(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """``template`` rendered with what base.html needs (nav, model, csrf, login state)."""
        base = {
            "root": self.config.root_path,
            "nav": NAV,
            "path": request.url.path,
            "model": self.config.model,
            "csrf": self.guard.csrf_value(request),
            "logged_in": self.guard.session_ok(request),
            "serve_url": self.config.serve_url,
        }
        response: HTMLResponse = self.templates.TemplateResponse(
            request, template, {**base, **context}, status_code=status_code
        )
        if self.config.root_path:  # behind a proxy under a prefix: every site link carries it
            body = bytes(response.body).decode()
            response = HTMLResponse(
                with_root(body, self.config.root_path), status_code, headers=_kept(response)
            )
        return response

    def url(self, path: str) -> str:
        """``path`` (``/...``) as the browser must ask for it: under the root path."""
        return self.config.root_path + path


_SITE_LINK = re.compile(r'(\s(?:href|src|action|formaction|data-[a-z-]*url)=")/(?!/)')


def with_root(html: str, root: str) -> str:
    """Every site-absolute link of ``html`` (``href="/..."``, ``src``, ``action``) under
    ``root``; other hosts' links and ``//`` links stay as they are."""
    return _SITE_LINK.sub(lambda m: f"{m.group(1)}{root}/", html)


def _kept(response: HTMLResponse) -> dict[str, str]:
    return {
        k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
    }


_MAX_JSON_BYTES = 64 * 1024


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body, or a 400/413/415 that says what was wrong."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/json":
        raise HTTPException(415, "send the body as JSON (Content-Type: application/json)")
    body = await request.body()
    if len(body) > _MAX_JSON_BYTES:
        raise HTTPException(413, f"body of {len(body)} bytes exceeds {_MAX_JSON_BYTES}")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HTTPException(400, "body must be a JSON object")
    return doc
