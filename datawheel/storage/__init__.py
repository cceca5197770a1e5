"""Storage: the Store seam (``file://`` and ``s3://``), key rules, S3 settings, file helpers.

``open_store(uri)`` is the one way in; everything else in datawheel takes a :class:`Store`.
"""

from __future__ import annotations

import os

from datawheel.storage.base import (
    DEFAULT_STORE_URI,
    KeyNotFoundError,
    Store,
    StoreError,
    delete_quietly,
    get_json,
    put_json,
    to_json_bytes,
)
from datawheel.storage.keys import validate_key, validate_name
from datawheel.storage.local import LocalStore

__all__ = [
    "DEFAULT_STORE_URI",
    "KeyNotFoundError",
    "LocalStore",
    "Store",
    "StoreError",
    "delete_quietly",
    "get_json",
    "location",
    "open_store",
    "put_json",
    "to_json_bytes",
    "validate_key",
    "validate_name",
]


def open_store(uri: str | None = None) -> Store:
    """Open the store named by ``uri`` (default: ``$DATAWHEEL_STORE`` or ``./.datawheel``).

    ``file://PATH`` (or a bare path) opens a :class:`LocalStore`; ``s3://bucket/prefix``
    opens an S3 store whose endpoint and credentials come from the environment
    (see :class:`datawheel.storage.settings.S3Settings`).
    """
    uri = uri or os.environ.get("DATAWHEEL_STORE") or DEFAULT_STORE_URI
    if uri.startswith("s3://"):
        from datawheel.storage.s3 import S3Store

        return S3Store.from_uri(uri)
    if uri.startswith("file://"):
        return LocalStore(uri[len("file://") :] or ".")
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StoreError(
            f"unknown store scheme {scheme!r} in {uri!r}",
            "use file://PATH for a local folder or s3://BUCKET/PREFIX for S3/MinIO",
        )
    return LocalStore(uri)


def location(store: Store, key: str) -> str:
    """Where a person finds ``key``: a file path for a local store, else its store URI."""
    if isinstance(store, LocalStore):
        return str(store.root / validate_key(key))
    return f"{store.uri.rstrip('/')}/{validate_key(key)}"
