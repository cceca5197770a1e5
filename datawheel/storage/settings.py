"""Connection settings for S3-compatible stores, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from datawheel.storage.base import StoreError

__all__ = ["S3Settings"]

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
        if parts.scheme not in ("", "http", "https") or not parts.netloc or parts.path.strip("/"):
            raise StoreError(
                f"S3 endpoint {raw!r} is not host:port or http(s)://host:port",
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
