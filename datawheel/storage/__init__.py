"""Storage: the Store seam (``file://`` and ``s3://``), key rules, S3 settings, file helpers.

``open_store(uri)`` is the one way in; everything else in datawheel takes a :class:`Store`.
"""

from __future__ import annotations

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
    """Open the store named by ``uri`` (default: ``$DATAWHEEL_STORE`` or ``file://.datawheel``).

    ``file://PATH`` (or a bare path) opens a :class:`LocalStore`, whose folder is made by the
    first write (so reading never creates anything); ``s3://bucket/prefix`` opens an S3 store
    whose endpoint and credentials come from the environment (see
    :class:`datawheel.storage.settings.S3Settings`). A malformed URI raises StoreError.
    """
    from datawheel.storage.settings import local_store_path, store_uri

    uri = store_uri(uri)
    path = local_store_path(uri)
    if path is None:
        from datawheel.storage.s3 import S3Store

        return S3Store.from_uri(uri)
    return LocalStore(path)


def location(store: Store, key: str) -> str:
    """Where a person finds ``key``: a file path for a local store, else its store URI."""
    if isinstance(store, LocalStore):
        return str(store.root / validate_key(key))
    return f"{store.uri.rstrip('/')}/{validate_key(key)}"
