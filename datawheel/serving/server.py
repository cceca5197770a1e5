"""Start a model server: load the model, open the ledger, follow the alias, run uvicorn.

The model is loaded (fetched, checksum-verified, warmed up) before the port opens,
so a bad model or store fails the command with a one-line error instead of serving.
SIGTERM makes uvicorn stop accepting, finish in-flight requests, and then the ledger
flushes everything to the store before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from datawheel import registry
from datawheel.data.transform import Transform
from datawheel.monitoring.live import LiveDriftConfig
from datawheel.serving.app import RequestLimits, ServingApp
from datawheel.serving.connections import (
    ConnectionLimits,
    guarded_protocol,
    raise_open_files_limit,
)
from datawheel.serving.ids import PredictionIds, is_legacy_id, load_id_key
from datawheel.serving.ledger import Ledger, read_ledger
from datawheel.serving.model import ServedModel, load_served
from datawheel.serving.predictions import PredictionIndex
from datawheel.serving.state import Serving
from datawheel.serving.telemetry import ServingMetrics
from datawheel.storage import Store, open_store

__all__ = ["AliasWatcher", "ServeConfig", "build_app", "run"]

log = logging.getLogger("datawheel.serve")
TOKEN_ENV = "DATAWHEEL_SERVE_TOKEN"


@dataclass(frozen=True)
class ServeConfig:
    model: str  # NAME, NAME@alias or NAME:vN
    store: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_size: int = 64
    max_latency_ms: float = 2.0
    limits: RequestLimits = field(default_factory=RequestLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    spool_dir: str = ""
    ledger_flush_seconds: float = 2.0
    poll_seconds: float = 2.0
    fsync: bool = False
    load_retry_seconds: float = 2.0  # a refused version is tried again after this, doubling
    drift: LiveDriftConfig = field(default_factory=LiveDriftConfig)  # the live drift window
    variant: str = "auto"  # which exported file serves (serving/variants.py); auto: the card's


class _StoreOnDemand:
    """The ledger's store, opened on first use; if opening fails (S3 down at start-up),
    the next flush tries again."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri
        self._store: Store | None = None

    def __call__(self) -> Store:
        if self._store is None:
            self._store = open_store(self.uri)
        return self._store


@dataclass(frozen=True)
class _Refusal:
    record: dict[str, Any]  # the alias record when the version was refused
    failures: int  # refusals in a row while the record stayed the same
    retry_at: float  # monotonic time of the next try


class AliasWatcher:
    """Follows a registry alias and hot-swaps the served model when it moves.

    The new version is fetched, verified, loaded and warmed up on a worker thread;
    only then is it swapped in. A version that fails is refused (logged with the reason,
    counted) and the old one keeps serving; it is tried again after ``retry_seconds``,
    doubling up to ``max_retry_seconds`` (a store error during the load passes), and at
    once when the alias record changes (the alias is pointed at it again). Every version is
    served as ``variant`` (``auto``: each version's own card's choice); a version without
    that variant is refused like a corrupt one.
    """

    def __init__(
        self,
        serving: Serving,
        store: Store,
        alias: str,
        poll_seconds: float,
        *,
        retry_seconds: float = 2.0,
        max_retry_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        variant: str = "auto",
    ) -> None:
        self.serving = serving
        self.variant = variant
        self.store = store
        self.alias = alias
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max(max_retry_seconds, retry_seconds)
        self.refused: dict[str, _Refusal] = {}
        self._clock = clock
        self._last_problem = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.check)
            except Exception as exc:  # never let one bad poll end the watcher
                self._warn_once(f"alias watcher poll failed: {exc}")

    def _warn_once(self, message: str) -> None:
        """Log a problem when it first appears (or changes), not on every poll."""
        if message != self._last_problem:
            self._last_problem = message
            log.warning("%s", message)

    def check(self) -> str | None:
        """One poll: swap if the alias moved to a loadable version; the version swapped to."""
        name = self.serving.model.name
        try:
            record = registry.get_alias(self.store, name, self.alias)
        except Exception as exc:  # store down or a corrupt record: keep serving, poll again
            self._warn_once(
                f"cannot read alias {name}@{self.alias}, still serving "
                f"{self.serving.model.version}: {exc}"
            )
            return None
        self._last_problem = ""
        if record is None:
            return None
        version = str(record["version"])
        if version == self.serving.model.version:
            return None
        refusal = self.refused.get(version)
        if refusal is not None and refusal.record != record:
            refusal = None  # pointed at it again: try now, and back off from the start
        if refusal is not None and self._clock() < refusal.retry_at:
            return None
        try:
            model = load_served(self.store, name, version, variant=self.variant)
        except Exception as exc:
            failures = refusal.failures + 1 if refusal is not None else 1
            wait = min(self.retry_seconds * 2 ** (failures - 1), self.max_retry_seconds)
            self.refused[version] = _Refusal(record, failures, self._clock() + wait)
            self.serving.metrics.load_failures.labels(name).inc()
            log.error(
                "refused %s:%s, still serving %s: %s (refusal %d; trying again in %.0fs, or "
                "at once if the alias is pointed at it again)",
                name,
                version,
                self.serving.model.version,
                str(exc).splitlines()[0] if str(exc) else repr(exc),
                failures,
                wait,
            )
            return None
        self.refused.pop(version, None)
        self.serving.swap(model)
        log.warning(
            "now serving %s:%s as %s on %s (%s, loaded in %.2fs)",
            name,
            version,
            model.variant,
            model.device,
            model.runtime,
            model.load_seconds,
        )
        return version


def _rebuild_index(store: Store, model: ServedModel, index: PredictionIndex) -> None:
    """Remember today's and yesterday's feedback labels (repeats stay idempotent, live
    accuracy goes on) and predictions whose ids are of the earlier format (those ids say
    nothing themselves), so feedback given before a restart is not recorded twice."""
    today = datetime.now(UTC).date()
    for day in (today - timedelta(days=1), today):
        date = day.isoformat()
        preds = read_ledger(
            store,
            model=model.name,
            kind="predictions",
            date=date,
            columns=("id", "version", "label"),
        )  # not the input rows
        legacy = preds[preds["id"].map(is_legacy_id).astype(bool)] if len(preds) else preds
        for version, group in legacy.tail(index.capacity).groupby("version"):
            index.add(list(group["id"]), str(version), list(group["label"]))
        feedback = read_ledger(
            store,
            model=model.name,
            kind="feedback",
            date=date,
            columns=("id", "version", "predicted", "label"),
        )
        for row in feedback.itertuples(index=False):  # by ts: the latest label wins
            index.record(str(row.id), str(row.version), str(row.predicted), str(row.label))


def _registry_classes(store: Store, name: str) -> Callable[[str], list[str]]:
    """Looks up a version's classes (its checksum-verified transform.json) in the registry."""

    def classes_of(version: str) -> list[str]:
        mv = registry.resolve(store, name, version)
        with tempfile.TemporaryDirectory(prefix="datawheel-classes-") as tmp:
            registry.fetch(store, mv, tmp, only=("transform.json",))
            return [str(c) for c in Transform.load(Path(tmp, "transform.json")).classes]

    return classes_of


def build_app(
    config: ServeConfig, *, metrics: ServingMetrics | None = None
) -> tuple[ServingApp, Serving]:
    """Load the model and put the application together (the port is not opened here)."""
    name, ref = registry.parse_ref(config.model)
    store = open_store(config.store)
    model = load_served(store, name, ref, variant=config.variant)
    key, key_source = load_id_key(store, name)
    metrics = metrics or ServingMetrics(name)
    spool = Path(
        config.spool_dir
        or os.environ.get("DATAWHEEL_SPOOL_DIR")
        or Path(".datawheel") / "spool" / name
    )
    ledger = Ledger(
        _StoreOnDemand(config.store),
        model=name,
        spool_dir=spool,
        flush_interval=config.ledger_flush_seconds,
        fsync=config.fsync,
        on_backlog=metrics.ledger_backlog.labels(name).set,
        log=lambda line: log.warning("ledger: %s", line),
    )
    ledger.start()  # replays what an earlier process left in the spool...
    ledger.flush()  # ...into the store, so the index below sees those predictions too
    index = PredictionIndex()
    _rebuild_index(store, model, index)
    serving = Serving(
        model,
        ledger,
        metrics,
        max_batch_size=config.max_batch_size,
        max_latency_ms=config.max_latency_ms,
        index=index,
        ids=PredictionIds(name, key, source=key_source),
        classes_of=_registry_classes(store, name),
        drift=config.drift,
    )
    follows_alias = not ref.startswith("v") or not ref[1:].isdigit()
    watcher = (
        AliasWatcher(
            serving,
            store,
            ref,
            config.poll_seconds,
            retry_seconds=config.load_retry_seconds,
            variant=config.variant,
        )
        if follows_alias
        else None
    )

    async def startup() -> None:
        if watcher is not None:
            watcher.start()

    async def shutdown() -> None:
        if watcher is not None:
            await watcher.stop()

    app = ServingApp(
        serving,
        limits=config.limits,
        token=os.environ.get(TOKEN_ENV) or None,
        on_startup=startup,
        on_shutdown=shutdown,
    )
    return app, serving


def run(config: ServeConfig, *, announce: bool = True) -> None:
    """Serve until SIGTERM/SIGINT."""
    import uvicorn

    # Hand the GIL back to the event loop within 0.5 ms (default 5 ms) when the inference
    # or ledger thread holds it: this is what keeps the tail latency of a lone client low.
    sys.setswitchinterval(0.0005)
    app, serving = build_app(config)
    if announce:
        m = serving.model
        print(
            f"serving {m.name}:{m.version} on http://{config.host}:{config.port} "
            f"(variant {m.variant}: {m.runtime} on {m.device}; loaded in {m.load_seconds:.2f}s)",
            flush=True,
        )
        print(f"prediction ids are signed with the key from {serving.ids.source}", flush=True)
    # Slow or idle clients must not hold descriptors for ever: the soft open-files limit goes
    # up to the hard one, and httptools runs with header/body timeouts and a connection cap
    # that leaves descriptors for the store and the ledger (serving/connections.py).
    protocol = guarded_protocol(config.connections, open_files=raise_open_files_limit())
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=protocol,
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=30,
    )
