"""Recovery: a version refused once (a load that failed) is not refused for good.

The alias watcher tries a refused version again after 2 s, doubling up to 5 minutes, and
at once when the alias is pointed at it again; every failed try is logged with its reason
and counted. Tested with the store really failing the load: the version's model.ts is
corrupted in the store, then its bytes are put back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serving_support import ServerProcess, copy_store

from datawheel import registry
from datawheel.serving.server import AliasWatcher, ServeConfig, build_app
from datawheel.serving.state import Serving
from datawheel.storage import LocalStore

MODEL_TS = "models/digits/versions/v2/model.ts"


def _corrupt(store: LocalStore) -> bytes:
    """Make v2 unloadable (its model.ts fails the checksum); the good bytes, to put back."""
    good = store.get_bytes(MODEL_TS)
    store.put_bytes(MODEL_TS, good[:-100] + b"\0" * 100)
    return good


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _failures(srv: ServerProcess) -> float:
    for line in srv.metrics().splitlines():
        if line.startswith('datawheel_model_load_failures_total{model="digits"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _serves(srv: ServerProcess) -> str:
    return str(srv.get_json("/v2/models/digits")["versions"][0])


def test_a_refused_version_is_swapped_in_once_the_store_serves_it_again(
    model_store: str, tmp_path: Path
) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    srv = ServerProcess(uri, tmp_path / "spool", args=["--poll-seconds", "0.2"]).start()
    try:
        good = _corrupt(store)
        registry.promote(store, "digits", "v2", alias="champion")
        _wait_for(lambda: _failures(srv) >= 1)
        assert _serves(srv) == "v1"
        store.put_bytes(MODEL_TS, good)  # the store recovers; nobody touches the alias
        took = _wait_for(lambda: _serves(srv) == "v2")
        print(f"\nswapped to v2 {took:.1f}s after the store served it again, no restart")
        assert 'datawheel_model_swaps_total{model="digits"} 1.0' in srv.metrics()
    finally:
        srv.stop()
    log = srv.log()
    assert "refused digits:v2, still serving v1" in log and "does not match its checksum" in log
    assert "trying again in 2s" in log and "now serving digits:v2" in log


def test_pointing_the_alias_at_a_refused_version_again_tries_it_at_once(
    model_store: str, tmp_path: Path
) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    args = ["--poll-seconds", "0.2", "--load-retry-seconds", "600"]  # no retry on its own
    srv = ServerProcess(uri, tmp_path / "spool", args=args).start()
    try:
        good = _corrupt(store)
        registry.promote(store, "digits", "v2", alias="champion")
        _wait_for(lambda: _failures(srv) >= 1)
        store.put_bytes(MODEL_TS, good)
        time.sleep(1.5)  # several polls: the refusal stands until its backoff ends...
        assert _serves(srv) == "v1" and _failures(srv) == 1
        registry.promote(store, "digits", "v1", alias="champion")  # ...or the alias moves
        registry.promote(store, "digits", "v2", alias="champion")  # away and back
        took = _wait_for(lambda: _serves(srv) == "v2", timeout=20)
        print(f"\nre-pointed alias: swapped to v2 after {took:.1f}s (the backoff was 600s)")
        assert _failures(srv) == 1
    finally:
        srv.stop()


# --- the backoff, step by step: the real watcher and store, a clock the test moves -----------


@pytest.fixture
def serving(model_store: str, tmp_path: Path) -> Iterator[tuple[Serving, LocalStore]]:
    uri = copy_store(model_store, tmp_path / "store")
    _, serving = build_app(ServeConfig(model="digits", store=uri, spool_dir=str(tmp_path / "sp")))
    yield serving, LocalStore(tmp_path / "store")
    serving.ledger.close()


def test_retries_back_off_doubling_and_a_moved_alias_starts_over(
    serving: tuple[Serving, LocalStore],
) -> None:
    state, store = serving
    now = [1000.0]
    watcher = AliasWatcher(
        state, store, "champion", 0.2, retry_seconds=2, max_retry_seconds=8, clock=lambda: now[0]
    )

    def failures() -> float:
        value = state.metrics.registry.get_sample_value(
            "datawheel_model_load_failures_total", {"model": "digits"}
        )
        return value or 0.0

    good = _corrupt(store)
    registry.promote(store, "digits", "v2", alias="champion")
    tries = []
    for t in (0, 1, 1.9, 2, 3, 5.9, 6, 13.9, 14, 21.9, 22):  # tries at 0, 2, 6, 14, 22
        now[0] = 1000.0 + t
        assert watcher.check() is None
        tries.append(failures())
    assert tries == [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5]  # waits 2, 4, 8, then capped at 8
    assert state.model.version == "v1" and watcher.refused["v2"].failures == 5

    registry.promote(store, "digits", "v1", alias="champion")
    registry.promote(store, "digits", "v2", alias="champion")  # re-pointed: a try right away
    assert watcher.check() is None and failures() == 6
    assert watcher.refused["v2"].failures == 1  # and the backoff starts over at 2 s
    now[0] += 1.9
    assert watcher.check() is None and failures() == 6

    store.put_bytes(MODEL_TS, good)
    now[0] += 0.1
    assert watcher.check() == "v2" and state.model.version == "v2"
    assert "v2" not in watcher.refused and failures() == 6
