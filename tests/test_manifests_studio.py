"""The studio's manifests: one locked-down replica of `datawheel studio` in every overlay, probed
on /healthz, behind a ClusterIP Service, with the serving image and settings; its args parse with
the real CLI; and the kubeflow-dashboard Component (VirtualService and AuthorizationPolicy for
the central dashboard's menu) validates against Istio's published CRD schemas.

Strict Kubernetes validation of every overlay and checkov over all of them are in
tests/test_manifests.py, which picks up the studio's resources from base/ too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_schemas import schema_errors
from readme_support import build_own, readme_block

from datawheel.cli.studio import studio
from datawheel.deploy import images
from datawheel.deploy.manifests import render

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OVERLAYS = ["gpu", "gpu-monitoring", "kubeflow", "kubeflow-monitoring", "local"]
MESHED = {"kubeflow", "kubeflow-monitoring"}
NAME = "datawheel-studio"
DIGEST = "sha256:" + "cd" * 32
GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"

Docs = dict[tuple[str, str], dict[str, Any]]


def _index(text: str) -> Docs:
    docs = [d for d in yaml.safe_load_all(text) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@cache
def _docs(overlay: str) -> Docs:
    return _index(render(overlay))


def _container(docs: Docs) -> dict[str, Any]:
    (container,) = docs[("Deployment", NAME)]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "studio"
    return dict(container)


def _arg(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, (flag, args)
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_studio_is_one_locked_down_probed_replica(overlay: str) -> None:
    docs = _docs(overlay)
    deployment = docs[("Deployment", NAME)]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME and pod["automountServiceAccountToken"] is False
    assert docs[("ServiceAccount", NAME)]["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(docs)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    for key in ("cpu", "memory"):
        assert container["resources"]["requests"][key] and container["resources"]["limits"][key]
    # a read-only root: /tmp is an emptyDir with a size cap
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert volume["emptyDir"]["sizeLimit"]
    assert "command" not in container, "keep the image's ENTRYPOINT (datawheel); pass args only"
    args = container["args"]
    assert args[0] == "studio"
    assert _arg(args, "--host") == "0.0.0.0"  # inside the pod; the Service stays ClusterIP
    assert container["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    assert _arg(args, "--port") == "8090"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_studio_uses_servings_store_settings_and_server(overlay: str) -> None:
    docs = _docs(overlay)
    container = _container(docs)
    serve = docs[("Deployment", "datawheel-serve")]["spec"]["template"]["spec"]
    serve_container = serve["containers"][0]
    assert container["envFrom"] == serve_container["envFrom"]  # datawheel-settings
    args = container["args"]
    assert _arg(args, "--store") == _arg(serve_container["args"], "--store")
    assert _arg(args, "--model") == "$(DATAWHEEL_MODEL)"
    # the serving Service, by its name and port, in the studio's own namespace
    service = docs[("Service", "datawheel-serve")]["spec"]["ports"][0]
    assert _arg(args, "--serve-url") == f"http://datawheel-serve:{service['port']}"
    # the S3 keys: the serving Secret, mounted as files the same way
    env = {e["name"]: e for e in container["env"]}
    for name in ("AWS_ACCESS_KEY_ID_FILE", "AWS_SECRET_ACCESS_KEY_FILE"):
        assert env[name] == next(e for e in serve_container["env"] if e["name"] == name)
    pod = docs[("Deployment", NAME)]["spec"]["template"]["spec"]
    (s3,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "datawheel-s3"]
    assert s3 == next(v for v in serve["volumes"] if v["name"] == s3["name"])
    # the labeling token: a file from its Secret (required: the pod waits for it), no literal
    token_file = Path(env["DATAWHEEL_STUDIO_TOKEN_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "studio-token"]
    assert token_file.parent == Path(mount["mountPath"]) and mount["readOnly"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "studio-token"]
    assert volume["secret"]["secretName"] == "datawheel-studio-token"
    assert not volume["secret"].get("optional", False)
    assert "DATAWHEEL_STUDIO_TOKEN" not in env
    for item in container["env"]:
        assert "value" not in item or not item["name"].endswith(("TOKEN", "_KEY", "PASSWORD"))
    assert not [d for d in docs.values() if d["kind"] == "Secret"]


@pytest.mark.parametrize("overlay", ["local", "kubeflow", "gpu"])
def test_the_deployments_args_parse_with_the_real_cli(overlay: str) -> None:
    """The flags exist and take these values: `datawheel studio`'s own click parser reads them,
    with $(VAR) expanded from the settings ConfigMap as the kubelet does."""
    docs = _docs(overlay)
    settings = docs[("ConfigMap", "datawheel-settings")]["data"]
    args = [
        re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], a)
        for a in _container(docs)["args"][1:]
    ]
    assert "$(" not in " ".join(args)
    context = studio.make_context("studio", args)
    assert context.params["host"] == "0.0.0.0" and context.params["port"] == 8090
    assert context.params["model"] == settings["DATAWHEEL_MODEL"]
    assert context.params["store"] == settings["DATAWHEEL_STORE"]
    assert context.params["serve_url"] == "http://datawheel-serve:8080"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_is_cluster_internal_and_selects_the_pod(overlay: str) -> None:
    docs = _docs(overlay)
    labels = docs[("Deployment", NAME)]["spec"]["template"]["metadata"]["labels"]
    selector = docs[("Deployment", NAME)]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    spec = docs[("Service", NAME)]["spec"]
    assert spec["type"] == "ClusterIP"
    assert not {"externalIPs", "loadBalancerIP", "externalName"} & spec.keys()
    assert spec["selector"] == {"app.kubernetes.io/name": NAME}
    assert spec["selector"].items() <= labels.items()
    (port,) = spec["ports"]
    assert port == {
        "name": "http",
        "port": 8090,
        "targetPort": "http",
        "protocol": "TCP",
        "appProtocol": "http",
    }
    assert "nodePort" not in port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_policy_admits_the_port_and_reaches_only_what_it_needs(overlay: str) -> None:
    docs = _docs(overlay)
    meshed = overlay in MESHED
    labels = docs[("Deployment", NAME)]["spec"]["template"]["metadata"]["labels"]
    policy = docs[("NetworkPolicy", NAME)]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress == ({8090, 15020, 15021} if meshed else {8090})
    # the model server: its pods only, on its container port
    serve_labels = docs[("Deployment", "datawheel-serve")]["spec"]["template"]["metadata"]["labels"]
    (to_serve,) = [r for r in policy["egress"] if any(p["port"] == 8080 for p in r["ports"])]
    (peer,) = to_serve["to"]
    assert peer.keys() == {"podSelector"}
    assert peer["podSelector"]["matchLabels"].items() <= serve_labels.items()
    to_istiod = [r for r in policy["egress"] if "namespaceSelector" in str(r.get("to"))]
    assert len(to_istiod) == int(meshed)
    open_ports = {p["port"] for r in policy["egress"] if "to" not in r for p in r["ports"]}
    assert open_ports == {53, 9000, 443}
    annotations = docs[("Deployment", NAME)]["spec"]["template"]["metadata"].get("annotations", {})
    rewrite = annotations.get("sidecar.istio.io/rewriteAppHTTPProbers")
    assert rewrite == ("true" if meshed else None)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_studio_validates_strictly(overlay: str) -> None:
    studio_docs = {kind: doc for (kind, name), doc in _docs(overlay).items() if name == NAME}
    assert sorted(studio_docs) == ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"]
    for doc in studio_docs.values():
        for version in ("1.29.0", "1.37.0"):
            kubernetes_validate.validate(doc, version, strict=True)


# --- the image: images.env, and digests pinned as for serving -------------------------------


def test_the_studio_runs_the_cpu_image_everywhere() -> None:
    for overlay in OVERLAYS:  # gpu too: the studio needs no GPU
        assert _container(_docs(overlay))["image"] == images.CPU_IMAGE, overlay
        assert _container(_docs(overlay))["imagePullPolicy"] == "Always"


def _copy(tmp: Path) -> Path:
    root = tmp / "manifests"
    shutil.copytree(ROOT / "manifests", root)
    return root


def test_the_studio_follows_images_env(tmp_path: Path) -> None:
    """What `make images REGISTRY=...` writes: a pushed image, pinned by digest."""
    root = _copy(tmp_path)
    pushed = f"reg.example.com/team/datawheel:0.1.0@{DIGEST}"
    env = root / "base" / "images.env"
    env.write_text(
        re.sub(r"(?m)^DATAWHEEL_IMAGE=.*$", f"DATAWHEEL_IMAGE={pushed}", env.read_text())
    )
    for overlay in ("kubeflow", "gpu", "local"):
        assert _container(_index(render(overlay, root=root)))["image"] == pushed, overlay


def test_kustomize_edit_set_image_pins_the_studio_too(tmp_path: Path) -> None:
    """The README's overlay of your own with `kustomize edit set image` pins serving's image
    name by digest: the studio, which runs that image, gets the same digest."""
    root = _copy(tmp_path)
    mine = root / "overlays" / "mine"
    mine.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../kubeflow"],
        "images": [
            {
                "name": "ghcr.io/datawheel/datawheel",
                "newName": "reg.example.com/team/datawheel",
                "digest": DIGEST,
            }
        ],
    }
    (mine / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = _index(render("mine", root=root))
    assert _container(docs)["image"] == f"reg.example.com/team/datawheel@{DIGEST}"
    serve = docs[("Deployment", "datawheel-serve")]["spec"]["template"]["spec"]["containers"][0]
    assert serve["image"] == _container(docs)["image"]


def test_the_image_ships_the_studios_templates_and_static_files() -> None:
    """The image installs the wheel, and the wheel carries what pyproject's package-data globs
    match (setuptools globs them from the package folder): every page file must match one."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r'(?m)^"datawheel\.studio" = (\[.*\])$', text)
    assert block, "pyproject.toml has no package-data entry for datawheel.studio"
    patterns: list[str] = json.loads(block.group(1))
    package = ROOT / "datawheel" / "studio"
    matched = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {
        p
        for folder in ("templates", "static")
        for p in (package / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert files, "no studio templates or static files found"
    assert files <= matched, (
        f"not packaged: {sorted(str(p.relative_to(ROOT)) for p in files - matched)}"
    )
    names = {p.relative_to(package).as_posix() for p in files}
    assert {"templates/base.html", "static/studio.js", "static/studio.css"} <= names
    assert any(
        n.startswith("static/vendor/onnxruntime-web/") and n.endswith(".wasm") for n in names
    )
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    for needed in ("jinja2", "python-multipart", "cleanlab", "starlette", "uvicorn"):
        assert f'"{needed}' in dependencies, needed


# --- the central dashboard: the kubeflow-dashboard Component --------------------------------


def _readme_overlay() -> str:
    """The kustomization the README tells you to write for the dashboard menu."""
    return readme_block("yaml", "kubeflow-dashboard")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Docs:
    tmp = tmp_path_factory.mktemp("dashboard")
    return _index(build_own(tmp, "studio-dashboard", _readme_overlay()))


def test_the_readme_overlay_is_kubeflow_plus_the_component(dashboard: Docs) -> None:
    assert set(dashboard) - set(_docs("kubeflow")) == {
        ("VirtualService", NAME),
        ("AuthorizationPolicy", NAME),
    }
    assert set(_docs("kubeflow")) <= set(dashboard)
    assert {d["metadata"]["namespace"] for d in dashboard.values()} == {"kubeflow"}
    for key in (("VirtualService", NAME), ("AuthorizationPolicy", NAME)):
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # Istio CRDs: not built in
            kubernetes_validate.validate(dashboard[key], "1.29.0", strict=True)


def test_istio_objects_match_the_published_crd_schemas(dashboard: Docs) -> None:
    for key in (("VirtualService", NAME), ("AuthorizationPolicy", NAME)):
        assert schema_errors(dashboard[key]) == [], key


def test_the_schema_check_catches_mistakes(dashboard: Docs) -> None:
    service = json.loads(json.dumps(dashboard[("VirtualService", NAME)]))
    service["spec"]["http"][0]["rewrites"] = {"uri": "/"}  # a typo
    service["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = "8090"  # a string
    errors = schema_errors(service)
    assert len(errors) == 2 and any("rewrites" in e for e in errors), errors
    policy = json.loads(json.dumps(dashboard[("AuthorizationPolicy", NAME)]))
    policy["spec"]["action"] = "PERMIT"
    assert len(schema_errors(policy)) == 1


def test_the_gateway_route_reaches_the_studio_under_studio(dashboard: Docs) -> None:
    spec = dashboard[("VirtualService", NAME)]["spec"]
    assert spec["gateways"] == ["kubeflow/kubeflow-gateway"] and spec["hosts"] == ["*"]
    (http,) = spec["http"]
    assert http["match"] == [{"uri": {"prefix": "/studio/"}}]
    assert http["rewrite"] == {"uri": "/"}
    assert http["headers"]["request"]["set"] == {"x-forwarded-prefix": "/studio"}
    (route,) = http["route"]
    service = dashboard[("Service", NAME)]
    # a short host: Istio reads it in the VirtualService's namespace, the Service's namespace
    assert route["destination"]["host"] == service["metadata"]["name"]
    assert (
        service["metadata"]["namespace"]
        == dashboard[("VirtualService", NAME)]["metadata"]["namespace"]
    )
    assert route["destination"]["port"] == {"number": service["spec"]["ports"][0]["port"]}


def test_behind_the_gateway_the_studio_links_under_the_prefix_and_may_be_framed(
    dashboard: Docs,
) -> None:
    """The prefix the VirtualService matches (and takes off) is the studio's --root-path,
    and the dashboard, which frames it, may: both flags parse with the real command."""
    args = _container(dashboard)["args"]
    prefix = dashboard[("VirtualService", NAME)]["spec"]["http"][0]["match"][0]["uri"]["prefix"]
    assert f"--root-path={prefix.rstrip('/')}" in args and "--allow-framing" in args
    ctx = studio.make_context("studio", args[1:])
    assert ctx.params["root_path"] == "/studio" and ctx.params["allow_framing"] is True
    # the plain overlays keep the studio at / and unframeable
    plain = _container(_docs("kubeflow"))["args"]
    assert not [a for a in plain if a.startswith(("--root-path", "--allow-framing"))]


def test_only_the_ingress_gateway_may_call_the_studio_in_the_mesh(dashboard: Docs) -> None:
    spec = dashboard[("AuthorizationPolicy", NAME)]["spec"]
    labels = dashboard[("Deployment", NAME)]["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["action"] == "ALLOW"
    (rule,) = spec["rules"]
    assert rule["from"] == [{"source": {"principals": [GATEWAY_PRINCIPAL]}}]
    port = _container(dashboard)["ports"][0]["containerPort"]
    assert rule["to"] == [{"operation": {"ports": [str(port)]}}]


def test_the_readme_reaches_the_studio_as_deployed() -> None:
    text = README.read_text()
    service = _docs("kubeflow")[("Service", NAME)]
    port = service["spec"]["ports"][0]["port"]
    assert f"port-forward svc/{NAME} {port}:{port}" in text
    assert f"http://127.0.0.1:{port}" in text
    env = {e["name"]: e for e in _container(_docs("kubeflow"))["env"]}
    key = Path(env["DATAWHEEL_STUDIO_TOKEN_FILE"]["value"]).name  # the Secret's key
    pod = _docs("kubeflow")[("Deployment", NAME)]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "studio-token"]
    assert f"create secret generic {volume['secret']['secretName']}" in text
    assert f"--from-literal={key}=" in text


def test_the_readme_menu_link_command_edits_the_links_json(tmp_path: Path) -> None:
    """The README's jq steps, run on links JSON shaped like Kubeflow's default: the studio's
    entry is appended to menuLinks, the rest is kept, and the patch carries it as a string."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed (Debian package jq)")
    text = README.read_text()
    add = re.search(r"\| jq '(\.menuLinks \+= [^']+)'", text)
    patch = re.search(r"\"\$\(jq -n --rawfile links links\.json '([^']+)'\)\"", text)
    assert add and patch, "the README's menu-link commands moved: update this test"
    links = {
        "menuLinks": [{"type": "item", "link": "/jupyter/", "text": "Notebooks", "icon": "book"}],
        "externalLinks": [],
        "quickLinks": [],
        "documentationItems": [],
    }
    edited = subprocess.run(
        [jq, add.group(1)], input=json.dumps(links), capture_output=True, text=True, check=True
    )
    (tmp_path / "links.json").write_text(edited.stdout)
    result = json.loads(edited.stdout)
    assert result["menuLinks"][0] == links["menuLinks"][0]
    assert result["menuLinks"][1] == {
        "type": "item",
        "link": "/studio/",
        "text": "datawheel studio",
        "icon": "create",
    }
    assert result.keys() == links.keys()
    body = subprocess.run(
        [jq, "-n", "--rawfile", "links", "links.json", patch.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(body.stdout)
    assert payload.keys() == {"data"} and payload["data"].keys() == {"links"}
    assert json.loads(payload["data"]["links"]) == result
