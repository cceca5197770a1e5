"""Key rules: what a store key and a dataset or model name may look like."""

from __future__ import annotations

import re

from datawheel.errors import DatawheelError
from datawheel.storage.base import StoreError

__all__ = ["validate_key", "validate_name", "validate_prefix"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`StoreError`.

    Segments starting with ``.`` are reserved for the stores' own bookkeeping (temp files,
    locks), so no key can collide with them.
    """
    if not isinstance(key, str) or not key:
        raise StoreError("store key is empty", "pass a relative key such as 'datasets/x'")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(
            f"store key {key!r} is absolute or has a forbidden character",
            "use a relative key with '/' separators",
        )
    # Split by hand: PurePosixPath drops "." segments, which let "a/./b" and "./x" through.
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts) or key.endswith("/") or "//" in key:
        raise StoreError(
            f"store key {key!r} has an empty, '.' or '..' segment",
            "keys must not climb out of the store; remove '..' and empty segments",
        )
    if any(p.startswith(".") for p in parts):
        raise StoreError(
            f"store key {key!r} has a segment starting with '.'",
            "start every key segment with a letter, digit or '_' ('.' names are the store's own)",
        )
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: ``""`` for the whole store, else a valid key without slashes around."""
    prefix = prefix.strip("/")
    return validate_key(prefix) if prefix else ""


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it can be one key segment (a dataset or model name), else raise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DatawheelError(
            f"{what} {name!r} is not valid",
            "use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit",
        )
    return name
