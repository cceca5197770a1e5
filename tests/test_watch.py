"""The watcher's guards, with its state in a real file:// store: one run in flight, the
cooldown, each reason started once (also across watchers and a watcher killed mid-run),
the reason in the run's parameters, a failed launch that can try again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kfp_recorder import kfp_api

from datawheel.flywheel.controller import WatchConfig, Watcher
from datawheel.flywheel.launch import FAILED, RUNNING, SUCCEEDED, KfpLauncher, LocalLauncher
from datawheel.flywheel.rules import Observation, Thresholds
from datawheel.flywheel.run_state import WatchState
from datawheel.storage import LocalStore


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Signals:
    """What the injected observer reports; tests change it between cycles."""

    def __init__(self, **kw: Any) -> None:
        self.kw: dict[str, Any] = {"version": "v1", **kw}

    def __call__(self, watcher: Watcher, now: float) -> Observation:
        return Observation(model=watcher.config.model, now=now, **self.kw)


class Runs:
    """An injected run function: records its arguments, blocks until released."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.calls.append(arguments)
        assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("train step failed")
        return {"status": "SUCCEEDED", "summary": {"decision": "promote"}}


def _watcher(
    store: LocalStore, signals: Signals, runs: Runs, clock: Clock, cooldown: float = 0.0
) -> tuple[Watcher, LocalLauncher]:
    launcher = LocalLauncher(runs)
    config = WatchConfig(
        "digits",
        Thresholds(accuracy_below=0.8, min_labels=50, new_labels=100),
        cooldown_s=cooldown,
        parameters={"epochs": 3},
    )
    return Watcher(store, config, launcher, observe=signals, clock=clock), launcher


def test_a_rule_starts_one_run_with_its_reason_in_the_parameters(tmp_path: Path) -> None:
    store, clock, runs = LocalStore(tmp_path / "s"), Clock(), Runs()
    watcher, launcher = _watcher(
        store, Signals(drift=True, drifted_features=("px_20",)), runs, clock
    )
    (d,) = watcher.step()
    assert d.action == "started" and d.rule == "drift"
    launcher.wait(d.run_id, 0.5)
    (args,) = runs.calls
    assert args["reason"].startswith("drift: 1 feature(s) drifted (px_20)")
    assert args["model_name"] == "digits" and args["store"] == store.uri
    assert args["since"] == "" and args["until"] == "1970-01-12T13:46:40Z"
    assert args["epochs"] == 3
    state = WatchState(store, "digits").read()
    assert state["in_flight"]["run_id"] == d.run_id
    assert state["in_flight"]["arguments"]["reason"] == args["reason"]
    assert state["in_flight"]["handle"]["launcher"] == "local"


def test_one_run_in_flight_then_the_same_reason_never_again(tmp_path: Path) -> None:
    store, clock, runs = LocalStore(tmp_path / "s"), Clock(), Runs()
    signals = Signals(drift=True)
    watcher, launcher = _watcher(store, signals, runs, clock)
    (first,) = watcher.step()
    signals.kw.update(accuracy=0.5, labels=80)  # a second, other reason while it runs
    clock.t += 10
    (second,) = watcher.step()
    assert second.action == "refused" and second.refused == "in_flight"
    assert launcher.status({"run_id": first.run_id}) == RUNNING
    runs.release.set()
    assert launcher.wait(first.run_id, 10) == SUCCEEDED
    clock.t += 10
    finished, started = watcher.step()
    assert finished.action == "finished" and finished.detail == "succeeded"
    assert started.action == "started" and started.rule == "accuracy"
    launcher.wait(started.run_id, 10)
    watcher.poll()
    clock.t += 10
    (third,) = watcher.step()  # both reasons were started once: nothing new
    assert third.action == "refused" and third.refused == "duplicate"
    assert len(runs.calls) == 2
    state = WatchState(store, "digits").read()
    assert [r["status"] for r in state["history"]] == ["succeeded", "succeeded"]
    assert state["last_run"]["rule"] == "accuracy"


def test_cooldown_keeps_runs_apart(tmp_path: Path) -> None:
    store, clock, runs = LocalStore(tmp_path / "s"), Clock(), Runs()
    runs.release.set()
    signals = Signals(drift=True)
    watcher, launcher = _watcher(store, signals, runs, clock, cooldown=600)
    (d,) = watcher.step()
    launcher.wait(d.run_id, 10)
    signals.kw.update(drift=False, new_labels=150)  # the labels rule, a new reason
    clock.t += 599
    finished, early = watcher.step()
    assert finished.action == "finished"
    assert early.refused == "cooldown" and "1s left" in early.detail
    clock.t += 2
    (late,) = watcher.step()
    assert late.action == "started" and late.rule == "labels"
    assert len(runs.calls) == 2


def test_a_failed_run_is_recorded_and_frees_the_slot(tmp_path: Path) -> None:
    store, clock, runs = LocalStore(tmp_path / "s"), Clock(), Runs(fail=True)
    runs.release.set()
    watcher, launcher = _watcher(store, Signals(accuracy=0.3, labels=60), runs, clock)
    (d,) = watcher.step()
    assert launcher.wait(d.run_id, 10) == FAILED
    finished = watcher.poll()
    assert finished is not None and finished.detail == "failed"
    state = WatchState(store, "digits").read()
    assert state["in_flight"] is None and state["last_run"]["status"] == "failed"


def test_a_launch_that_fails_gives_the_reason_back(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path / "s"), Clock()
    config = WatchConfig("digits", cooldown_s=600)
    package = Path(__file__).resolve().parent.parent / "pipelines" / "compiled" / "flywheel.yaml"
    with kfp_api() as api:
        api.fail_runs = True
        launcher = KfpLauncher(api.url, package=lambda: package)
        watcher = Watcher(store, config, launcher, observe=Signals(drift=True), clock=clock)
        (d,) = watcher.step()
        assert d.action == "error" and "refused or failed the submission" in d.detail
        state = WatchState(store, "digits").read()
        assert state["in_flight"] is None and state["last_started"] is None
        assert not WatchState(store, "digits").claimed(d.key)
        api.fail_runs = False
        clock.t += 60  # the cooldown was given back: the next cycle tries again
        (again,) = watcher.step()
    assert again.action == "started" and again.key == d.key and again.external_id == "run-2"


def test_watchers_racing_on_one_store_start_one_run(tmp_path: Path) -> None:
    store, clock, runs = LocalStore(tmp_path / "s"), Clock(), Runs()
    signals = Signals(drift=True)
    watchers = [_watcher(LocalStore(tmp_path / "s"), signals, runs, clock)[0] for _ in range(8)]
    barrier = threading.Barrier(len(watchers))
    decisions: list[Any] = []

    def go(w: Watcher) -> None:
        barrier.wait()
        decisions.extend(w.step())

    threads = [threading.Thread(target=go, args=(w,)) for w in watchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    runs.release.set()
    assert sorted(d.action for d in decisions) == ["refused"] * 7 + ["started"]
    assert {d.refused for d in decisions if d.action == "refused"} <= {"in_flight", "duplicate"}
    time.sleep(0.2)
    assert len(runs.calls) == 1
    assert len(store.list("flywheel/watch/digits/claims")) == 1


_KILLED_WATCHER = textwrap.dedent(
    """
    import sys, threading
    from datawheel.flywheel.launch import LocalLauncher
    from datawheel.flywheel.rules import Observation
    from datawheel.flywheel.controller import WatchConfig, Watcher
    from datawheel.storage import LocalStore

    def observe(w, now):
        return Observation(model="digits", version="v1", now=now, drift=True)

    def run_for_ever(arguments):
        threading.Event().wait()

    w = Watcher(LocalStore(sys.argv[1]), WatchConfig("digits", cooldown_s=0), LocalLauncher(
        run_for_ever), observe=observe, clock=lambda: 1_000_000.0)
    (d,) = w.step()
    print(d.action, d.run_id, flush=True)
    threading.Event().wait()
    """
)


def test_a_watcher_killed_mid_run_and_restarted_does_not_start_that_reason_again(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WATCHER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        action, run_id = child.stdout.readline().split()
        assert action == "started"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    store, clock, runs = LocalStore(root), Clock(), Runs()
    runs.release.set()
    state = WatchState(store, "digits").read()
    assert (
        state["in_flight"]["run_id"] == run_id and state["in_flight"]["owner"]["pid"] == child.pid
    )
    watcher, _ = _watcher(store, Signals(drift=True), runs, clock)  # the restarted watcher
    lost, again = watcher.step()
    assert lost.action == "finished" and lost.run_id == run_id and lost.detail.startswith("lost")
    assert again.action == "refused" and again.refused == "duplicate"
    assert runs.calls == []
    state = WatchState(store, "digits").read()
    assert state["in_flight"] is None and state["last_run"]["status"] == "lost"
    json.dumps(state)  # plain JSON, as kept in the store


def test_a_live_owner_elsewhere_keeps_its_run_in_flight(tmp_path: Path) -> None:
    """A second watcher (another process, alive) does not take over a running run."""
    store, clock, runs = LocalStore(tmp_path / "s"), Clock(), Runs()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watcher, _ = _watcher(store, Signals(drift=True), runs, clock)
        (d,) = watcher.step()
        runs.release.set()

        def other_owner(state: dict[str, Any]) -> dict[str, Any]:
            state["in_flight"]["owner"] = {
                "host": socket.gethostname(),
                "pid": sleeper.pid,
                "process": "x",
            }
            state["in_flight"]["handle"]["run_id"] = "not-mine"
            return state

        WatchState(store, "digits").update(other_owner)
        other, _ = _watcher(store, Signals(accuracy=0.1, labels=99), Runs(), clock)
        assert other.poll() is None
        (refused,) = other.step()
        assert refused.refused == "in_flight"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert d.action == "started"


def test_kfp_runs_are_followed_through_get_run(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path / "s"), Clock()
    package = Path(__file__).resolve().parent.parent / "pipelines" / "compiled" / "flywheel.yaml"
    with kfp_api() as api:
        launcher = KfpLauncher(api.url, experiment="fw", package=lambda: package)
        watcher = Watcher(store, WatchConfig("digits"), launcher, observe=Signals(drift=True),
                          clock=clock)  # fmt: skip
        (d,) = watcher.step()
        assert d.action == "started" and d.external_id == "run-1"
        (run,) = api.posts("/apis/v2beta1/runs")
        assert run["runtime_config"]["parameters"]["reason"].startswith("drift:")
        assert run["display_name"].startswith("flywheel-digits-drift-")
        assert watcher.poll() is None  # RUNNING
        api.run_state = "SUCCEEDED"
        done = watcher.poll()
    assert done is not None and done.detail == "succeeded"
    assert WatchState(store, "digits").read()["last_run"]["handle"]["run_id"] == "run-1"


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_kfp_runs_that_end_badly_are_failed(tmp_path: Path, state: str) -> None:
    package = Path(__file__).resolve().parent.parent / "pipelines" / "compiled" / "flywheel.yaml"
    with kfp_api() as api:
        launcher = KfpLauncher(api.url, package=lambda: package)
        handle = launcher.start({"epochs": 1}, "r")
        api.run_state = state
        assert launcher.status(handle) == FAILED
    assert launcher.status(handle) == "unknown"  # the API is gone: ask again later


def test_the_default_local_run_is_kfp_local_in_a_child_and_fails_in_one_line(
    tmp_path: Path,
) -> None:
    """The real flywheel pipeline through kfp.local, on a store without the model: the
    first step fails, and the launcher reports it as FAILED with that step's error."""
    from datawheel.flywheel.launch import run_flywheel_subprocess

    finished: list[tuple[str, str, dict[str, Any]]] = []
    launcher = LocalLauncher(
        lambda a: run_flywheel_subprocess(a, pipeline_root=str(tmp_path / "runs")),
        on_finish=lambda *args: finished.append(args),
    )
    args = {"store": f"file://{tmp_path}/empty", "model_name": "digits", "reason": "test"}
    handle = launcher.start(args, "r1")
    assert launcher.wait("r1", 300) == FAILED
    ((run_id, status, result),) = finished
    assert (run_id, status) == ("r1", FAILED) and handle["run_id"] == "r1"
    error = result["error"]
    assert error.startswith("the flywheel pipeline failed: ") and "\n" not in error
    assert "digits" in error and error.count("Fix:") == 1 and "see the run's log" in error
    assert list((tmp_path / "runs").glob("run-*.log"))  # kfp.local ran and logged
