"""`datawheel deploy render|apply|overlays` as a user runs them, and their errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from cli_helpers import datawheel

from datawheel.deploy.manifests import render
from datawheel.errors import DatawheelError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server is a closed port on 127.0.0.1: no cluster answers."""
    path = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{_closed_port()}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_render_prints_the_overlay(tmp_path: Path) -> None:
    proc = datawheel("deploy", "render", "--overlay", "local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert ("Deployment", "datawheel-serve") in {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert proc.stdout == render("local")


def test_overlays_are_listed(tmp_path: Path) -> None:
    proc = datawheel("deploy", "overlays", cwd=tmp_path)
    assert proc.stdout.split() == [
        "gpu",
        "gpu-monitoring",
        "kubeflow",
        "kubeflow-monitoring",
        "local",
    ]


def test_unknown_overlay_names_the_known_ones(tmp_path: Path) -> None:
    proc = datawheel("deploy", "render", "--overlay", "prod", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: there is no overlay 'prod'. Fix: pick one of: gpu, gpu-monitoring, kubeflow, "
        "kubeflow-monitoring, local."
    )


def test_apply_without_a_cluster_says_so(tmp_path: Path) -> None:
    proc = datawheel(
        "deploy",
        "apply",
        "--overlay",
        "local",
        "--kubeconfig",
        str(_kubeconfig(tmp_path)),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no Kubernetes cluster is reachable")
    assert "Fix: point kubectl at a cluster" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_kubectl_says_how_to_install_it(tmp_path: Path) -> None:
    proc = datawheel(
        "deploy", "render", "--overlay", "local", "--kubectl", "no-such-kubectl", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert (
        "'no-such-kubectl' is not installed" in proc.stderr
        and "Fix: install kubectl" in proc.stderr
    )


def test_a_broken_overlay_is_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "overlays" / "broken"
    broken.mkdir(parents=True)
    (broken / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(DatawheelError, match="kustomize could not build overlay 'broken'"):
        render("broken", root=tmp_path)


def test_settings_turn_canaries_on_and_off_in_the_store(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    shown = datawheel("deploy", "settings", "--model", "digits", "--store", store, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert (
        shown.stdout.strip()
        == "digits: canaries off: a promoted model becomes digits@champion at once"
    )
    on = datawheel(
        "deploy", "settings", "--model", "digits", "--store", store, "--canary",
        "--reason", "prod", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert on.returncode == 0, on.stderr
    doc = json.loads(on.stdout)
    assert (doc["model"], doc["canary"], doc["reason"]) == ("digits", True, "prod")
    assert json.loads((tmp_path / "store/models/digits/deploy.json").read_text())["canary"] is True
    shown = datawheel("deploy", "settings", "--model", "digits", "--store", store, cwd=tmp_path)
    assert "canaries on: a promoted model becomes digits@candidate" in shown.stdout
    off = datawheel(
        "deploy", "settings", "--model", "digits", "--store", store, "--no-canary", cwd=tmp_path
    )
    assert off.returncode == 0 and "canaries off" in off.stdout
    bad = datawheel("deploy", "settings", "--model", "Bad Name", "--store", store, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith(
        "error: model name 'Bad Name' is not valid"
    )
