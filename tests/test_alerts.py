"""The Alertmanager webhook, through the real Starlette app on a real uvicorn server on
127.0.0.1: a storm of firing alerts starts one run, repeats are answered from memory,
other alerts are ignored, a bad body is a 4xx with a JSON error."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from datawheel.flywheel.alerts import ACCURACY_ALERTS, DRIFT_ALERTS, create_app
from datawheel.flywheel.controller import WatchConfig, Watcher
from datawheel.flywheel.launch import LocalLauncher
from datawheel.flywheel.rules import Observation
from datawheel.flywheel.run_state import WatchState
from datawheel.storage import LocalStore

RULES = Path(__file__).resolve().parent.parent / "manifests" / "monitoring" / "prometheusrule.yaml"


def _quiet(watcher: Watcher, now: float) -> Observation:
    return Observation(model="digits", version="v1", now=now)


class Runs:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(arguments)
        self.started.set()
        self.release.wait(30)
        return {"status": "SUCCEEDED"}


class Server:
    def __init__(self, watcher: Watcher) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(watcher), log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def post(
        self, body: bytes | Any, content_type: str = "application/json", path: str = "/alertmanager"
    ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": content_type}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Runs, LocalStore, Watcher]]:
    store, runs = LocalStore(tmp_path / "s"), Runs()
    watcher = Watcher(store, WatchConfig("digits", cooldown_s=3600), LocalLauncher(runs),
                      observe=_quiet)  # fmt: skip
    server = Server(watcher)
    try:
        yield server, runs, store, watcher
    finally:
        runs.release.set()
        server.stop()


def payload(alertname: str, *, group: str = "", status: str = "firing", model: str = "digits",
            version: str = "v1") -> dict[str, Any]:  # fmt: skip
    labels = {"alertname": alertname, "model": model, "version": version, "severity": "warning"}
    return {
        "version": "4",
        "groupKey": group or f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "datawheel-watcher",
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "s"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": "s"},
                "startsAt": "2026-12-02T18:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "0123456789abcdef",
            }
        ],
    }


def test_the_mapped_alerts_are_the_ones_in_the_monitoring_rules() -> None:
    docs = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in docs["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert set(DRIFT_ALERTS) | set(ACCURACY_ALERTS) <= names
    assert "DatawheelServeLatencyHigh" in names  # and not every alert is a retraining reason
    assert "DatawheelServeLatencyHigh" not in DRIFT_ALERTS + ACCURACY_ALERTS


def test_a_storm_of_100_firing_alerts_in_a_second_starts_one_run(
    served: tuple[Server, Runs, LocalStore, Watcher],
) -> None:
    server, runs, store, _ = served
    bodies = [
        payload(DRIFT_ALERTS[i % 2] if i % 3 else ACCURACY_ALERTS[0], group=f"g{i % 7}")
        for i in range(100)
    ]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(server.post, bodies))
    elapsed = time.perf_counter() - t0
    assert runs.started.wait(10)
    assert [code for code, _ in answers] == [200] * 100
    started = [b for _, b in answers if b.get("action") == "started" and not b.get("repeat")]
    assert len(started) == 1, answers[:5]
    repeats = [b for _, b in answers if b.get("repeat")]  # its group again: from memory
    assert all(b["run_id"] == started[0]["run_id"] for b in repeats)
    assert {b.get("refused") for _, b in answers if b.get("action") == "refused"} <= {
        "in_flight",
        "duplicate",
    }
    assert elapsed < 10  # the storm is answered without waiting for the run
    time.sleep(0.2)
    assert len(runs.calls) == 1
    assert runs.calls[0]["reason"].startswith("alert Datawheel")
    state = WatchState(store, "digits").read()
    assert state["in_flight"]["rule"] in ("alert-drift", "alert-accuracy")


def test_repeats_of_a_group_are_one_reason_after_the_run(
    served: tuple[Server, Runs, LocalStore, Watcher],
) -> None:
    server, runs, _, watcher = served
    code, first = server.post(payload("DatawheelLiveAccuracyLow"))
    assert code == 200 and first["action"] == "started" and first["rule"] == "alert-accuracy"
    assert "DatawheelLiveAccuracyLow firing for digits:v1" in first["reason"]
    runs.release.set()
    assert isinstance(watcher.launcher, LocalLauncher)
    watcher.launcher.wait(first["run_id"], 10)
    code, again = server.post(payload("DatawheelLiveAccuracyLow"))  # Alertmanager's repeat
    assert code == 200 and again["repeat"] is True and again["run_id"] == first["run_id"]
    assert len(runs.calls) == 1


@pytest.mark.parametrize(
    "body",
    [
        payload("DatawheelInputDrift", status="resolved"),
        payload("DatawheelServeLatencyHigh"),
        payload("DatawheelInputDrift", model="other-model"),
        {**payload("DatawheelInputDrift"), "alerts": []},
    ],
    ids=["resolved", "not-a-retraining-alert", "another-model", "no-alerts"],
)
def test_other_alerts_are_ignored(
    served: tuple[Server, Runs, LocalStore, Watcher], body: dict[str, Any]
) -> None:
    server, runs, _, _ = served
    code, answer = server.post(body)
    assert code == 200 and answer["action"] == "ignored"
    assert runs.calls == []


def _bad(**change: Any) -> dict[str, Any]:
    return {**payload("DatawheelInputDrift"), **change}


@pytest.mark.parametrize(
    ("body", "content_type", "code", "needle"),
    [
        (b"{not json", "application/json", 400, "not JSON"),
        (b"\xff\xfe", "application/json", 400, "not JSON"),
        ([1, 2], "application/json", 422, "JSON object"),
        (_bad(version="3"), "application/json", 422, 'expected "4"'),
        (_bad(version=4), "application/json", 422, "version 4"),
        (_bad(groupKey=None), "application/json", 422, "'groupKey'"),
        (_bad(alerts={"a": 1}), "application/json", 422, "'alerts'"),
        (_bad(status="pending"), "application/json", 422, "'pending'"),
        (_bad(alerts=[{"status": "firing"}]), "application/json", 422, "alerts[0]"),
        (_bad(alerts=[{"status": "x", "labels": {}}]), "application/json", 422, "alerts[0].status"),
        (
            _bad(alerts=[{"status": "firing", "labels": {"a": 1}}]),
            "application/json",
            422,
            "not a string",
        ),
        (payload("DatawheelInputDrift"), "text/plain", 415, "application/json"),
    ],
)
def test_bad_bodies_are_4xx_with_a_json_error(
    served: tuple[Server, Runs, LocalStore, Watcher],
    body: Any,
    content_type: str,
    code: int,
    needle: str,
) -> None:
    server, runs, _, _ = served
    got, answer = server.post(body, content_type)
    assert got == code and needle in answer["error"]
    assert runs.calls == []


def test_an_oversized_body_is_413_before_it_is_read(
    served: tuple[Server, Runs, LocalStore, Watcher],
) -> None:
    """The declared length is refused at once. Sent by hand: a client still uploading a
    megabyte when the 413 arrives may see the connection reset instead (a race of the test,
    not the server), so only the first bytes of the body go out."""
    import http.client
    from urllib.parse import urlsplit

    from datawheel.flywheel.alerts import MAX_BODY

    server, runs, _, _ = served
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        conn.putrequest("POST", "/alertmanager")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()
        conn.send(b"{")
        answer = conn.getresponse()
        assert answer.status == 413 and "over" in json.loads(answer.read())["error"]
    finally:
        conn.close()
    assert runs.calls == []


def test_wrong_method_and_path_are_json_and_healthz_answers(
    served: tuple[Server, Runs, LocalStore, Watcher],
) -> None:
    server, _, _, _ = served
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read()) == {"status": "ok", "model": "digits"}
    for method, path, code in (("GET", "/alertmanager", 405), ("POST", "/nope", 404)):
        req = urllib.request.Request(server.url + path, data=b"{}" if method == "POST" else None,
                                     method=method)  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == code and "error" in json.loads(info.value.read())
