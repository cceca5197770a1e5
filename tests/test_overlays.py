"""Which clusters each overlay applies on: every resource is a built-in Kubernetes kind, or a
custom resource whose CRD the overlay declares it needs (below). A plain overlay applies on a
cluster without the Prometheus Operator; only the *-monitoring overlays need its CRDs."""

from __future__ import annotations

from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from datawheel.deploy.manifests import overlays, render

PROMETHEUS_OPERATOR = frozenset(
    {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
)
# The CRDs (apiVersion, kind) each overlay needs installed before `kubectl apply -k`.
REQUIRED_CRDS: dict[str, frozenset[tuple[str, str]]] = {
    "gpu": frozenset(),
    "gpu-monitoring": PROMETHEUS_OPERATOR,
    "kubeflow": frozenset(),
    "kubeflow-monitoring": PROMETHEUS_OPERATOR,
    "local": frozenset(),
}
# The oldest Kubernetes the README supports: a kind built in there is built in on every cluster.
BUILT_IN_AT = "1.29.0"


@cache
def _docs(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(d for d in yaml.safe_load_all(render(overlay)) if d)


def _built_in(doc: dict[str, Any]) -> bool:
    """kubernetes-validate ships the built-in API's schemas only: no schema, not built in."""
    try:
        kubernetes_validate.validate(doc, BUILT_IN_AT, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    return True


def test_every_overlay_declares_what_it_needs() -> None:
    assert sorted(REQUIRED_CRDS) == overlays()


@pytest.mark.parametrize("overlay", sorted(REQUIRED_CRDS))
def test_kinds_are_built_in_or_declared(overlay: str) -> None:
    needed = REQUIRED_CRDS[overlay]
    custom = {(d["apiVersion"], d["kind"]) for d in _docs(overlay) if not _built_in(d)}
    assert custom <= needed, f"{overlay} needs CRDs it does not declare: {sorted(custom - needed)}"
    assert custom == needed, f"{overlay} declares CRDs it does not use: {sorted(needed - custom)}"


def test_the_plain_overlays_apply_without_the_prometheus_operator() -> None:
    plain = [name for name, crds in REQUIRED_CRDS.items() if not crds]
    assert plain == ["gpu", "kubeflow", "local"]
    for overlay in plain:
        assert {d["apiVersion"].split("/")[0] for d in _docs(overlay)}.isdisjoint(
            {"monitoring.coreos.com"}
        ), overlay


def test_a_custom_resource_is_not_taken_for_built_in() -> None:
    monitor = next(d for d in _docs("kubeflow-monitoring") if d["kind"] == "ServiceMonitor")
    assert not _built_in(monitor)
    service = next(d for d in _docs("kubeflow") if d["kind"] == "Service")
    assert _built_in(service)


def test_monitoring_overlays_are_their_plain_overlay_plus_the_component() -> None:
    for plain in ("gpu", "kubeflow"):
        names = {(d["kind"], d["metadata"]["name"]) for d in _docs(plain)}
        monitored = {(d["kind"], d["metadata"]["name"]) for d in _docs(f"{plain}-monitoring")}
        assert monitored - names == {
            ("ServiceMonitor", "datawheel-serve"),
            ("PrometheusRule", "datawheel-serve"),
            ("ConfigMap", "datawheel-grafana-dashboards"),
        }
        assert names <= monitored


# --- Istio ---------------------------------------------------------------------------------------

MESHED = {"kubeflow", "kubeflow-monitoring"}  # add manifests/istio (a Component)
PROTOCOLS = ("http", "http2", "https", "grpc", "grpc-web", "tcp", "tls", "mongo", "redis")
ISTIOD = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
    "podSelector": {"matchLabels": {"app": "istiod"}},
}


@pytest.mark.parametrize("overlay", sorted(REQUIRED_CRDS))
def test_service_ports_are_named_by_protocol(overlay: str) -> None:
    """Istio picks a port's protocol from its name (<protocol>[-<suffix>]) or appProtocol."""
    for service in (d for d in _docs(overlay) if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["name"].split("-")[0] in PROTOCOLS, (service["metadata"]["name"], port)
            assert port["appProtocol"] == port["name"].split("-")[0]


@pytest.mark.parametrize("overlay", sorted(REQUIRED_CRDS))
def test_meshed_overlays_let_the_sidecar_work(overlay: str) -> None:
    meshed = overlay in MESHED
    for name in ("datawheel-serve", "datawheel-watcher"):
        (policy,) = [
            d
            for d in _docs(overlay)
            if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name
        ]
        to_istiod = [r for r in policy["spec"]["egress"] if r.get("to") == [ISTIOD]]
        assert len(to_istiod) == int(meshed), (overlay, name)
        if meshed:
            assert {p["port"] for p in to_istiod[0]["ports"]} == {15012, 15017}
            ingress = {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]}
            assert ingress == {8080, 15020, 15021}
        # every other egress rule is what base allows: no namespace-wide opening for the mesh
        assert all("to" not in r for r in policy["spec"]["egress"] if r not in to_istiod)
        (deployment,) = [
            d for d in _docs(overlay) if d["kind"] == "Deployment" and d["metadata"]["name"] == name
        ]
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        rewrite = annotations.get("sidecar.istio.io/rewriteAppHTTPProbers")
        assert rewrite == ("true" if meshed else None), (overlay, name)
