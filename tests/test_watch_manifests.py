"""The watcher's manifests: one locked-down replica, probed on /healthz, reachable by
Alertmanager through its Service, and the example Alertmanager route pointing at it."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from datawheel.deploy.manifests import render
from datawheel.flywheel.alerts import ACCURACY_ALERTS, DRIFT_ALERTS

OVERLAYS = ["gpu", "gpu-monitoring", "kubeflow", "kubeflow-monitoring", "local"]
EXAMPLE = Path(__file__).resolve().parent.parent / "manifests/monitoring/alertmanager.example.yml"


@cache
def _docs(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(render(overlay)) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_watcher_is_one_locked_down_probed_replica(overlay: str) -> None:
    docs = _docs(overlay)
    deployment = docs[("Deployment", "datawheel-watcher")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "datawheel-watcher"
    assert pod["automountServiceAccountToken"] is False
    assert docs[("ServiceAccount", "datawheel-watcher")]["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] >= 10000
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    for key in ("cpu", "memory"):
        assert container["resources"]["requests"][key] and container["resources"]["limits"][key]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
    args = container["args"]
    assert args[0] == "watch" and "--kfp-host" in args and "--json" in args
    listen = args[args.index("--listen") + 1]
    assert listen == "0.0.0.0:8080"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # the same image as serving's CPU build, even where serving runs on GPUs
    serve = docs[("Deployment", "datawheel-serve")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("ghcr.io/datawheel/datawheel:")
    assert overlay.startswith("gpu") or container["image"] == serve["image"]
    service = docs[("Service", "datawheel-watcher")]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "datawheel-watcher"}
    assert service["spec"]["ports"][0]["port"] == 8080
    policy = docs[("NetworkPolicy", "datawheel-watcher")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["ingress"][0] == {"ports": [{"port": 8080, "protocol": "TCP"}]}
    # the rest is the Istio sidecar's health ports, in meshed overlays (tests/test_overlays.py)
    assert all(
        p["port"] in (15020, 15021) for r in policy["spec"]["ingress"][1:] for p in r["ports"]
    )
    egress = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 9000, 8888} <= egress


def test_the_example_route_sends_the_retraining_alerts_to_the_watcher() -> None:
    config = yaml.safe_load(EXAMPLE.read_text())
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "datawheel-watcher"]
    (matcher,) = route["matchers"]
    names = set(re.search(r'"(.*)"', matcher).group(1).split("|"))  # type: ignore[union-attr]
    assert names == set(DRIFT_ALERTS + ACCURACY_ALERTS)
    (receiver,) = [r for r in config["receivers"] if r["name"] == "datawheel-watcher"]
    (hook,) = receiver["webhook_configs"]
    assert hook["url"] == "http://datawheel-watcher.datawheel.svc:8080/alertmanager"
    assert hook["send_resolved"] is False
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool (Debian prometheus-alertmanager) is not installed")
    done = subprocess.run([amtool, "check-config", str(EXAMPLE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
