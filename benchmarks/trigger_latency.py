"""Seconds from a firing alert (POST /alertmanager) to the flywheel run starting.

The real webhook (Starlette on uvicorn, 127.0.0.1) in front of a real watcher whose state is
in a fresh file:// store, one alert per trial, with two launchers:

* ``kfp``: the run is started when the KFP API accepted it (``create_run_from_pipeline_package``
  through kfp.Client, against the recording KFP API of tests/kfp_recorder.py): the webhook
  answers after that, so the answer's time is the figure;
* ``local``: kfp.local in a child process: the time until the child's pipeline log says
  its first task (harvest) is executing, and the webhook's answer time beside it.

Prints the median and max over ``--trials``; asserts nothing.

    .venv/bin/python benchmarks/trigger_latency.py --trials 5
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kfp_recorder import kfp_api  # type: ignore[import-not-found]  # noqa: E402

from datawheel.flywheel.alerts import create_app  # noqa: E402
from datawheel.flywheel.controller import WatchConfig, Watcher  # noqa: E402
from datawheel.flywheel.launch import (  # noqa: E402
    KfpLauncher,
    Launcher,
    LocalLauncher,
    run_flywheel_subprocess,
)
from datawheel.flywheel.rules import Observation  # noqa: E402
from datawheel.storage import LocalStore  # noqa: E402

ALERT = {
    "version": "4",
    "groupKey": '{}:{alertname="DatawheelInputDrift"}',
    "status": "firing",
    "receiver": "datawheel-watcher",
    "groupLabels": {"alertname": "DatawheelInputDrift"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DatawheelInputDrift", "model": "digits", "version": "v1"},
            "annotations": {},
            "startsAt": "2026-12-02T18:00:00Z",
        }
    ],
}


def _quiet(watcher: Watcher, now: float) -> Observation:
    return Observation(model="digits", version="v1", now=now)


def _serve(watcher: Watcher) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(watcher), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.005)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def _post(url: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url + "/alertmanager",
        data=json.dumps(ALERT).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        body: dict[str, Any] = json.loads(r.read())
    return body


def _first_task(root: Path, t0: float, timeout: float = 120) -> float | None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for log in root.glob("run-*.log"):
            if "Executing task" in log.read_text(errors="replace"):
                return time.perf_counter() - t0
        time.sleep(0.01)
    return None


def trial(kind: str, tmp: Path, kfp_url: str) -> dict[str, float | None]:
    store = LocalStore(tmp / "store")
    runs = tmp / "runs"
    launcher: Launcher
    if kind == "kfp":
        package = ROOT / "pipelines" / "compiled" / "flywheel.yaml"
        launcher = KfpLauncher(kfp_url, package=lambda: package)
    else:
        launcher = LocalLauncher(lambda a: run_flywheel_subprocess(a, pipeline_root=str(runs)))
    watcher = Watcher(store, WatchConfig("digits"), launcher, observe=_quiet)
    url, server, thread = _serve(watcher)
    try:
        t0 = time.perf_counter()
        answer = _post(url)
        answered = time.perf_counter() - t0
        assert answer["action"] == "started", answer
        first = _first_task(runs, t0) if kind == "local" else None
        if isinstance(launcher, LocalLauncher):
            launcher.wait(answer["run_id"], 300)
    finally:
        server.should_exit = True
        thread.join(10)
    return {"answered": answered, "first_task": first}


LABELS = {"answered": "webhook answer (run started)", "first_task": "first task executing"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()
    kinds = ["kfp"] + ([] if args.skip_local else ["local"])
    with kfp_api() as api:
        for kind in kinds:
            results = []
            for _ in range(args.trials):
                with tempfile.TemporaryDirectory(prefix="trigger-latency-") as tmp:
                    results.append(trial(kind, Path(tmp), api.url))
            for key in ("answered", "first_task"):
                values = [v for r in results if (v := r[key]) is not None]
                if values:
                    print(
                        f"{kind:5s} alert -> {LABELS[key]}: "
                        f"median {statistics.median(values):.3f}s, max {max(values):.3f}s "
                        f"over {len(values)} trials"
                    )


if __name__ == "__main__":
    main()
