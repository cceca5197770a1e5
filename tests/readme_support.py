"""The README as tests read it: its fenced code blocks, and the kustomizations of your own it
tells you to write, built next to a copy of manifests/ as a user would (`kubectl kustomize`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from datawheel.deploy.manifests import kubectl

__all__ = ["README", "ROOT", "build_own", "readme_block", "readme_blocks", "unwrap"]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_blocks(lang: str) -> list[str]:
    """Every fenced ``lang`` block of the README, in order."""
    return [str(b) for b in re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)]


def readme_block(lang: str, marker: str) -> str:
    """The one ``lang`` block that contains ``marker``."""
    (block,) = [b for b in readme_blocks(lang) if marker in b]
    return block


def unwrap(text: str) -> str:
    """Shell continuation lines (``\\`` at the end) joined into one line each."""
    return re.sub(r"\\\n\s*", " ", text)


def build_own(tmp: Path, folder: str, kustomization: str) -> str:
    """``kustomization`` written as ``tmp/folder`` next to a copy of manifests/, built."""
    shutil.copytree(ROOT / "manifests", tmp / "manifests", dirs_exist_ok=True)
    mine = tmp / folder
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(kustomization)
    done = subprocess.run([kubectl(), "kustomize", str(mine)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout
