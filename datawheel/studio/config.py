"""What the studio is started with, and the one rule for its token."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from datawheel.errors import DatawheelError

__all__ = [
    "SERVE_TOKEN_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "StudioConfig",
    "check_root_path",
    "check_serve_url",
    "studio_token",
]

TOKEN_ENV = "DATAWHEEL_STUDIO_TOKEN"
TOKEN_FILE_ENV = "DATAWHEEL_STUDIO_TOKEN_FILE"
SERVE_TOKEN_ENV = "DATAWHEEL_SERVE_TOKEN"


@dataclass(frozen=True)
class StudioConfig:
    """``store`` is a store URI, ``model`` a registered model name, ``serve_url`` the model
    server's base URL (``http://host:port``; None: no server, the try page says so)."""

    store: str
    model: str
    serve_url: str | None
    token: str  # what labeling needs; see studio_token
    serve_token: str | None = None  # the bearer token the model server wants, if any
    root_path: str = ""  # the path prefix a proxy serves the studio under, e.g. /studio
    allow_framing: bool = False  # let pages of this origin frame it (Kubeflow's dashboard)


def studio_token(environ: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The labeling token: the file $DATAWHEEL_STUDIO_TOKEN_FILE names (a mounted Secret),
    else $DATAWHEEL_STUDIO_TOKEN, else the serving token, else a fresh random one (printed
    at start, like a notebook server's). Returns (token, generated)."""
    env = os.environ if environ is None else environ
    if path := env.get(TOKEN_FILE_ENV, "").strip():
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise DatawheelError(
                f"${TOKEN_FILE_ENV} names {path}, which cannot be read ({exc.strerror})",
                "mount the token Secret there, or unset the variable",
            ) from None
        env = {TOKEN_ENV: text}
        if not text:
            raise DatawheelError(f"the token file {path} is empty", "put the token in it")
    for name in (TOKEN_ENV, SERVE_TOKEN_ENV):
        value = env.get(name, "")
        if value.strip():
            if len(value.strip()) < 8:
                raise DatawheelError(
                    f"${name} is shorter than 8 characters",
                    f"set ${name} to a longer secret, e.g. $(openssl rand -hex 16)",
                )
            return value.strip(), False
    return secrets.token_urlsafe(18), True


def check_root_path(path: str) -> str:
    """``""`` or ``/a/b`` (no trailing slash): the prefix every link of the studio carries."""
    path = path.strip().rstrip("/")
    if path and (not path.startswith("/") or "//" in path or any(c in path for c in "?#\"' <>")):
        raise DatawheelError(
            f"--root-path {path!r} is not a URL path",
            "pass the prefix the proxy serves the studio under, e.g. --root-path /studio",
        )
    return path


def check_serve_url(url: str | None) -> str | None:
    """``url`` without a trailing slash; not http(s)://host[:port] is an error."""
    if url is None or not url.strip():
        return None
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or "//" not in url or len(url.split("/")) > 3:
        raise DatawheelError(
            f"--serve-url {url!r} is not a server address",
            "pass the model server's base URL, e.g. --serve-url http://127.0.0.1:8080",
        )
    return url
