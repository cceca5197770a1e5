"""The canary rolls out the candidate only, and its gate judges live accuracy from feedback.

The inaccurate canary is an honest one: v3 is v2 with its class scores rotated by one, so
it answers every request (200, fast) with the wrong class. Only the labels users send back
through the real feedback API show it, as they do in production.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

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
from cli_helpers import datawheel
from fake_kube import FakeKube, stable_deployment
from prometheus_support import Prometheus as PromProcess
from serving_support import copy_store, free_port

from datawheel import registry
from datawheel.deploy.canary_policy import Thresholds
from datawheel.deploy.prom import Prometheus
from datawheel.deploy.rollout import CANARY, STABLE, CanaryConfig, run_canary
from datawheel.orchestration.register import register_step

MIN_LABELS = 20


@pytest.fixture
def store_uri(model_store: str, tmp_path: Path) -> str:
    """A private copy of the session's model store: v1 champion, no candidate."""
    return copy_store(model_store, tmp_path / "store")


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.deployments[STABLE] = stable_deployment(replicas=2)
    yield fake.start()
    fake.stop()


class _Rotated(torch.nn.Module):
    """v2's scores moved one class on: always answers, with the wrong class unless v2 was
    wrong by exactly one class."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return torch.roll(out, 1, 1)


def test_canary_without_a_candidate_refuses_in_one_line(
    store_uri: str, tmp_path: Path, kube: FakeKube
) -> None:
    """The last evaluation rejected: its model is the challenger and nothing is rolled out."""
    store = local_store(store_uri)
    v2 = registry.resolve(store, "digits", "v2")
    model_dir = registry.fetch(store, v2, tmp_path / "v2")
    (model_dir / "train.json").write_text(
        json.dumps({"metrics": {}, "config": {"model_kind": "mlp"}, "device": "cpu"})
    )
    # another model: the registry knows a model by model.pt's weights and transform.json, so
    # new model.ts bytes alone would be v2 again (reused)
    (model_dir / "model.ts").write_bytes((model_dir / "model.ts").read_bytes() + b"\0")
    (model_dir / "model.pt").unlink()
    evaluation = {
        "metrics": {"accuracy": 0.5},
        "decision": "reject",
        "reason": "cannot show the challenger is better than champion v1",
        "champion_version": "v1",
    }
    summary = json.loads(
        register_step(
            store_uri, "digits", str(model_dir), "digits", "d1", json.dumps(evaluation),
            "challenger", canary=True,
        )
    )  # fmt: skip
    assert (summary["model_version"], summary["alias"]) == ("v3", "challenger")
    proc = datawheel(
        "deploy", "canary", "--model", "digits", "--store", store_uri,
        "--prometheus", f"http://127.0.0.1:{free_port()}",
        "--kubeconfig", str(kube.kubeconfig(tmp_path / "kubeconfig")),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "error: model 'digits' has no candidate: the last evaluation rejected digits:v3, "
        "nothing to roll out. Fix: train a model that beats the champion"
    ), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert {r.method for r in kube.sent()} <= {"GET"}  # nothing created, nothing recorded
    assert store.list("models/digits/canary") == []
    assert registry.resolve(store, "digits", "champion").version == "v1"


def test_inaccurate_canary_is_rolled_back_on_live_accuracy(
    store_uri: str,
    tmp_path: Path,
    kube: FakeKube,
    prometheus: Callable[[list[str]], PromProcess],
) -> None:
    bad = register_wrapped_version(store_uri, tmp_path, _Rotated)
    assert bad == "v3"
    stable, canary = start_servers(store_uri, tmp_path, f"digits:{bad}")
    try:
        prom = prometheus([f"127.0.0.1:{stable.port}", f"127.0.0.1:{canary.port}"])
        client = Prometheus(prom.url)
        with (
            Load(stable, feedback=True) as stable_load,
            Load(canary, feedback=True) as canary_load,
        ):
            wait_for_traffic(client, ["v1", bad])
            record = run_canary(
                local_store(store_uri),
                deployments(kube),
                client,
                CanaryConfig(
                    model="digits",
                    steps=(0.25, 0.5),
                    interval_s=1.0,
                    window=WINDOW,
                    thresholds=Thresholds(min_requests=MIN_REQUESTS, min_labels=MIN_LABELS),
                    max_waits=5,
                ),
            )
    finally:
        for server in (stable, canary):
            server.stop()
    assert set(canary_load.codes) == {200}  # healthy by errors and latency...
    assert canary_load.accuracy < 0.05 < 0.7 < stable_load.accuracy  # ...but mostly wrong

    assert record["decision"] == "rolled_back", record["reason"]
    reason = record["reason"]
    assert re.match(r"canary live accuracy [0-4]\.\d\d% over \d+ labels", reason), reason
    assert "more than the allowed 5.00%" in record["reason"]
    looks = [look for step in record["steps"] for look in step["looks"]]
    # before enough labels arrived, accuracy was not judged, and the looks said so
    for look in looks[:-1]:
        assert look["decision"] in ("wait", "advance")
        if look["decision"] == "advance":
            assert "live accuracy not judged yet" in look["reason"], look["reason"]
    last = looks[-1]
    assert last["decision"] == "rollback"
    assert last["canary"]["labels"] >= MIN_LABELS and last["canary"]["accuracy"] < 0.05
    assert last["stable"]["labels"] >= MIN_LABELS
    assert last["stable"]["accuracy"] == pytest.approx(stable_load.accuracy, abs=0.1)

    store = local_store(store_uri)
    assert registry.resolve(store, "digits", "champion").version == "v1"  # never shipped
    assert registry.get_alias(store, "digits", "candidate") is None  # the canary retired it
    assert record["candidate_cleared"] is True
    assert CANARY not in kube.deployments and [r.name for r in kube.sent("DELETE")] == [CANARY]
