"""Canary rollout without a service mesh: replica counts shift the traffic, Prometheus judges.

Runbook (what ``datawheel deploy canary --model NAME`` does)::

    vN      = NAME@candidate: what the evaluator promoted with canaries on; nothing else is
              rolled out, a rejected model never (datawheel.deploy.candidate)
    stable  = Deployment datawheel-serve (serves NAME@champion; its HPA owns its size, S pods)
    canary  = Deployment datawheel-serve-canary: stable's pods, track=canary, NAME:vN pinned
    for each traffic share w in --steps (0.1, 0.25, 0.5):
        canary replicas = max(1, round(S * w / (1 - w))); wait until they are ready
        every --interval: ask Prometheus for both versions' inference error rate and p99
        over --window, and their feedback labels since the canary started (live accuracy),
        and judge (datawheel.deploy.canary_policy):
            rollback -> delete the canary, unset the candidate, stop
            wait     -> look again (at most --max-waits times, then roll back: inconclusive)
            advance  -> next share
    after the last share: champion alias -> vN by compare-and-swap, expecting the champion
    that was live when the canary started (every stable pod hot-swaps to it within its poll
    interval, so it takes all the traffic), unset the candidate, then delete the canary.

A rollback on the metrics (errors, latency, accuracy) unsets the candidate: the canary
decided against it. One for want of a verdict (too little traffic, pods never ready) or an
abort (Prometheus or the API down, Ctrl-C) leaves it, so the canary can be run again.

The stable Deployment is never scaled: the canary only adds pods, so a bad canary never
takes capacity away and the HorizontalPodAutoscaler is not fought. Its only change is the
``datawheel.dev/last-canary`` annotation: a one-line summary of the last run. The full
record (decision, why, every look at the metrics, the thresholds) goes to the store as
``models/NAME/canary/<UTC time>.json``. Anything unexpected (Prometheus or the API
unreachable, Ctrl-C) deletes the canary before the error is raised.

The Service selects both tracks, so a request is served by a pod of either version in
proportion to their ready pods; the ``version`` label on the server's metrics tells the two
apart in Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from datawheel import registry
from datawheel.deploy.canary_policy import Decision, Thresholds, Verdict, judge
from datawheel.deploy.canary_spec import (
    CANARY_ANNOTATION,
    canary_deployment,
    canary_replicas,
    check_follows_champion,
)
from datawheel.deploy.candidate import candidate_to_roll_out, retire_candidate
from datawheel.deploy.kube import Deployments
from datawheel.deploy.prom import Prometheus, observe, validate_window
from datawheel.errors import DatawheelError
from datawheel.storage import Store, put_json, validate_name

__all__ = ["CanaryConfig", "run_canary"]

STABLE = "datawheel-serve"
CANARY = "datawheel-serve-canary"


@dataclass(frozen=True)
class CanaryConfig:
    model: str  # its candidate is rolled out
    steps: tuple[float, ...] = (0.1, 0.25, 0.5)  # canary traffic shares
    interval_s: float = 60.0  # between looks at the metrics
    window: str = "1m"  # PromQL range of each look: <= interval, so a look sees one step
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_waits: int = 5  # inconclusive looks per step before rolling back
    ready_timeout_s: float = 300.0  # for pods to become ready after a scale
    matchers: str = ""  # extra PromQL label matchers, e.g. namespace="datawheel"
    stable_name: str = STABLE
    canary_name: str = CANARY


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _RolledBack(Exception):
    def __init__(self, reason: str, *, judged: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.judged = judged  # the metrics said no (not: no verdict): retire the candidate


class _Rollout:
    """One canary run: its state, the Kubernetes calls and the record."""

    def __init__(
        self,
        store: Store,
        deployments: Deployments,
        prom: Prometheus,
        config: CanaryConfig,
        log: Callable[[str], None],
        sleep: Callable[[float], None],
    ) -> None:
        self.store, self.kube, self.prom, self.cfg = store, deployments, prom, config
        self.log, self.sleep = log, sleep
        self.canary_created = False
        self.canary_since = time.time()  # reset when the canary Deployment is created
        self.record: dict[str, Any] = {}

    # --- Kubernetes --------------------------------------------------------------------

    def _replicas(self, name: str) -> tuple[int, int]:
        """(desired, ready) replicas of a Deployment; (0, 0) when it is gone."""
        doc = self.kube.get(name) or {}
        desired = (doc.get("spec") or {}).get("replicas")
        ready = (doc.get("status") or {}).get("readyReplicas")
        return int(1 if desired is None and doc else desired or 0), int(ready or 0)

    def _wait_ready(self, name: str, replicas: int) -> None:
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while True:
            _, ready = self._replicas(name)
            if ready >= replicas:
                return
            if time.monotonic() >= deadline:
                raise _RolledBack(
                    f"deployment {name} had {ready} of {replicas} replicas ready after "
                    f"{self.cfg.ready_timeout_s:g} s"
                )
            self.sleep(min(2.0, max(0.1, self.cfg.ready_timeout_s / 100)))

    def remove_canary(self) -> None:
        if self.canary_created:
            self.kube.delete(self.cfg.canary_name)
            self.canary_created = False

    # --- the run -----------------------------------------------------------------------

    def prepare(self) -> tuple[dict[str, Any], str, str]:
        cfg = self.cfg
        validate_name(cfg.model, "model name")
        validate_window(cfg.window)
        if cfg.max_waits < 0 or cfg.interval_s < 0:
            raise DatawheelError("max-waits and interval must be >= 0", "pass 0 or more")
        stable = self.kube.get(cfg.stable_name)
        if stable is None:
            raise DatawheelError(
                f"deployment {cfg.stable_name!r} is not in namespace {self.kube.namespace!r}",
                "deploy the model server first (kubectl apply -k manifests/overlays/...) "
                "or pass --namespace",
            )
        check_follows_champion(stable, cfg.model)
        if self.kube.get(cfg.canary_name) is not None:
            raise DatawheelError(
                f"deployment {cfg.canary_name!r} already exists in namespace "
                f"{self.kube.namespace!r}: another canary is running or was interrupted",
                f"wait for it, or remove it with 'kubectl -n {self.kube.namespace} delete "
                f"deployment {cfg.canary_name}'",
            )
        champion, candidate = candidate_to_roll_out(self.store, cfg.model)
        return stable, champion, candidate

    def look(self, champion: str, candidate: str) -> tuple[Verdict, dict[str, Any]]:
        cfg = self.cfg
        at, m = time.time(), cfg.matchers  # both versions over the same window
        since = at - self.canary_since  # live accuracy: labels since the canary started
        canary = observe(
            self.prom, cfg.model, candidate, cfg.window, matchers=m, at=at, labels_since_s=since
        )
        stable = observe(
            self.prom, cfg.model, champion, cfg.window, matchers=m, at=at, labels_since_s=since
        )
        verdict = judge(canary, stable, cfg.thresholds)
        canary_ready = self._replicas(cfg.canary_name)[1]
        stable_ready = self._replicas(cfg.stable_name)[1]
        entry = {
            "at": _now(),
            "canary": {**canary.to_json(), "ready_pods": canary_ready},
            "stable": {**stable.to_json(), "ready_pods": stable_ready},
            **verdict.to_json(),
        }
        return verdict, entry

    def steps(self, stable: dict[str, Any], champion: str, candidate: str) -> None:
        cfg = self.cfg
        for share in cfg.steps:
            n_stable = self._replicas(cfg.stable_name)[0]  # its HPA may have moved it
            n_canary = canary_replicas(n_stable, share)
            step: dict[str, Any] = {
                "share": share,
                "canary_replicas": n_canary,
                "stable_replicas": n_stable,
                "pod_share": round(n_canary / (n_canary + n_stable), 4),
                "started_at": _now(),
                "looks": [],
            }
            self.record["steps"].append(step)
            self.log(
                f"step {share:g}: {n_canary} canary pod(s) of {cfg.model}:{candidate} next to "
                f"{n_stable} stable pod(s) of {champion}"
            )
            if not self.canary_created:
                ref = f"{cfg.model}:{candidate}"
                self.kube.create(canary_deployment(stable, cfg.canary_name, ref, n_canary))
                self.canary_created = True
                self.canary_since = time.time()
            else:
                self.kube.patch(cfg.canary_name, {"spec": {"replicas": n_canary}})
            self._wait_ready(cfg.canary_name, n_canary)
            for _ in range(cfg.max_waits + 1):
                self.sleep(cfg.interval_s)
                verdict, entry = self.look(champion, candidate)
                step["looks"].append(entry)
                self.log(f"  {verdict.decision.value}: {verdict.reason}")
                if verdict.decision is Decision.ROLLBACK:
                    raise _RolledBack(verdict.reason, judged=True)
                if verdict.decision is Decision.ADVANCE:
                    break
            else:
                raise _RolledBack(f"inconclusive after {cfg.max_waits + 1} looks: {verdict.reason}")

    def promote(self, candidate: str, reason: str) -> None:
        """Move the champion alias (the stable pods hot-swap to it), then drop the canary."""
        registry.promote(
            self.store,
            self.cfg.model,
            candidate,
            reason=f"canary: {reason}",
            expect=self.record["stable_version"],  # refused if the champion moved meanwhile
        )
        self.record["champion_moved_to"] = candidate
        self.retire(candidate, f"canary promoted it: {reason}")
        self.remove_canary()

    def retire(self, candidate: str, reason: str) -> None:
        """Unset the candidate alias (if it still points at ``candidate``); never raises:
        the champion may have moved already, and the record must say so."""
        try:
            cleared = retire_candidate(self.store, self.cfg.model, candidate, reason)
        except Exception as exc:  # the store failed: the next canary refuses a stale one
            self.record["candidate_error"] = str(exc) or type(exc).__name__
            cleared = False
        self.record["candidate_cleared"] = cleared


def run_canary(
    store: Store,
    deployments: Deployments,
    prom: Prometheus,
    config: CanaryConfig,
    *,
    log: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Roll ``config.version`` of ``config.model`` out next to the stable Deployment, then
    promote it or roll it back; the record of why (also written to the store)."""
    run = _Rollout(store, deployments, prom, config, log, sleep)
    stable, champion, candidate = run.prepare()
    cfg = config
    record = run.record
    record.update(
        model=cfg.model,
        stable_version=champion,
        canary_version=candidate,
        namespace=deployments.namespace,
        stable_deployment=cfg.stable_name,
        canary_deployment=cfg.canary_name,
        prometheus=prom.url,
        window=cfg.window,
        interval_s=cfg.interval_s,
        max_waits=cfg.max_waits,
        thresholds=cfg.thresholds.to_json(),
        started_at=_now(),
        steps=[],
        candidate_cleared=False,
    )
    error: BaseException | None = None
    try:
        run.steps(stable, champion, candidate)
        reason = f"healthy at every step ({', '.join(f'{w:g}' for w in cfg.steps)})"
        run.promote(candidate, reason)
        record.update(decision="promoted", reason=reason)
    except _RolledBack as exc:
        record.update(decision="rolled_back", reason=exc.reason)
        if exc.judged:  # without a verdict the candidate stays, to be tried again
            run.retire(candidate, f"canary rolled it back: {exc.reason}")
    except BaseException as exc:  # Prometheus/API down, Ctrl-C: remove the canary, re-raise
        record.update(decision="aborted", reason=str(exc) or type(exc).__name__)
        error = exc
    if record["decision"] != "promoted":
        try:
            run.remove_canary()
        except Exception as exc:  # the record must still be written
            record["cleanup_error"] = str(exc)
            error = error or exc
    try:
        _finish(store, deployments, record, log)
    except Exception as exc:
        error = error or exc
    if error is not None:
        raise error
    return record


def _summary(record: dict[str, Any]) -> str:
    verb = {"promoted": "promoted", "rolled_back": "rolled back", "aborted": "aborted"}
    line = (
        f"{record['finished_at']} {verb[record['decision']]} {record['model']}:"
        f"{record['canary_version']} (stable {record['stable_version']}): {record['reason']}"
    )
    return " ".join(line.split())  # one line, whatever the reason held


def _finish(
    store: Store, deployments: Deployments, record: dict[str, Any], log: Callable[[str], None]
) -> None:
    """Write the record to the store and the summary onto the stable Deployment."""
    record["finished_at"] = _now()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"models/{record['model']}/canary/{stamp}.json"
    record["record_key"] = key
    put_json(store, key, record)  # first: the record survives an unreachable API server
    summary = _summary(record)
    deployments.patch(
        record["stable_deployment"], {"metadata": {"annotations": {CANARY_ANNOTATION: summary}}}
    )
    log(summary)
