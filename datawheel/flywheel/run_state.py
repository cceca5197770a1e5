"""The watcher's durable state in the store: the run in flight, the last run, the cooldown.

Two objects per model, under ``flywheel/watch/MODEL/``:

* ``state.json``: ``{"seq", "in_flight", "last_run", "last_started", "history"}``, changed
  only by compare-and-swap (``get_tagged`` / ``replace_bytes``), ``seq`` growing with every
  write so no two versions of it have the same bytes;
* ``claims/SHA.json``: one per reason (:attr:`Trigger.key`), made by an exclusive create.
  A reason whose claim exists never starts a second run, whoever asks: the same watcher a
  minute later, a second replica, or a watcher restarted after being killed mid-run.

:meth:`WatchState.claim` checks the guards in order (one run in flight, the cooldown, the
reason not claimed yet), creates the claim, then moves ``in_flight`` by CAS. A watcher that
dies between the two leaves a claim without a run: that reason is lost, never doubled (at
most once, by design). :meth:`release` undoes a claim whose launch failed, so the reason can
try again on a later cycle.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datawheel.errors import DatawheelError
from datawheel.flywheel.rules import Trigger
from datawheel.storage import KeyNotFoundError, Store, to_json_bytes, validate_name

__all__ = ["PROCESS_ID", "Claim", "WatchState", "owner", "owner_alive"]

# This process, as the owner of the runs it starts: a restarted container has the same
# host name and often the same pid (1), never the same PROCESS_ID.
PROCESS_ID = uuid.uuid4().hex
_HISTORY = 20
_CAS_TRIES = 20


def owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "process": PROCESS_ID}


def owner_alive(who: dict[str, Any]) -> bool | None:
    """Whether the process that owns a run is alive: True, False, or None (another host)."""
    if who.get("process") == PROCESS_ID:
        return True
    if who.get("host") != socket.gethostname():
        return None
    pid = who.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or pid <= 0:
        return False  # our pid, another PROCESS_ID: an earlier life of this container
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`WatchState.claim`: ``run`` (the new in-flight record) when
    granted, else ``refused`` ("in_flight", "cooldown" or "duplicate") and ``detail``."""

    run: dict[str, Any] | None
    refused: str = ""
    detail: str = ""


class WatchState:
    """The state of one model's watcher in ``store``."""

    def __init__(self, store: Store, model: str) -> None:
        self.store = store
        self.model = validate_name(model, "model name")
        self.prefix = f"flywheel/watch/{self.model}"
        self.key = f"{self.prefix}/state.json"

    # --- reading -------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        return self._read()[0]

    def _read(self) -> tuple[dict[str, Any], str | None]:
        try:
            data, tag = self.store.get_tagged(self.key)
        except KeyNotFoundError:
            return _empty(), None
        try:
            doc = json.loads(data)
        except ValueError:
            raise DatawheelError(
                f"the watcher state {self.store.uri.rstrip('/')}/{self.key} is not valid JSON",
                "delete it to start over (the claims under claims/ still stop repeated reasons)",
            ) from None
        if not isinstance(doc, dict):
            raise DatawheelError(f"the watcher state {self.key} is not a JSON object", "delete it")
        return doc, tag

    def claim_key(self, key: str) -> str:
        return f"{self.prefix}/claims/{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def claimed(self, key: str) -> bool:
        return self.store.exists(self.claim_key(key))

    # --- writing -------------------------------------------------------------------------

    def update(self, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Apply ``change`` (returning the new state, or None for no write) by CAS, retried
        on a lost race with the state re-read; the state as it stands afterwards."""
        for _ in range(_CAS_TRIES):
            doc, tag = self._read()
            new = change(json.loads(json.dumps(doc)))
            if new is None:
                return doc
            new["seq"] = int(doc.get("seq", 0)) + 1
            data = to_json_bytes(new)
            written = (
                self.store.create_bytes(self.key, data)
                if tag is None
                else self.store.replace_bytes(self.key, data, tag)
            )
            if written:
                return new
        raise DatawheelError(
            f"the watcher state {self.key} kept changing under {_CAS_TRIES} tries",
            "run one watcher per model (the Deployment has one replica)",
        )

    def claim(
        self, trigger: Trigger, *, now: float, cooldown_s: float, run_id: str, extra: dict[str, Any]
    ) -> Claim:
        doc = self.read()
        refused = _guard(doc, now, cooldown_s)
        if refused is not None:
            return refused
        record = {
            "run_id": run_id,
            "key": trigger.key,
            "rule": trigger.rule,
            "reason": trigger.reason,
            "started": now,
            "status": "starting",
            "owner": owner(),
            "handle": None,
            **extra,
        }
        claim_key = self.claim_key(trigger.key)
        if not self.store.create_bytes(claim_key, to_json_bytes(record)):
            return Claim(None, "duplicate", f"a run for {trigger.key!r} was already started")
        outcome: list[Claim] = []

        def take(state: dict[str, Any]) -> dict[str, Any] | None:
            outcome.clear()
            if (late := _guard(state, now, cooldown_s)) is not None:
                outcome.append(late)  # someone else took the slot after our first look
                return None
            state["in_flight"] = record
            state["previous_started"] = state.get("last_started")
            state["last_started"] = now
            return state

        self.update(take)
        if outcome:
            self.store.delete(claim_key)  # ours, and never acted on
            return outcome[0]
        return Claim(record)

    def attach(self, run_id: str, handle: dict[str, Any]) -> None:
        """Record the launcher's handle of the in-flight run (now running)."""

        def change(state: dict[str, Any]) -> dict[str, Any] | None:
            run = state.get("in_flight")
            if not run or run.get("run_id") != run_id:
                return None
            run.update(handle=handle, status="running")
            return state

        self.update(change)

    def finish(
        self, run_id: str, status: str, *, now: float, detail: str = "", release: bool = False
    ) -> dict[str, Any] | None:
        """Move the in-flight run ``run_id`` to ``last_run`` with ``status``; ``release``
        (its launch failed) also deletes its claim and gives back the cooldown."""
        done: list[dict[str, Any]] = []

        def change(state: dict[str, Any]) -> dict[str, Any] | None:
            done.clear()
            run = state.get("in_flight")
            if not run or run.get("run_id") != run_id:
                return None
            run.update(status=status, finished=now, detail=detail)
            state["in_flight"] = None
            if release:
                state["last_started"] = state.get("previous_started")
            else:
                state["last_run"] = run
            state["history"] = [*state.get("history", []), run][-_HISTORY:]
            done.append(run)
            return state

        self.update(change)
        if done and release:
            self.store.delete(self.claim_key(done[0]["key"]))
        return done[0] if done else None


def _empty() -> dict[str, Any]:
    return {"seq": 0, "in_flight": None, "last_run": None, "last_started": None, "history": []}


def _guard(doc: dict[str, Any], now: float, cooldown_s: float) -> Claim | None:
    run = doc.get("in_flight")
    if run:
        return Claim(None, "in_flight", f"run {run.get('run_id')} ({run.get('rule')}) is running")
    last = doc.get("last_started")
    if isinstance(last, int | float) and now - last < cooldown_s:
        left = cooldown_s - (now - last)
        return Claim(None, "cooldown", f"cooling down, {left:.0f}s left")
    return None
