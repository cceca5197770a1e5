"""Canary rollouts judged by a real Prometheus scraping two real ``datawheel serve`` processes.

The Kubernetes side is a fake API server (tests/fake_kube.py) that records the requests;
the tests assert on exactly what was sent. There is no real Service here, so scaling the
Deployments cannot move traffic: each test drives load at both servers itself, and the
rollout judges what Prometheus saw of each version.

The failing canary is an honest one: v3 is v2's TorchScript wrapped in a module that raises
on real inputs (rows of non-negative pixel intensities), so the server answers 500 for every
inference. The server's warm-up feeds random normal rows (negative values in every row),
so the model loads and the server becomes ready like any other.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from canary_support import (
    MIN_REQUESTS,
    WINDOW,
    Load,
    deployments,
    local_store,
    register_wrapped_version,
    start_servers,
    wait_for_traffic,
)
from click.testing import CliRunner
from fake_kube import FakeKube, Request, stable_deployment
from prometheus_support import Prometheus as PromProcess
from serving_support import copy_store, free_port

from datawheel import registry
from datawheel.cli.canary import canary as canary_command
from datawheel.deploy.canary_policy import Thresholds
from datawheel.deploy.kube import KubeDeployments, KubeError, connect
from datawheel.deploy.prom import Prometheus, PrometheusError
from datawheel.deploy.rollout import CANARY, STABLE, CanaryConfig, run_canary
from datawheel.errors import DatawheelError
from datawheel.storage import LocalStore, get_json, put_json

THRESHOLDS = Thresholds(min_requests=MIN_REQUESTS)  # the defaults otherwise: 1% errors, ...
MIN_LABELS = 20
SMP = "application/strategic-merge-patch+json"

# --- the pieces ---------------------------------------------------------------------------


@pytest.fixture
def store_uri(model_store: str, tmp_path: Path) -> str:
    """A private copy of the session's model store: v1 champion, v2 the candidate, as if
    the evaluation had compared v2 with v1 (the session's store registers both unaliased)."""
    uri = copy_store(model_store, tmp_path / "store")
    store = local_store(uri)
    card = registry.resolve(store, "digits", "v2").card
    put_json(store, "models/digits/versions/v2/card.json", {**card, "evaluated_against": "v1"})
    registry.promote(store, "digits", "v2", alias="candidate")
    return uri


def register_failing_version(store_uri: str, work: Path) -> str:
    """v3: v2 wrapped so that real inputs raise; made the candidate."""
    return register_wrapped_version(store_uri, work, _FailsOnRealInputs)


class _FailsOnRealInputs(torch.nn.Module):
    """Raises for rows of pixel intensities (all >= 0); passes the warm-up's normal rows."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x >= 0).all()):
            raise RuntimeError("v3 fails on real inputs")
        out: torch.Tensor = self.inner(x)
        return out


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.deployments[STABLE] = stable_deployment(replicas=4)
    yield fake.start()
    fake.stop()


def replica_patches(sent: list[Request]) -> list[tuple[str, int]]:
    return [
        (r.name or "", r.body["spec"]["replicas"])
        for r in sent
        if r.method == "PATCH" and "spec" in r.body
    ]


def annotation_of(fake: FakeKube) -> str:
    value: str = fake.deployments[STABLE]["metadata"]["annotations"]["datawheel.dev/last-canary"]
    return value


def assert_stable_only_annotated(fake: FakeKube) -> None:
    """The stable Deployment is never scaled: its one change is the summary annotation, last."""
    changes = [r for r in fake.sent() if r.name == STABLE and r.method != "GET"]
    assert [(r.method, r.content_type) for r in changes] == [("PATCH", SMP)]
    assert changes[0].body == {
        "metadata": {"annotations": {"datawheel.dev/last-canary": annotation_of(fake)}}
    }
    assert fake.sent()[-1] == changes[0]


# --- a failing canary is rolled back ------------------------------------------------------


def test_failing_canary_is_rolled_back(
    store_uri: str,
    tmp_path: Path,
    kube: FakeKube,
    prometheus: Callable[[list[str]], PromProcess],
) -> None:
    bad = register_failing_version(store_uri, tmp_path)
    assert bad == "v3"
    stable, canary = start_servers(store_uri, tmp_path, f"digits:{bad}")
    try:
        prom = prometheus([f"127.0.0.1:{stable.port}", f"127.0.0.1:{canary.port}"])
        with Load(stable) as stable_load, Load(canary) as canary_load:
            wait_for_traffic(Prometheus(prom.url), ["v1", bad])
            started = time.monotonic()
            result = CliRunner().invoke(
                canary_command,
                [
                    "--model",
                    "digits",
                    "--store",
                    store_uri,
                    "--prometheus",
                    prom.url,
                    "--kubeconfig",
                    str(kube.kubeconfig(tmp_path / "kubeconfig")),
                    "--steps",
                    "0.25,0.5",
                    "--interval",
                    "1",
                    "--window",
                    WINDOW,
                    "--min-requests",
                    str(MIN_REQUESTS),
                    "--json",
                ],
            )
            elapsed = time.monotonic() - started
    finally:
        for server in (stable, canary):
            server.stop()
    assert canary_load.codes[500] > 0 and set(canary_load.codes) == {500}  # really failing
    assert set(stable_load.codes) == {200}
    assert result.exit_code == 1, result.output  # 1: rolled back
    record = json.loads(result.stdout)

    # the decision, and why
    assert record["decision"] == "rolled_back"
    assert record["reason"].startswith("canary error rate 100.00%"), record["reason"]
    assert "above the limit 1.00%" in record["reason"]
    assert (record["stable_version"], record["canary_version"]) == ("v1", "v3")
    assert len(record["steps"]) == 1  # stopped at the first step
    look = record["steps"][0]["looks"][-1]
    assert look["decision"] == "rollback"
    assert look["canary"]["error_rate"] == 1.0 and look["canary"]["requests"] >= MIN_REQUESTS
    assert look["stable"]["error_rate"] == 0.0 and look["stable"]["requests"] >= MIN_REQUESTS
    assert elapsed < 20

    # the registry: champion unchanged, the candidate retired (the canary judged it), the
    # record stored
    store = LocalStore(store_uri.removeprefix("file://"))
    assert registry.resolve(store, "digits", "champion").version == "v1"
    assert registry.get_alias(store, "digits", "candidate") is None
    assert record["candidate_cleared"] is True
    assert get_json(store, record["record_key"]) == record
    assert record["record_key"].startswith("models/digits/canary/")

    # Kubernetes: exactly these requests changed anything
    posts = kube.sent("POST")
    assert len(posts) == 1
    body = posts[0].body
    assert body["metadata"]["name"] == CANARY
    assert body["spec"]["replicas"] == 1
    assert body["spec"]["selector"]["matchLabels"]["datawheel.dev/track"] == "canary"
    assert body["spec"]["template"]["metadata"]["labels"]["datawheel.dev/track"] == "canary"
    assert body["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "serve",
        "--model",
        "digits:v3",
    ]
    assert replica_patches(kube.sent()) == []  # stopped at the first step: no rescale
    deletes = kube.sent("DELETE")
    assert [r.name for r in deletes] == [CANARY]
    assert deletes[0].query == {"propagationPolicy": ["Foreground"]}
    assert "rolled back digits:v3 (stable v1): canary error rate 100.00%" in annotation_of(kube)
    assert_stable_only_annotated(kube)
    assert CANARY not in kube.deployments
    assert kube.deployments[STABLE]["spec"]["replicas"] == 4


# --- a healthy canary is promoted ---------------------------------------------------------


def test_healthy_canary_is_promoted(
    store_uri: str,
    tmp_path: Path,
    kube: FakeKube,
    prometheus: Callable[[list[str]], PromProcess],
) -> None:
    def hpa(fake: FakeKube, request: Request) -> None:
        """Like an HPA under load: the stable Deployment grows to 6 once the canary exists."""
        if request.method == "POST":
            stable = fake.deployments[STABLE]
            fake.deployments[STABLE] = fake.settle(
                {**stable, "spec": {**stable["spec"], "replicas": 6}}
            )

    kube.hooks.append(hpa)
    stable, canary = start_servers(store_uri, tmp_path, "digits:v2")
    log: list[str] = []
    try:
        prom = prometheus([f"127.0.0.1:{stable.port}", f"127.0.0.1:{canary.port}"])
        client = Prometheus(prom.url)
        with Load(stable, feedback=True) as stable_load, Load(canary, feedback=True) as canary_load:
            wait_for_traffic(client, ["v1", "v2"])
            record = run_canary(
                LocalStore(store_uri.removeprefix("file://")),
                deployments(kube),
                client,
                CanaryConfig(
                    model="digits",
                    steps=(0.1, 0.25, 0.5),
                    interval_s=1.0,
                    window=WINDOW,
                    thresholds=Thresholds(min_requests=MIN_REQUESTS, min_labels=MIN_LABELS),
                    max_waits=3,
                ),
                log=log.append,
            )
            # the stable server follows digits@champion: it hot-swaps to the promoted v2
            deadline = time.monotonic() + 20
            while stable.get_json("/v2/models/digits")["versions"] != ["v2"]:
                assert time.monotonic() < deadline, stable.log()
                time.sleep(0.2)
    finally:
        for server in (stable, canary):
            server.stop()
    assert set(canary_load.codes) == {200}

    assert record["decision"] == "promoted", record["reason"]
    assert record["reason"] == "healthy at every step (0.1, 0.25, 0.5)"
    assert record["champion_moved_to"] == "v2"
    # the canary is sized against the stable pods there are at each step (4, then 6)
    steps = [(s["share"], s["canary_replicas"], s["stable_replicas"]) for s in record["steps"]]
    assert steps == [(0.1, 1, 4), (0.25, 2, 6), (0.5, 6, 6)]
    assert [s["pod_share"] for s in record["steps"]] == [0.2, 0.25, 0.5]
    for step in record["steps"]:
        assert step["looks"][-1]["decision"] == "advance"
        assert all(look["decision"] in ("advance", "wait") for look in step["looks"])
        last = step["looks"][-1]
        assert last["canary"]["requests"] >= MIN_REQUESTS and last["canary"]["errors"] == 0
        assert last["canary"]["ready_pods"] == step["canary_replicas"]
        assert last["stable"]["ready_pods"] == 6
        assert 0 < last["canary"]["p99_s"] < 1 and 0 < last["stable"]["p99_s"] < 1
    assert record["thresholds"]["min_requests"] == MIN_REQUESTS
    # live accuracy was judged, on what the users' labels said of each version's predictions
    last = record["steps"][-1]["looks"][-1]
    assert last["canary"]["labels"] >= MIN_LABELS and last["stable"]["labels"] >= MIN_LABELS
    assert "canary live accuracy" in last["reason"], last["reason"]
    assert last["canary"]["accuracy"] == pytest.approx(canary_load.accuracy, abs=0.1)
    assert last["stable"]["accuracy"] == pytest.approx(stable_load.accuracy, abs=0.1)
    assert "step 0.5: 6 canary pod(s) of digits:v2 next to 6 stable pod(s) of v1" in log

    store = LocalStore(store_uri.removeprefix("file://"))
    champion = registry.get_alias(store, "digits", "champion")
    assert champion is not None and champion["version"] == "v2"
    assert champion["history"][-1] == "v1" and champion["reason"].startswith("canary: healthy")
    assert registry.get_alias(store, "digits", "candidate") is None  # rolled out: retired
    assert record["candidate_cleared"] is True
    assert get_json(store, record["record_key"]) == record

    # Kubernetes: canary created at 1 pod, scaled with the steps, deleted; stable untouched
    changes = [(r.method, r.name) for r in kube.sent() if r.method != "GET"]
    assert changes == [
        ("POST", None),
        ("PATCH", CANARY),
        ("PATCH", CANARY),
        ("DELETE", CANARY),  # after the champion alias moved
        ("PATCH", STABLE),  # the annotation
    ]
    assert [r.body["spec"]["replicas"] for r in kube.sent("POST")] == [1]
    assert replica_patches(kube.sent()) == [(CANARY, 2), (CANARY, 6)]
    assert "promoted digits:v2 (stable v1): healthy at every step" in annotation_of(kube)
    assert_stable_only_annotated(kube)
    assert set(kube.deployments) == {STABLE}


# --- what goes wrong, without servers ------------------------------------------------------


def quick_config(**overrides: Any) -> CanaryConfig:
    base: dict[str, Any] = {
        "model": "digits",
        "steps": (0.5, 0.75),
        "interval_s": 0.0,
        "window": WINDOW,
        "thresholds": THRESHOLDS,
        "max_waits": 0,
        "ready_timeout_s": 0.5,
    }
    return CanaryConfig(**{**base, **overrides})


def dead_prometheus() -> Prometheus:
    return Prometheus(f"http://127.0.0.1:{free_port()}", timeout=2)


def test_prometheus_down_aborts_deletes_the_canary_and_records(
    store_uri: str, kube: FakeKube
) -> None:
    store = LocalStore(store_uri.removeprefix("file://"))
    with pytest.raises(PrometheusError, match="cannot reach Prometheus") as info:
        run_canary(store, deployments(kube), dead_prometheus(), quick_config())
    assert "\n" not in str(info.value) and "Fix:" in str(info.value)
    assert CANARY not in kube.deployments and [r.name for r in kube.sent("DELETE")] == [CANARY]
    assert_stable_only_annotated(kube)
    assert registry.resolve(store, "digits", "champion").version == "v1"
    (key,) = store.list("models/digits/canary")
    record = get_json(store, key)
    assert isinstance(record, dict) and record["decision"] == "aborted"
    assert "cannot reach Prometheus" in record["reason"]
    assert annotation_of(kube).split(" ", 1)[1].startswith("aborted digits:v2 (stable v1)")


def test_canary_that_never_gets_ready_is_rolled_back(store_uri: str, kube: FakeKube) -> None:
    kube.never_ready.add(CANARY)
    store = LocalStore(store_uri.removeprefix("file://"))
    record = run_canary(store, deployments(kube), dead_prometheus(), quick_config())
    assert record["decision"] == "rolled_back"
    assert record["reason"] == f"deployment {CANARY} had 0 of 4 replicas ready after 0.5 s"
    assert record["steps"][0]["looks"] == []  # never judged: Prometheus was not asked
    assert CANARY not in kube.deployments
    assert_stable_only_annotated(kube)


def test_too_little_traffic_is_inconclusive_and_rolled_back(
    store_uri: str, kube: FakeKube, prometheus: Callable[[list[str]], PromProcess]
) -> None:
    prom = prometheus([])  # a real Prometheus that has seen no datawheel server at all
    store = LocalStore(store_uri.removeprefix("file://"))
    record = run_canary(store, deployments(kube), Prometheus(prom.url), quick_config(max_waits=1))
    assert record["decision"] == "rolled_back"
    assert record["reason"].startswith("inconclusive after 2 looks: canary served 0 inference")
    assert [look["decision"] for look in record["steps"][0]["looks"]] == ["wait", "wait"]
    assert registry.resolve(store, "digits", "champion").version == "v1"
    # no verdict on the model: it stays the candidate, to be tried again
    assert record["candidate_cleared"] is False
    assert registry.resolve(store, "digits", "candidate").version == "v2"


REFUSALS = {
    "canary_exists": "deployment 'datawheel-serve-canary' already exists",
    "no_stable": "deployment 'datawheel-serve' is not in namespace 'datawheel'",
    "pinned_stable": "serves 'digits:v1', not digits@champion",
    "same_version": "model 'digits' has no candidate: digits:v1 is already the champion",
    "no_candidate": "model 'digits' has no candidate: nothing to roll out",
    "bad_window": "query window '2 minutes' is not a PromQL duration",
}


@pytest.mark.parametrize("setup", list(REFUSALS))
def test_refusals_change_nothing(store_uri: str, kube: FakeKube, setup: str) -> None:
    message = REFUSALS[setup]
    overrides: dict[str, Any] = {}
    store = LocalStore(store_uri.removeprefix("file://"))
    if setup == "canary_exists":
        kube.deployments[CANARY] = stable_deployment()
    elif setup == "no_stable":
        del kube.deployments[STABLE]
    elif setup == "pinned_stable":
        kube.deployments[STABLE] = stable_deployment(model_args=["serve", "--model", "digits:v1"])
    elif setup == "same_version":
        registry.promote(store, "digits", "v1", alias="candidate")
    elif setup == "no_candidate":
        registry.clear(store, "digits", "candidate")
    elif setup == "bad_window":
        overrides["window"] = "2 minutes"
    with pytest.raises(DatawheelError, match=re.escape(message)) as info:
        run_canary(store, deployments(kube), dead_prometheus(), quick_config(**overrides))
    assert "Fix:" in str(info.value)
    assert {r.method for r in kube.sent()} <= {"GET"}
    assert store.list("models/digits/canary") == []


def test_kubernetes_unreachable_or_unconfigured(tmp_path: Path) -> None:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{free_port()}"
    cfg.retries = 0
    with pytest.raises(
        KubeError, match=re.escape("cannot reach the Kubernetes API at http://127.0.0.1")
    ):
        KubeDeployments(client.ApiClient(cfg), "datawheel").get(STABLE)
    with pytest.raises(KubeError, match="no Kubernetes cluster configured") as info:
        connect("datawheel", kubeconfig=str(tmp_path / "missing"))
    assert "--kubeconfig" in str(info.value)


def test_prometheus_client_errors(
    kube: FakeKube, prometheus: Callable[[list[str]], PromProcess]
) -> None:
    prom = Prometheus(prometheus([]).url)
    assert prom.value("vector(2) + vector(3)") == 5.0
    assert prom.value("scalar(vector(1.5))") == 1.5
    assert prom.value("time()", at=1_000_000.5) == 1_000_000.5  # evaluated at the given time
    assert prom.value('up{job="nothing"}') is None
    assert prom.value("vector(0) / vector(0)") is None  # NaN: no samples
    with pytest.raises(PrometheusError, match=r"answered 400 to 'sum\(': .*parse error"):
        prom.value("sum(")
    with pytest.raises(PrometheusError, match="answered 404"):
        Prometheus(kube.url).value("up")  # not a Prometheus
    with pytest.raises(PrometheusError, match="is not an http"):
        Prometheus("prometheus:9090")
