"""Per-model deploy settings in the store: does this model's deployment use canaries?

The record is ``models/NAME/deploy.json``::

    {"canary": true, "updated_at": "...", "reason": "..."}

``canary: true`` means a model the evaluator promotes becomes the ``candidate``, which only
``datawheel deploy canary`` rolls out (and promotes to ``champion`` if the canary passes);
without it (no record, or ``false``) a promoted model becomes ``champion`` at once and the
servers hot-swap to it.

The register step reads it on every run and ORs it with the pipeline's ``canary``
parameter: either one turns canaries on, and a pipeline run cannot turn them off for a
deployment whose store says it uses them (a run that forgot the parameter must not
hot-swap every server past the canary). Set it with
``datawheel deploy settings --model NAME --canary`` (``--no-canary`` to turn it off).

Writes are a compare-and-swap on the record read (an exclusive create for the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from datawheel.registry.parsing import CorruptRecordError, parse_record
from datawheel.storage import KeyNotFoundError, Store, StoreError, to_json_bytes, validate_name

__all__ = ["DeploySettings", "read_settings", "settings_key", "write_settings"]

_MAX_CAS_TRIES = 20


@dataclass(frozen=True)
class DeploySettings:
    canary: bool = False  # promote -> candidate (rolled out by `datawheel deploy canary`)
    updated_at: str | None = None  # None: never set, the defaults
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {"canary": self.canary, "updated_at": self.updated_at, "reason": self.reason}


def settings_key(name: str) -> str:
    return f"models/{validate_name(name, 'model name')}/deploy.json"


def _fix(name: str) -> str:
    return f"rewrite it with 'datawheel deploy settings --model {name} --canary' (or --no-canary)"


def _read(store: Store, name: str) -> tuple[DeploySettings, str | None]:
    key = settings_key(name)
    try:
        data, tag = store.get_tagged(key)
    except KeyNotFoundError:
        return DeploySettings(), None
    doc = parse_record(store, key, data, required={"canary": bool}, fix=_fix(name))
    at = doc.get("updated_at")
    settings = DeploySettings(
        canary=doc["canary"],
        updated_at=at if isinstance(at, str) else None,
        reason=str(doc.get("reason", "")),
    )
    return settings, tag


def read_settings(store: Store, name: str) -> DeploySettings:
    """The model's deploy settings; the defaults (no canaries) when none were written."""
    return _read(store, name)[0]


def write_settings(store: Store, name: str, *, canary: bool, reason: str = "") -> DeploySettings:
    """Set the model's deploy settings; the settings written."""
    key = settings_key(name)
    for _ in range(_MAX_CAS_TRIES):
        try:
            _, tag = _read(store, name)
        except CorruptRecordError:  # writing the settings again is the repair
            tag = store.get_tagged(key)[1]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        settings = DeploySettings(canary=canary, updated_at=now, reason=reason)
        data = to_json_bytes(settings.to_json())
        won = store.create_bytes(key, data) if tag is None else store.replace_bytes(key, data, tag)
        if won:
            return settings
    raise StoreError(
        f"{key} kept changing while it was being written ({_MAX_CAS_TRIES} tries)",
        "retry; if it persists, look for a process rewriting the deploy settings in a loop",
    )
