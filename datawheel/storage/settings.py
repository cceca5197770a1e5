"""Where the store is: the store URI (``--store``, ``$DATAWHEEL_STORE``, the default) and the
S3 connection settings, read from the environment.

A store URI is ``file://PATH`` (a relative PATH is relative to the working folder; ``~`` is
the home folder), a bare path, or ``s3://BUCKET/PREFIX``. Anything else that looks like a
URI (``file:``, ``file:x``, ``::::``) is refused rather than taken for a folder name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from datawheel.redact import redact_netloc
from datawheel.storage.base import DEFAULT_STORE_URI, StoreError

__all__ = ["STORE_ENV", "S3Settings", "local_store_path", "store_uri"]

STORE_ENV = "DATAWHEEL_STORE"
_STORE_FIX = (
    "pass --store file://PATH (a folder, e.g. file://.datawheel or file:///srv/datawheel), "
    f"a plain folder path, or s3://BUCKET/PREFIX; or set ${STORE_ENV} to one of those"
)
# 'scheme:' before any '/': a URI, not a folder name (a folder named 'a:b' is written ./a:b)
_LOOKS_LIKE_URI = re.compile(r"^[^/]*:")


def store_uri(uri: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The store a command uses: ``uri`` (``--store``), else ``$DATAWHEEL_STORE``, else the
    default ``file://.datawheel`` (a folder in the working folder)."""
    chosen = (uri or "").strip() or environ.get(STORE_ENV, "").strip() or DEFAULT_STORE_URI
    local_store_path(chosen)  # refuse a malformed URI here, before anything uses it
    return chosen


def local_store_path(uri: str) -> str | None:
    """The folder of a ``file://`` or bare-path store URI, ``None`` for ``s3://``; a
    malformed URI raises :class:`StoreError` naming it."""
    if any(ch in uri for ch in "\x00\n\r") or not uri.strip():
        raise StoreError(f"store {uri!r} is empty or has a control character", _STORE_FIX)
    if uri.startswith("s3://"):
        return None
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if not path:
            raise StoreError(f"store {uri!r} names no folder", _STORE_FIX)
        return path
    if "://" in uri:
        raise StoreError(
            f"store {uri!r} has the unknown scheme {uri.split('://', 1)[0]!r}", _STORE_FIX
        )
    if _LOOKS_LIKE_URI.match(uri):
        raise StoreError(
            f"store {uri!r} is not file://PATH, s3://BUCKET/PREFIX or a folder path",
            f"{_STORE_FIX} (a folder whose name has a ':' is written ./NAME)",
        )
    return uri


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _first(environ: Mapping[str, str], *names: str) -> str:
    """The first non-empty value among ``names`` (stripped), else ``""``.

    ``NAME_FILE=/path`` stands for ``NAME``: the value is read from that file, which is how
    Kubernetes mounts a Secret as files (safer than putting it in the environment).
    """
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
        path = environ.get(f"{name}_FILE", "").strip()
        if path:
            try:
                value = Path(path).read_text().strip()
            except OSError as exc:
                raise StoreError(
                    f"{name}_FILE={path!r} cannot be read ({exc.strerror or exc})",
                    f"mount the Secret at that path or unset {name}_FILE",
                ) from None
            if value:
                return value
    return ""


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 server is and how to sign in to it."""

    endpoint: str  # host:port, no scheme
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False
    region: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> S3Settings:
        """Read ``DATAWHEEL_S3_ENDPOINT`` (or ``AWS_ENDPOINT_URL``/``MINIO_ENDPOINT``) and keys."""
        raw = _first(environ, "DATAWHEEL_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
        if not raw:
            raise StoreError(
                "no S3 endpoint is configured",
                "set DATAWHEEL_S3_ENDPOINT=host:port (or AWS_ENDPOINT_URL=http://host:port)",
            )
        parts = urlsplit(raw if "://" in raw else f"//{raw}")
        if "@" in parts.netloc:  # keys in the URL would be printed with every error
            raise StoreError(
                f"S3 endpoint {redact_netloc(raw)!r} has credentials in it",
                "set DATAWHEEL_S3_ENDPOINT to host:port only and the keys in "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
        if parts.scheme not in ("", "http", "https") or not parts.netloc or parts.path.strip("/"):
            raise StoreError(
                f"S3 endpoint {redact_netloc(raw)!r} is not host:port or http(s)://host:port",
                "set DATAWHEEL_S3_ENDPOINT=host:port, e.g. minio.kubeflow:9000",
            )
        secure_raw = environ.get("DATAWHEEL_S3_SECURE", "").strip().lower()
        if not secure_raw:
            secure = parts.scheme == "https"
        elif secure_raw in _TRUE | _FALSE:
            secure = secure_raw in _TRUE
        else:
            raise StoreError(
                f"DATAWHEEL_S3_SECURE={secure_raw!r} is not a boolean",
                "set DATAWHEEL_S3_SECURE to true or false",
            )
        access_key = _first(environ, "AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY")
        if not access_key:
            raise StoreError(
                "no S3 access key is configured", "set AWS_ACCESS_KEY_ID (or MINIO_ACCESS_KEY)"
            )
        secret_key = _first(environ, "AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY")
        if not secret_key:
            raise StoreError(
                "no S3 secret key is configured",
                "set AWS_SECRET_ACCESS_KEY (or MINIO_SECRET_KEY)",
            )
        return cls(
            endpoint=parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=_first(environ, "AWS_REGION") or None,
        )
