"""Kubeflow as a cluster operator meets it: multi-user profile namespaces (manifests/profile)
and Istio authorization for serving (manifests/istio-authz), each built from the README's
own text, validated strictly (built-in kinds by kubernetes-validate, custom resources by
their vendored CRD schemas), and the README's `datawheel submit --namespace` commands run
against a recording multi-user KFP API."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_schemas import schema_errors
from kfp_recorder import kfp_api
from readme_support import build_own, readme_block, unwrap

from datawheel.cli.main import main
from datawheel.deploy.manifests import render

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "team-vision"
K8S = "1.29.0"


def _build(tmp: Path, folder: str, kustomization: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(build_own(tmp, folder, kustomization)) if d]


def _pipeline_refs() -> tuple[set[str], set[str], set[str]]:
    """What the compiled pipelines' pods read: Secret names, ConfigMap names, ConfigMap keys."""
    secrets, maps, keys = set(), set(), set()
    for name in ("training", "flywheel"):
        docs = list(yaml.safe_load_all((ROOT / f"pipelines/compiled/{name}.yaml").read_text()))
        executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for spec in executors.values():
            secrets |= {s["secretName"] for s in spec.get("secretAsEnv", [])}
            for cm in spec.get("configMapAsEnv", []):
                maps.add(cm["configMapName"])
                keys |= {k["configMapKey"] for k in cm["keyToEnv"]}
    return secrets, maps, keys


# --- multi-user: a profile namespace ---------------------------------------------------------


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The README's profile kustomization (its heredoc, with $PROFILE filled in), built."""
    block = readme_block("bash", "manifests/profile")
    (heredoc,) = re.findall(r"<<YAML\n(.*?)\nYAML\n", block, re.S)
    return _build(tmp_path_factory.mktemp("p"), "profile", heredoc.replace("$PROFILE", PROFILE))


def test_the_profile_gets_what_pipeline_pods_read(profile: list[dict[str, Any]]) -> None:
    assert {d["metadata"]["namespace"] for d in profile} == {PROFILE}
    assert sorted(d["kind"] for d in profile) == ["ConfigMap", "PodDefault"]
    (settings,) = [d for d in profile if d["kind"] == "ConfigMap"]
    secrets, maps, keys = _pipeline_refs()
    assert maps == {settings["metadata"]["name"]}
    assert keys <= set(settings["data"]), f"missing {sorted(keys - set(settings['data']))}"
    assert settings["data"]["DATAWHEEL_CHECKPOINT_DIR"] == "store"  # no PVC in the profile
    assert settings["data"]["DATAWHEEL_STORE"].startswith("s3://")
    # the Secret the README creates by hand is the one every step reads
    assert secrets == {"datawheel-s3"}
    assert "create secret generic datawheel-s3" in readme_block("bash", "manifests/profile")
    assert not any(d["kind"] in ("Secret", "PersistentVolumeClaim") for d in profile)


def test_the_profile_validates_strictly(profile: list[dict[str, Any]]) -> None:
    (settings,) = [d for d in profile if d["kind"] == "ConfigMap"]
    kubernetes_validate.validate(settings, K8S, strict=True)
    (default,) = [d for d in profile if d["kind"] == "PodDefault"]
    assert schema_errors(default) == []
    # its schema types envFrom items only as objects: check them as a container's would be
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {
            "containers": [{"name": "x", "image": "x", "envFrom": default["spec"]["envFrom"]}]
        },
    }
    kubernetes_validate.validate(pod, K8S, strict=True)
    refs = {next(iter(e.values()))["name"] for e in default["spec"]["envFrom"]}
    assert refs == {"datawheel-s3", "datawheel-settings"}
    assert default["spec"]["selector"] == {"matchLabels": {"datawheel-s3": "true"}}


def test_the_poddefault_schema_catches_mistakes(profile: list[dict[str, Any]]) -> None:
    (default,) = [d for d in profile if d["kind"] == "PodDefault"]
    bad = copy.deepcopy(default)
    del bad["spec"]["selector"]
    bad["spec"]["envfrom"] = bad["spec"].pop("envFrom")
    assert len(schema_errors(bad)) == 2


def test_the_readme_submits_into_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `datawheel submit` and `schedule` lines, as written (with the host pointed
    at the recording API), on multi-user KFP: the experiment lands in the profile."""
    block = unwrap(readme_block("bash", "manifests/profile"))
    lines = [ln for ln in block.splitlines() if ln.startswith("datawheel ")]
    assert [ln.split()[1] for ln in lines] == ["submit", "schedule"]
    with kfp_api() as api:
        api.multi_user = True
        for line in lines:
            args = shlex.split(line.replace('"$PROFILE"', PROFILE))[1:]
            args[args.index("--host") + 1] = api.url
            try:
                main(args)
            except SystemExit as exc:
                assert not exc.code, f"`{line}` failed"
        assert api.refused == []
        assert {e["namespace"] for e in api.experiments.values()} == {PROFILE}
        assert len(api.posts("/apis/v2beta1/runs")) == 1
        assert len(api.posts("/apis/v2beta1/recurringruns")) == 1


# --- Istio: who may call serving -------------------------------------------------------------


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return _build(
        tmp_path_factory.mktemp("a"), "serving-authz", readme_block("yaml", "istio-authz")
    )


def _policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    return policy


def test_the_serving_policy_matches_istios_schema(authz: list[dict[str, Any]]) -> None:
    assert schema_errors(_policy(authz)) == []
    bad = copy.deepcopy(_policy(authz))
    bad["spec"]["action"] = "PERMIT"
    bad["spec"]["rules"][0]["to"][0]["operation"]["port"] = ["8080"]
    assert len(schema_errors(bad)) == 2


def test_the_serving_policy_covers_the_serving_pods_and_port(authz: list[dict[str, Any]]) -> None:
    policy = _policy(authz)
    (deployment,) = [
        d for d in authz if d["kind"] == "Deployment" and d["metadata"]["name"] == "datawheel-serve"
    ]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"] == "kubeflow"
    assert policy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {
        p["containerPort"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    api, scrape = policy["spec"]["rules"]
    assert {int(p) for p in api["to"][0]["operation"]["ports"]} == ports == {8080}
    assert api["from"][0]["source"]["namespaces"] == ["kubeflow"]  # the serving namespace
    assert api["to"][0]["operation"]["paths"] == ["/v2", "/v2/*"]
    assert scrape["to"][0]["operation"] == {
        "ports": ["8080"],
        "methods": ["GET"],
        "paths": ["/metrics"],
    }
    # the studio and the serving pods share that namespace: the studio's calls are allowed
    studio = [
        d
        for d in authz
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "datawheel-studio"
    ]
    assert studio and studio[0]["metadata"]["namespace"] == "kubeflow"
    # probes bypass the policy only because the meshed pods rewrite them to the sidecar agent
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["sidecar.istio.io/rewriteAppHTTPProbers"] == "true"


def test_no_overlay_includes_the_istio_crds_by_itself() -> None:
    """The plain overlays stay free of Istio kinds: the policy is opt-in."""
    for overlay in ("kubeflow", "local", "gpu"):
        kinds = {d["kind"] for d in yaml.safe_load_all(render(overlay)) if d}
        assert "AuthorizationPolicy" not in kinds and "PodDefault" not in kinds, overlay
