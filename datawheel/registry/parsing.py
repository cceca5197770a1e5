"""Reading registry records (cards, alias records, claims) and refusing corrupt ones.

Every record is checked for the shape the registry relies on, so a truncated file, a
``[]`` or a record without ``version`` is a one-line :class:`CorruptRecordError` that
names the object, never a ``KeyError`` deep inside a command or a server thread.
"""

from __future__ import annotations

import json
import re
from typing import Any

from datawheel.errors import DatawheelError
from datawheel.storage import Store

__all__ = ["VERSION_RE", "CorruptRecordError", "parse_record", "version_number"]

VERSION_RE = re.compile(r"^v[1-9]\d*$")


class CorruptRecordError(DatawheelError):
    """A registry record in the store cannot be read as the registry wrote it."""


def version_number(version: str) -> int:
    """``"v12"`` -> 12; 0 for anything that is not a version id."""
    return int(version[1:]) if VERSION_RE.match(version) else 0


def parse_record(
    store: Store, key: str, data: bytes, *, required: dict[str, type], fix: str
) -> dict[str, Any]:
    """Parse ``data`` (the bytes of ``key``) as a JSON object holding ``required`` fields."""
    where = f"{store.uri.rstrip('/')}/{key}"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"{where} is not valid JSON ({exc})", fix) from None
    if not isinstance(doc, dict):
        raise CorruptRecordError(
            f"{where} holds a JSON {type(doc).__name__}, not an object", fix
        ) from None
    for field, kind in required.items():
        if not isinstance(doc.get(field), kind):
            raise CorruptRecordError(
                f"{where} has no valid {field!r} field (want a {kind.__name__})", fix
            )
    version = doc.get("version")
    if "version" in required and not VERSION_RE.match(str(version)):
        raise CorruptRecordError(f"{where} names version {version!r}, not vN", fix)
    return doc
