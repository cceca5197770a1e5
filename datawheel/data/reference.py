"""A dataset's reference: the committed version later versions are validated against.

The record is ``datasets/NAME/reference.json``::

    {"dataset", "version", "reason", "updated_at",
     "history": [earlier reference versions],
     "moves": [{"from", "to", "reason", "at"}, ...every move ever made]}

It is created by an exclusive create when the first version that passes the absolute
checks is committed (see :mod:`datawheel.data.gate`), and moved only on purpose, by
``datawheel datasets pin-reference``. Every move is a compare-and-swap on the record the
mover read, so two movers never lose each other's move and the history keeps them all.
These functions keep the record; what may become the reference is the gate's decision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from datawheel.errors import DatawheelError
from datawheel.storage import KeyNotFoundError, Store, StoreError, to_json_bytes

__all__ = ["claim_reference", "move_reference", "read_reference", "reference_key"]

_MAX_CAS_TRIES = 50


def reference_key(name: str) -> str:
    return f"datasets/{name}/reference.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parse(store: Store, name: str, data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("version"), str):
        raise DatawheelError(
            f"{store.uri.rstrip('/')}/{reference_key(name)} is not a valid reference record",
            f"pin it again with 'datawheel datasets pin-reference {name} VERSION --reason TEXT'",
        )
    return record


def _read(store: Store, name: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data, tag = store.get_tagged(reference_key(name))
    except KeyNotFoundError:
        return None, None
    return _parse(store, name, data), tag


def read_reference(store: Store, name: str) -> dict[str, Any] | None:
    """The reference record of ``name``, or ``None`` before its first version is committed."""
    return _read(store, name)[0]


def _record(name: str, version: str, reason: str, current: dict[str, Any] | None) -> dict[str, Any]:
    before = str(current["version"]) if current else None
    history = [str(v) for v in current.get("history", [])] if current else []
    if before is not None and before != version:
        history.append(before)
    moves = list(current.get("moves", [])) if current else []
    moves.append({"from": before, "to": version, "reason": reason, "at": _now()})
    return {
        "dataset": name,
        "version": version,
        "reason": reason,
        "updated_at": _now(),
        "history": history,
        "moves": moves,
    }


def claim_reference(store: Store, name: str, version: str, reason: str) -> dict[str, Any]:
    """Make ``version`` the reference if ``name`` has none yet; returns the record that holds."""
    record = _record(name, version, reason, None)
    if store.create_bytes(reference_key(name), to_json_bytes(record)):
        return record
    existing = read_reference(store, name)
    if existing is None:  # pragma: no cover - the record is never deleted
        raise StoreError(f"the reference of {name!r} vanished", "retry")
    return existing


def move_reference(store: Store, name: str, version: str, reason: str) -> dict[str, Any]:
    """Point the reference at ``version`` (the caller checked it may be one), with history."""
    for _ in range(_MAX_CAS_TRIES):
        current, tag = _read(store, name)
        if current is not None and current["version"] == version:
            return current  # already there: a repeated pin changes nothing
        data = to_json_bytes(_record(name, version, reason, current))
        key = reference_key(name)
        won = store.create_bytes(key, data) if tag is None else store.replace_bytes(key, data, tag)
        if won:
            return _parse(store, name, data)
    raise StoreError(
        f"the reference of {name!r} kept changing while it was being pinned "
        f"({_MAX_CAS_TRIES} tries)",
        "retry; if it persists, look for a process pinning the reference in a loop",
    )
