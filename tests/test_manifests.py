"""The kustomize tree: every overlay builds, validates against Kubernetes 1.29 and 1.37, passes
checkov, and says what serving needs (probes, limits, a locked-down pod, no credentials)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from datawheel.deploy import images
from datawheel.deploy.manifests import manifests_root, overlays, render

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["gpu", "gpu-monitoring", "kubeflow", "kubeflow-monitoring", "local"]
MONITORED = {"gpu-monitoring", "kubeflow-monitoring"}  # add manifests/monitoring (a Component)
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
# Custom resources: kubernetes-validate has only the built-in schemas; test_monitoring.py
# checks these against the prometheus-operator's published CRD schemas, and test_overlays.py
# that only the overlays declaring them carry them.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


@cache
def built(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(render(overlay)) if d)


def _one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in built(overlay) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: {kind}/{name} x{len(found)}"
    return found[0]


def test_the_tree_in_use_is_the_checkout() -> None:
    assert manifests_root() == MANIFESTS
    assert overlays() == OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds(overlay: str) -> None:
    kinds = Counter(d["kind"] for d in built(overlay))
    for kind in (
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "ConfigMap",
    ):
        assert kinds[kind] >= 1, (overlay, kind)
    # train steps checkpoint into the store: no ReadWriteOnce volume shared by a sweep's pods
    assert ("PersistentVolumeClaim", "datawheel-checkpoints") not in {
        (d["kind"], d["metadata"]["name"]) for d in built(overlay)
    }
    assert kinds["Secret"] == 0, "credentials never live in git: reference a Secret by name"
    names = [(d["kind"], d["metadata"]["name"]) for d in built(overlay)]
    assert len(names) == len(set(names)), "a resource is defined twice"
    monitored = int(overlay in MONITORED)
    assert kinds["ServiceMonitor"] == monitored and kinds["PrometheusRule"] == monitored
    if overlay == "local":  # MinIO for standalone installs
        assert ("Deployment", "minio") in names


def test_base_has_one_resource_per_file_and_lists_them_all() -> None:
    base = MANIFESTS / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    for name in listed:
        docs = [d for d in yaml.safe_load_all((base / name).read_text()) if d]
        assert len(docs) == 1, name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_strict(overlay: str, version: str) -> None:
    checked = 0
    for doc in built(overlay):
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 12


def test_strict_validation_would_catch_a_typo() -> None:
    deployment = json.loads(json.dumps(_one("local", "Deployment", "datawheel-serve")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, "1.29.0", strict=True)


def _serve_pod(overlay: str) -> dict[str, Any]:
    spec: dict[str, Any] = _one(overlay, "Deployment", "datawheel-serve")["spec"]["template"]
    return spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_pod_is_probed_limited_and_locked_down(overlay: str) -> None:
    pod = _serve_pod(overlay)["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for key in ("cpu", "memory"):
        assert container["resources"]["requests"][key] and container["resources"]["limits"][key]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["runAsUser"] >= 10000
    # with a read-only root, everything the server writes is a mounted volume
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/datawheel/spool"} <= mounts
    args = container["args"]
    assert args[args.index("--spool-dir") + 1] == "/var/lib/datawheel/spool"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    # credentials: the Secret as files, never a literal value in the environment
    for env in container.get("env", []):
        assert "value" not in env or not env["name"].endswith(("_KEY", "_KEY_ID", "PASSWORD"))
    secrets = {v["secret"]["secretName"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert list(secrets) == ["datawheel-s3", "datawheel-feedback-key"]
    assert secrets["datawheel-feedback-key"]["optional"] is True  # else the store's key


def hpa_min(overlay: str) -> int:
    return int(_one(overlay, "HorizontalPodAutoscaler", "datawheel-serve")["spec"]["minReplicas"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_the_pods(overlay: str) -> None:
    pod_labels = _serve_pod(overlay)["metadata"]["labels"]
    deployment = _one(overlay, "Deployment", "datawheel-serve")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["datawheel.dev/track"] == "stable"
    service = _one(overlay, "Service", "datawheel-serve")
    # the Service ignores the track so a canary Deployment gets its share of traffic
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "datawheel-serve"}
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = _one(overlay, "PodDisruptionBudget", "datawheel-serve")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # a drain can always proceed, even at one replica (gpu, local): never minAvailable >= min
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert hpa_min(overlay) >= 1
    policy = _one(overlay, "NetworkPolicy", "datawheel-serve")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    hpa = _one(overlay, "HorizontalPodAutoscaler", "datawheel-serve")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "datawheel-serve"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_least_privilege(overlay: str) -> None:
    role = _one(overlay, "Role", "datawheel-canary")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert rule["resources"] == ["deployments"]
        if rule["verbs"] != ["create"]:  # create cannot be scoped to names
            assert set(rule["resourceNames"]) == {"datawheel-serve", "datawheel-serve-canary"}
    assert not [d for d in built(overlay) if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = _one(overlay, "RoleBinding", "datawheel-canary")
    assert binding["subjects"][0]["name"] == "datawheel-canary"


def test_images_come_from_the_one_setting() -> None:
    assert (MANIFESTS / "base" / "images.env").read_text().count("=") == 2
    for overlay, image in (
        ("local", images.CPU_IMAGE),
        ("kubeflow", images.CPU_IMAGE),
        ("kubeflow-monitoring", images.CPU_IMAGE),
        ("gpu", images.TRAIN_IMAGE),
        ("gpu-monitoring", images.TRAIN_IMAGE),
    ):
        (container,) = _serve_pod(overlay)["spec"]["containers"]
        assert container["image"] == image, overlay
    # the generated images ConfigMap is local-config: it never reaches the cluster
    for overlay in OVERLAYS:
        assert not [d for d in built(overlay) if d["metadata"]["name"] == "datawheel-images"]


def test_overlays_place_and_patch() -> None:
    for overlay, namespace in (
        ("local", "datawheel"),
        ("kubeflow", "kubeflow"),
        ("kubeflow-monitoring", "kubeflow"),
        ("gpu", "datawheel"),
        ("gpu-monitoring", "datawheel"),
    ):
        namespaced = [d for d in built(overlay) if d["kind"] != "Namespace"]
        assert {d["metadata"].get("namespace") for d in namespaced} == {namespace}, overlay
    settings = _one("kubeflow", "ConfigMap", "datawheel-settings")["data"]
    assert settings["DATAWHEEL_S3_ENDPOINT"] == "minio-service.kubeflow:9000"
    assert settings["DATAWHEEL_STORE"].startswith("s3://mlpipeline/")
    gpu = _serve_pod("gpu")["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nodeSelector" not in _serve_pod("local")["spec"]
    assert _one("local", "HorizontalPodAutoscaler", "datawheel-serve")["spec"]["minReplicas"] == 1
    for overlay in ("gpu", "gpu-monitoring"):  # one GPU held at rest, not two
        hpa = _one(overlay, "HorizontalPodAutoscaler", "datawheel-serve")
        assert hpa["spec"]["minReplicas"] == 1


def test_minio_admits_its_namespace_and_the_pipelines() -> None:
    (rule,) = _one("local", "NetworkPolicy", "minio")["spec"]["ingress"]
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}},
        # multi-user Kubeflow runs pipeline pods in profile namespaces, which carry this label
        {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/part-of": "kubeflow-profile"}}},
    ]


# --- checkov (in its own venv: its pins clash with ours) -------------------------------------


@cache
def _checkov(tmp: Path) -> list[dict[str, Any]]:
    assert CHECKOV.exists(), "checkov is not installed: `make test` creates .venv-checkov"
    for overlay in OVERLAYS:
        (tmp / f"{overlay}.yaml").write_text(render(overlay))
    done = subprocess.run(
        [str(CHECKOV), "-d", str(tmp), "--framework", "kubernetes", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(done.stdout)
    return report if isinstance(report, list) else [report]


@pytest.fixture(scope="module")
def checkov(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    (report,) = _checkov(tmp_path_factory.mktemp("checkov"))
    results: dict[str, Any] = {**report["results"], "summary": report["summary"]}
    return results


def test_checkov_finds_no_failed_checks(checkov: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['check_name']})" for c in checkov["failed_checks"]
    ]
    assert failed == []
    assert checkov["summary"]["parsing_errors"] == 0
    assert checkov["summary"]["resource_count"] >= 80  # all five overlays were read
    assert len(checkov["passed_checks"]) > 300


def test_every_skipped_check_carries_a_reason(checkov: dict[str, Any]) -> None:
    for check in checkov["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.split()) >= 4, f"{check['check_id']} on {check['resource']}: {reason!r}"
