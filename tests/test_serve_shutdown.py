"""A serving pod that is deleted has time to finish: the preStop delay, uvicorn's drain and
the ledger's final flush all fit in terminationGracePeriodSeconds, in every overlay."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
import yaml

from datawheel.deploy.manifests import render
from datawheel.serving import server
from datawheel.serving.ledger import Ledger
from datawheel.serving.ledger.writer import FINAL_FLUSH_TIMEOUT_S


def _serve_pod(overlay: str) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in yaml.safe_load_all(render(overlay))
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "datawheel-serve"
    ]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _drain_seconds() -> int:
    """uvicorn's timeout_graceful_shutdown, as `datawheel serve` passes it."""
    found = re.findall(r"timeout_graceful_shutdown=(\d+)", inspect.getsource(server.run))
    assert len(found) == 1, "datawheel serve must bound uvicorn's drain explicitly"
    return int(found[0])


@pytest.mark.parametrize("overlay", ["gpu", "kubeflow", "local"])
def test_grace_period_covers_prestop_drain_and_final_flush(overlay: str) -> None:
    pod = _serve_pod(overlay)
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2  # /bin/sleep: in both images
    pre_stop = int(command[1])
    assert 3 <= pre_stop <= 15  # long enough for endpoints to go, short enough for rollouts
    # the shutdown closes the ledger with its default timeout: the final flush's bound
    assert inspect.signature(Ledger.close).parameters["timeout"].default == FINAL_FLUSH_TIMEOUT_S
    needed = pre_stop + _drain_seconds() + FINAL_FLUSH_TIMEOUT_S
    grace = pod["terminationGracePeriodSeconds"]
    assert needed + 5 <= grace <= needed + 30, (grace, needed)
