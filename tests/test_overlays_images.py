"""Images in a registry you own: `make images REGISTRY=...` (docker/build.sh) pushes there and
writes the pushed digests to images.env, which every overlay then deploys; and the README's
`kustomize edit set image` in an overlay of your own pins a digest on top of any overlay.

docker is a recording stand-in on PATH (no engine runs in the tests); kubectl kustomize is real.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from datawheel.deploy.images import parse_images_env, split_reference
from datawheel.deploy.manifests import render

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "ab" * 32
# docker: logs its arguments; `inspect` answers the repository's digest as a registry would.
FAKE_DOCKER = f"""#!/usr/bin/env bash
echo "$*" >>"$DOCKER_LOG"
if [[ "$1" == inspect ]]; then
    image="${{!#}}"
    repo="${{image%:*}}"
    echo "other.example/x@sha256:{"0" * 64}"
    echo "$repo@{DIGEST}"
fi
"""


def _tree(tmp: Path) -> Path:
    """A checkout's docker/build.sh and manifests/, so the script rewrites a copy."""
    (tmp / "docker").mkdir()
    shutil.copy2(ROOT / "docker" / "build.sh", tmp / "docker" / "build.sh")
    shutil.copytree(ROOT / "manifests", tmp / "manifests")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return tmp


def _build(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{tree / 'bin'}:/usr/bin:/bin",
        "HOME": str(tree),
        "DOCKER_LOG": str(tree / "docker.log"),
        **env,
    }
    return subprocess.run(
        ["bash", str(tree / "docker" / "build.sh"), *args],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def _images(tree: Path) -> dict[str, str]:
    return parse_images_env((tree / "manifests" / "base" / "images.env").read_text())


def _serve_image(overlay: str, root: Path) -> str:
    docs = [d for d in yaml.safe_load_all(render(overlay, root=root)) if d]
    (serve,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "datawheel-serve"
    ]
    image: str = serve["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def test_registry_push_pins_the_digests_in_images_env(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    done = _build(tree, REGISTRY="reg.example.com:5000/team/")
    assert done.returncode == 0, done.stderr
    log = (tree / "docker.log").read_text()
    assert "push reg.example.com:5000/team/datawheel:0.1.0" in log
    assert "push reg.example.com:5000/team/datawheel-train:0.1.0-cuda" in log
    assert _images(tree) == {
        "DATAWHEEL_IMAGE": f"reg.example.com:5000/team/datawheel:0.1.0@{DIGEST}",
        "DATAWHEEL_TRAIN_IMAGE": f"reg.example.com:5000/team/datawheel-train:0.1.0-cuda@{DIGEST}",
    }
    for image in _images(tree).values():
        split_reference(image)  # datawheel's own reader takes it
    # every overlay deploys what was pushed, by digest
    root = tree / "manifests"
    assert _serve_image("kubeflow", root) == _images(tree)["DATAWHEEL_IMAGE"]
    assert _serve_image("gpu", root) == _images(tree)["DATAWHEEL_TRAIN_IMAGE"]
    # a second run (say, a new registry) starts from the names, not the old digests
    again = _build(tree, REGISTRY="other.example/me")
    assert again.returncode == 0, again.stderr
    assert _images(tree)["DATAWHEEL_IMAGE"] == f"other.example/me/datawheel:0.1.0@{DIGEST}"


def test_registry_without_push_writes_the_names_only(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    done = _build(tree, "--no-push", REGISTRY="reg.example.com/team")
    assert done.returncode == 0, done.stderr
    assert _images(tree)["DATAWHEEL_IMAGE"] == "reg.example.com/team/datawheel:0.1.0"
    assert "push" not in (tree / "docker.log").read_text().split()


def test_without_registry_images_env_is_left_alone(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    before = (tree / "manifests" / "base" / "images.env").read_text()
    assert _build(tree).returncode == 0
    assert (tree / "manifests" / "base" / "images.env").read_text() == before


def _own_overlay(tmp: Path, base: str, image: str, new_name: str) -> Path:
    """What `kustomize edit set image IMAGE=NEW@DIGEST` writes in an overlay of your own."""
    root = tmp / "manifests"
    shutil.copytree(ROOT / "manifests", root)
    mine = root / "overlays" / "mine"
    mine.mkdir()
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"../{base}"],
        "images": [{"name": image, "newName": new_name, "digest": DIGEST}],
    }
    (mine / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return root


@pytest.mark.parametrize(
    ("base", "image"),
    [
        ("kubeflow", "ghcr.io/datawheel/datawheel"),
        ("gpu", "ghcr.io/datawheel/datawheel-train"),
    ],
)
def test_kustomize_edit_set_image_pins_a_digest(tmp_path: Path, base: str, image: str) -> None:
    root = _own_overlay(tmp_path, base, image, "reg.example.com/team/" + image.split("/")[-1])
    assert _serve_image("mine", root) == f"reg.example.com/team/{image.split('/')[-1]}@{DIGEST}"
