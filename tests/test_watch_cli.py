"""`datawheel watch` on a real store: a trained champion, its ledger written by the server's
Ledger, the real drift engine and feedback, runs submitted to the recording KFP API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from cli_helpers import datawheel
from kfp_recorder import kfp_api
from serving_support import copy_store, digits_rows

from datawheel.flywheel.observe import observe_model
from datawheel.serving.ledger import Feedback, Ledger, Prediction
from datawheel.storage import LocalStore


def _served(store_dir: Path, spool: Path, x: np.ndarray, ts: float, right: int) -> None:
    """v1 serves ``x`` at ``ts``; users label every prediction, ``right`` of them with the
    predicted class and the rest with another one."""
    from datawheel.serving.model import load_served

    model = load_served(LocalStore(store_dir), "digits", "v1", warmup_rows=1)
    labels = model.labels(model.predict(x.astype(np.float32)))
    ledger = Ledger(lambda: LocalStore(store_dir), model="digits", spool_dir=spool)
    ledger.start()
    preds = [
        Prediction(f"p{i}", ts, "digits", "v1", list(map(float, row)), lab, [0.1], 1.0)
        for i, (row, lab) in enumerate(zip(x, labels, strict=True))
    ]
    ledger.append(preds)
    given = [p.label if i < right else str((int(p.label) + 1) % 10) for i, p in enumerate(preds)]
    ledger.append(
        [
            Feedback(p.id, ts + 1, "digits", "v1", g, p.label)
            for p, g in zip(preds, given, strict=True)
        ]
    )
    assert ledger.flush(timeout=30)
    ledger.close()


def _shifted_store(model_store: str, tmp_path: Path) -> tuple[str, float]:
    uri = copy_store(model_store, tmp_path / "store")
    now = time.time()
    x, _ = digits_rows(300, offset=1000)
    x[:, 20] = 1.0  # one pixel stuck on: drift a person can picture
    _served(Path(uri.removeprefix("file://")), tmp_path / "spool", x, now - 600, right=120)
    return uri, now


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_observation_of_a_drifted_champion_with_low_live_accuracy(
    model_store: str, tmp_path: Path
) -> None:
    uri, now = _shifted_store(model_store, tmp_path)
    store = LocalStore(uri.removeprefix("file://"))
    obs = observe_model(store, "digits", now=now, window_s=3600, window="1h", labels_since=None)
    assert obs.version == "v1" and obs.notes == ()
    assert obs.drift is True and obs.drifted_features[0] == "px_20" and obs.rows == 300
    assert obs.labels == 300 and obs.accuracy == 120 / 300
    assert obs.new_labels == 300
    later = observe_model(store, "digits", now=now, window_s=3600, window="1h",
                          labels_since=now - 60)  # fmt: skip
    assert later.new_labels == 0
    old = observe_model(store, "digits", now=now + 7200, window_s=3600, window="1h",
                        labels_since=None)  # fmt: skip
    assert old.drift is None and old.accuracy is None  # the window has moved past them
    assert any("no drift verdict" in n for n in old.notes)


def test_watch_once_submits_the_flywheel_once_per_reason(model_store: str, tmp_path: Path) -> None:
    uri, _ = _shifted_store(model_store, tmp_path)
    with kfp_api() as api:
        args = ["watch", "--model", "digits", "--store", uri, "--kfp-host", api.url, "--once",
                "--json", "--cooldown", "0", "--new-labels", "0",
                "--param", "epochs=4"]  # fmt: skip
        first = datawheel(*args, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        (d,) = _lines(first.stdout)
        assert d["action"] == "started" and d["rule"] == "accuracy" and d["external_id"] == "run-1"
        assert d["run_id"].startswith("flywheel-digits-accuracy-")
        assert d["observation"]["drift"] is True and d["observation"]["labels"] == 300
        (run,) = api.posts("/apis/v2beta1/runs")
        params = run["runtime_config"]["parameters"]
        assert params["reason"].startswith("live accuracy 0.400 < 0.8 over 300 labels")
        assert params["model_name"] == "digits" and params["store"] == uri
        assert params["epochs"] == 4 and params["since"] == ""
        assert "flywheel" in run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"]

        busy = _lines(datawheel(*args, cwd=tmp_path).stdout)
        assert [x["refused"] for x in busy] == ["in_flight"]
        api.run_state = "SUCCEEDED"
        done, drift = _lines(datawheel(*args, cwd=tmp_path).stdout)
        assert done["action"] == "finished" and done["run_id"] == d["run_id"]
        assert done["external_id"] == "run-1" and done["detail"] == "succeeded"
        assert drift["action"] == "started" and drift["rule"] == "drift"
        last = _lines(datawheel(*args, cwd=tmp_path).stdout)
        assert [x["action"] for x in last] == ["finished", "refused"]
        assert last[1]["refused"] == "duplicate"
        assert len(api.posts("/apis/v2beta1/runs")) == 2


def test_watch_without_a_champion_is_quiet_and_says_why(tmp_path: Path) -> None:
    with kfp_api() as api:
        proc = datawheel("watch", "--model", "digits", "--store", f"file://{tmp_path}/empty",
                         "--kfp-host", api.url, "--once", "--json", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (d,) = _lines(proc.stdout)
    assert d["action"] == "quiet" and "no champion" in d["detail"]
    assert api.posts("/apis/v2beta1/runs") == []


def test_watch_argument_errors_are_one_line(tmp_path: Path) -> None:
    for args, needle in (
        ([], "exactly one of --local and --kfp-host"),
        (["--local", "--kfp-host", "http://x"], "exactly one of --local and --kfp-host"),
        (["--local", "--listen", "nowhere"], "--listen 'nowhere' is not HOST:PORT"),
        (["--kfp-host", "localhost:8080"], "is not a URL"),
        (["--local", "--prometheus", "prom:9090"], "--prometheus 'prom:9090' is not a URL"),
        (["--local", "--window", "soon"], "is not a duration"),
        (["--local", "--accuracy-below", "2"], "not in (0, 1]"),
        (["--local", "--param", "epoch=3"], "unknown parameter 'epoch'"),
    ):
        proc = datawheel("watch", "--model", "digits", "--once", *args, cwd=tmp_path)
        err = proc.stderr.strip()
        assert proc.returncode == 2, (args, err)
        assert err.startswith("error: ") and needle in err and "\n" not in err, (args, err)


def test_watch_listen_takes_alertmanager_webhooks(tmp_path: Path) -> None:
    """The long-running controller: its first cycle is quiet (no champion), then a firing
    drift alert POSTed to its webhook submits one run; SIGTERM stops it."""
    import os
    import signal
    import subprocess
    import urllib.request

    from cli_helpers import DATAWHEEL
    from serving_support import free_port

    port = free_port()
    alert = {
        "version": "4", "groupKey": "g", "status": "firing", "receiver": "w",
        "alerts": [{"status": "firing", "labels": {"alertname": "DatawheelInputDrift",
                                                   "model": "digits", "version": "v1"}}],
    }  # fmt: skip
    with kfp_api() as api:
        proc = subprocess.Popen(
            [DATAWHEEL, "watch", "--model", "digits", "--store", f"file://{tmp_path}/s",
             "--kfp-host", api.url, "--listen", f"127.0.0.1:{port}", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            quiet = json.loads(proc.stdout.readline())
            assert quiet["action"] == "quiet"
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the webhook never came up"
                    time.sleep(0.1)
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/alertmanager", data=json.dumps(alert).encode(),
                headers={"Content-Type": "application/json"}, method="POST",
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = json.loads(r.read())
            assert answer["action"] == "started" and answer["external_id"] == "run-1"
            printed = json.loads(proc.stdout.readline())
            assert printed["action"] == "started" and printed["rule"] == "alert-drift"
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        (run,) = api.posts("/apis/v2beta1/runs")
    assert run["runtime_config"]["parameters"]["reason"].startswith(
        "alert DatawheelInputDrift firing for digits:v1"
    )
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert proc.returncode in (0, -signal.SIGTERM), err[-2000:]
    assert "Traceback" not in err
