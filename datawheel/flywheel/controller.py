"""The watcher: observe a served model, decide, guard, launch the flywheel pipeline.

:meth:`Watcher.step` is one cycle: follow the run in flight (finished? its owner dead?),
observe (:mod:`datawheel.flywheel.observe`), ask the rules (:mod:`datawheel.flywheel.rules`)
and, if one holds, :meth:`Watcher.fire` it. ``fire`` is also what the Alertmanager webhook
calls. The guards live in the store (:mod:`datawheel.flywheel.run_state`): one run in flight,
the cooldown between run starts, and each reason claimed once, so a restarted watcher, a
second replica or a storm of alerts never starts a second run for the same reason.

Every run gets the pipeline parameters ``store``, ``model_name``, ``since`` ("" : harvest
everything not yet in the dataset; harvesting is idempotent by content), ``until`` (now)
and ``reason`` (recorded in the new dataset version's lineage and the model card), plus
the configured extra parameters.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from datawheel.errors import DatawheelError
from datawheel.flywheel.launch import FAILED, SUCCEEDED, UNKNOWN, Launcher
from datawheel.flywheel.observe import observe_model
from datawheel.flywheel.rules import Observation, Thresholds, Trigger, evaluate
from datawheel.flywheel.run_state import WatchState, owner_alive
from datawheel.storage import Store

__all__ = ["Decision", "WatchConfig", "Watcher"]

Observer = Callable[["Watcher", float], Observation]


@dataclass(frozen=True)
class WatchConfig:
    model: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    cooldown_s: float = 3600.0
    window_s: float = 3600.0
    window: str = "1h"
    parameters: dict[str, Any] = field(default_factory=dict)  # extra pipeline parameters
    max_run_s: float = 6 * 3600.0  # a run nobody can report on is given up after this
    prometheus: str = ""


@dataclass
class Decision:
    """What one cycle (or one alert) did: ``action`` is "started", "refused", "quiet",
    "finished" or "error"."""

    action: str
    at: float
    rule: str = ""
    key: str = ""
    reason: str = ""
    run_id: str = ""
    refused: str = ""
    detail: str = ""
    observation: dict[str, Any] | None = None
    launch_seconds: float | None = None
    external_id: str = ""  # the launcher's id of the run (KFP's run id), if not run_id

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}


def _default_observer(watcher: Watcher, now: float) -> Observation:
    cfg = watcher.config
    last = watcher.state.read().get("last_run") or {}
    since = last.get("started")
    return observe_model(
        watcher.store,
        cfg.model,
        now=now,
        window_s=cfg.window_s,
        window=cfg.window,
        labels_since=float(since) if isinstance(since, int | float) else None,
        prometheus=cfg.prometheus,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Watcher:
    """Watches one model in one store and starts its flywheel runs through ``launcher``."""

    def __init__(
        self,
        store: Store,
        config: WatchConfig,
        launcher: Launcher,
        *,
        observe: Observer = _default_observer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.launcher = launcher
        self.state = WatchState(store, config.model)
        self._observe = observe
        self._clock = clock
        self._lock = threading.Lock()  # one decision at a time in this process

    def now(self) -> float:
        return self._clock()

    # --- following the run in flight -----------------------------------------------------

    def poll(self) -> Decision | None:
        """Settle the run in flight if it finished or can no longer finish."""
        run = self.state.read().get("in_flight")
        if not run:
            return None
        now = self._clock()
        handle = run.get("handle")
        status = self.launcher.status(handle) if handle else UNKNOWN
        if status in (SUCCEEDED, FAILED):
            return self._finish(run, status, now, "")
        if status != UNKNOWN:
            return None
        alive = owner_alive(run.get("owner") or {})
        age = now - float(run.get("started") or now)
        kfp = bool(handle) and handle.get("launcher") == "kfp"
        if (alive is False and not kfp) or age > self.config.max_run_s:
            why = "its watcher died" if alive is False else f"no news for {age:.0f}s"
            return self._finish(run, "lost", now, f"{why}; its reason is not started again")
        return None

    def _finish(self, run: dict[str, Any], status: str, now: float, detail: str) -> Decision:
        self.state.finish(run["run_id"], status, now=now, detail=detail)
        external = str((run.get("handle") or {}).get("run_id") or "")
        return Decision(
            "finished",
            now,
            run.get("rule", ""),
            run.get("key", ""),
            run.get("reason", ""),
            run["run_id"],
            detail=f"{status}{': ' + detail if detail else ''}",
            external_id=external if external != run["run_id"] else "",
        )

    # --- deciding ------------------------------------------------------------------------

    def step(self) -> list[Decision]:
        """One cycle: poll, observe, decide; the decisions made (at least one). Observing
        (seconds, for the drift verdict) holds no lock, so the webhook is answered meanwhile."""
        with self._lock:
            out = [d for d in (self.poll(),) if d is not None]
        now = self._clock()
        try:
            obs = self._observe(self, now)
        except DatawheelError as exc:
            return [*out, Decision("error", now, detail=str(exc))]
        seen = asdict(obs)
        with self._lock:
            last = self.state.read().get("last_run") or {}
            triggers = evaluate(
                obs,
                self.config.thresholds,
                cooldown_s=self.config.cooldown_s,
                since_run=str(last.get("run_id") or "start"),
            )
            if not triggers:
                return [*out, Decision("quiet", now, observation=seen, detail="; ".join(obs.notes))]
            for trigger in triggers:
                decision = self._fire(trigger, now)
                decision.observation = seen
                if decision.refused != "duplicate":
                    break  # started, or a guard that holds for every reason
            return [*out, decision]

    def fire(self, trigger: Trigger) -> Decision:
        """Start a run for ``trigger`` unless a guard holds (the webhook's way in)."""
        with self._lock:
            self.poll()
            return self._fire(trigger, self._clock())

    def _fire(self, trigger: Trigger, now: float) -> Decision:
        cfg = self.config
        digest = hashlib.sha256(trigger.key.encode()).hexdigest()[:8]
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        run_id = f"flywheel-{cfg.model}-{trigger.rule}-{stamp}-{digest}"
        arguments = {
            **cfg.parameters,
            "store": self.store.uri,
            "model_name": cfg.model,
            "since": "",
            "until": _iso(now),
            "reason": trigger.reason,
        }
        claim = self.state.claim(
            trigger,
            now=now,
            cooldown_s=cfg.cooldown_s,
            run_id=run_id,
            extra={"arguments": arguments, "launcher": self.launcher.name},
        )
        base = Decision("refused", now, trigger.rule, trigger.key, trigger.reason)
        if claim.run is None:
            base.refused, base.detail = claim.refused, claim.detail
            return base
        t0 = time.perf_counter()
        try:
            handle = self.launcher.start(arguments, run_id)
        except Exception as exc:  # the KFP API down, a bad package: try again later
            self.state.finish(run_id, "failed-to-start", now=now, detail=str(exc), release=True)
            base.action, base.run_id, base.detail = "error", run_id, f"launch failed: {exc}"
            return base
        launched = time.perf_counter() - t0
        self.state.attach(run_id, handle)
        base.action, base.run_id = "started", run_id
        if str(handle.get("run_id") or run_id) != run_id:
            base.external_id = str(handle["run_id"])
        base.launch_seconds = round(launched, 4)
        return base

    # --- running -------------------------------------------------------------------------

    def run_forever(
        self,
        interval_s: float,
        *,
        report: Callable[[Decision], None] = lambda d: None,
        stop: threading.Event | None = None,
    ) -> None:
        """Cycle every ``interval_s`` until ``stop`` is set; a failing cycle is reported,
        never the end of the watcher."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                for decision in self.step():
                    report(decision)
            except Exception as exc:  # the store unreachable for a while: try again later
                report(Decision("error", self._clock(), detail=f"{type(exc).__name__}: {exc}"))
            stop.wait(interval_s)
