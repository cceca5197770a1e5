"""Aliases: named pointers (``champion``, ``candidate``, ``challenger``) at model versions.

* ``champion``: what the servers serve (they follow it and hot-swap when it moves).
* ``candidate``: a model the evaluator promoted while the deployment uses canaries; only
  ``datawheel deploy canary`` rolls it out, and it becomes champion if the canary passes.
* ``challenger``: the last model the evaluator rejected; it is never rolled out.

An alias record is ``models/NAME/aliases/ALIAS.json``::

    {"alias", "version", "reason", "updated_at",
     "history": [earlier versions, for rollback],
     "moves": [{"from", "to", "reason", "at"}, ...every move ever made]}

:func:`clear` unsets an alias by the same compare-and-swap: the record stays (with its
moves), ``"version": null, "cleared": true``, and reads as unset.

Every move is a compare-and-swap on the record the mover read (an exclusive create for
the first one), so two movers never lose each other's move and the history keeps them
all. A caller that decided against a particular target (the evaluator compared with the
champion it saw) passes ``expect=`` and is refused if the alias moved since.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from datawheel.errors import DatawheelError, name_list
from datawheel.registry.catalog import ModelVersion, list_models, read_card
from datawheel.registry.parsing import VERSION_RE, parse_record
from datawheel.storage import KeyNotFoundError, Store, StoreError, to_json_bytes

__all__ = [
    "ALIASES",
    "ANY",
    "AliasMovedError",
    "clear",
    "get_alias",
    "parse_ref",
    "promote",
    "resolve",
    "rollback",
]

ALIASES = ("champion", "candidate", "challenger")
_MAX_CAS_TRIES = 50


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()  # promote(expect=ANY): move whatever the alias points at now


class AliasMovedError(DatawheelError):
    """The alias no longer points where the caller's decision assumed."""


def _key(name: str, alias: str) -> str:
    return f"models/{name}/aliases/{alias}.json"


def _fix(name: str, alias: str) -> str:
    return f"point it again with 'datawheel models promote {name} vN --alias {alias} --repair'"


def _read(store: Store, name: str, alias: str) -> tuple[dict[str, Any] | None, str | None]:
    """The alias record and its tag, or (None, None) when the alias was never set.

    A cleared record comes back as it is, with ``"version": None``."""
    try:
        data, tag = store.get_tagged(_key(name, alias))
    except KeyNotFoundError:
        return None, None
    key, fix = _key(name, alias), _fix(name, alias)
    record = parse_record(store, key, data, required={}, fix=fix)
    if record.get("cleared") is True and record.get("version") is None:
        return record, tag
    return parse_record(store, key, data, required={"version": str}, fix=fix), tag


def get_alias(store: Store, name: str, alias: str) -> dict[str, Any] | None:
    """The alias record, ``None`` when unset or cleared; a corrupt record is a one-line error."""
    record = _read(store, name, alias)[0]
    return None if record is None or record.get("version") is None else record


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME``, ``NAME@alias`` or ``NAME:version`` -> (name, alias-or-version)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias
    if ":" in ref:
        name, version = ref.split(":", 1)
        return name, version
    return ref, "champion"


def _no_such_model(store: Store, name: str) -> DatawheelError:
    known = list_models(store)
    return DatawheelError(
        f"model {name!r} is not in the registry at {store.uri}: it does not exist",
        f"use one of: {name_list(known)}" if known else "run the training pipeline first",
    )


def resolve(store: Store, name: str, ref: str = "champion") -> ModelVersion:
    """A version by id (``v3``) or alias (``champion``); DatawheelError if missing."""
    version = ref
    if not VERSION_RE.match(ref):
        record = get_alias(store, name, ref)
        if record is None:
            if name not in list_models(store):
                raise _no_such_model(store, name)
            raise DatawheelError(
                f"model {name!r} has no {ref!r} alias",
                f"promote a version with 'datawheel models promote {name} vN --alias {ref}', "
                "or list versions with 'datawheel models list'",
            )
        version = str(record["version"])
    try:
        return read_card(store, name, version)
    except KeyNotFoundError:
        if name not in list_models(store):
            raise _no_such_model(store, name) from None
        raise DatawheelError(
            f"model {name}:{version} is not in the registry",
            "list versions with 'datawheel models list'",
        ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _move(
    store: Store,
    name: str,
    alias: str,
    target_of: Any,
    *,
    reason: str,
    expect: object = ANY,
    repair: bool = False,
) -> dict[str, Any]:
    """Compare-and-swap the alias record until this move lands (or is refused)."""
    key = _key(name, alias)
    for _ in range(_MAX_CAS_TRIES):
        try:
            current, tag = _read(store, name, alias)
        except DatawheelError:
            if not repair:
                raise
            data, tag = store.get_tagged(key)
            current = None
        now = current.get("version") if current else None
        target, history = target_of(current)
        if now == target and not repair:
            return current or {}  # already there: a retried move changes nothing
        if expect is not ANY and now != expect:
            raise AliasMovedError(
                f"{name}@{alias} points at {now or 'nothing'}, not {expect or 'nothing'} as "
                "this move expected: it moved after the decision was made",
                f"re-run the evaluation against the current {alias}",
            )
        moves = list(current.get("moves", [])) if current else []
        moves.append({"from": now, "to": target, "reason": reason, "at": _now()})
        record = {
            "alias": alias,
            "version": target,
            "history": history,
            "moves": moves,
            "reason": reason,
            "updated_at": _now(),
            **({"cleared": True} if target is None else {}),
        }
        data = to_json_bytes(record)
        won = store.create_bytes(key, data) if tag is None else store.replace_bytes(key, data, tag)
        if won:
            return record
    raise StoreError(
        f"{name}@{alias} kept changing while it was being moved ({_MAX_CAS_TRIES} tries)",
        "retry; if it persists, look for a process moving the alias in a loop",
    )


def promote(
    store: Store,
    name: str,
    version: str,
    *,
    alias: str = "champion",
    reason: str = "",
    expect: object = ANY,
    repair: bool = False,
) -> dict[str, Any]:
    """Point ``alias`` at ``version``; the old target joins the history.

    ``expect``: the version (or ``None`` for unset) the alias must still point at, else
    :class:`AliasMovedError`. ``repair``: overwrite a corrupt record instead of refusing.
    """
    target = resolve(store, name, version).version

    def target_of(current: dict[str, Any] | None) -> tuple[str, list[str]]:
        history = [str(v) for v in current.get("history", [])] if current else []
        if current and current.get("version") is not None and current["version"] != target:
            history.append(str(current["version"]))
        return target, history

    return _move(store, name, alias, target_of, reason=reason, expect=expect, repair=repair)


def clear(
    store: Store, name: str, alias: str, *, reason: str = "", expect: object = ANY
) -> dict[str, Any]:
    """Unset ``alias`` (compare-and-swap; ``expect`` as for :func:`promote`).

    The record keeps its moves and history; :func:`get_alias` and :func:`resolve` then
    treat the alias as unset. Clearing an unset alias changes nothing."""

    def target_of(current: dict[str, Any] | None) -> tuple[None, list[str]]:
        return None, [str(v) for v in (current or {}).get("history", [])]

    return _move(store, name, alias, target_of, reason=reason, expect=expect)


def rollback(store: Store, name: str, *, alias: str = "champion") -> dict[str, Any]:
    """Point ``alias`` back at the version it had before the last promotion."""
    current = get_alias(store, name, alias)
    if not current or not current.get("history"):
        raise DatawheelError(
            f"model {name!r} alias {alias!r} has no earlier version to roll back to",
            "promote a specific version with 'datawheel models promote NAME VERSION'",
        )

    def target_of(record: dict[str, Any] | None) -> tuple[str, list[str]]:
        history = [str(v) for v in (record or {}).get("history", [])]
        if not history:
            raise DatawheelError(
                f"model {name!r} alias {alias!r} has no earlier version to roll back to",
                "promote a specific version with 'datawheel models promote NAME VERSION'",
            )
        return history.pop(), history

    return _move(
        store,
        name,
        alias,
        target_of,
        reason=f"rollback from {current['version']}",
        expect=current["version"],
    )
