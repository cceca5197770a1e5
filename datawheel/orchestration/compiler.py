"""Compile the pipelines to KFP IR YAML and tell when the checked-in copy is stale."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["COMPILED_DIR", "compile_all", "compile_pipeline", "stale"]

COMPILED_DIR = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"


def compile_pipeline(name: str, out_dir: str | Path = COMPILED_DIR) -> Path:
    from kfp import compiler

    from datawheel.pipelines import PIPELINES

    out = Path(out_dir) / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PIPELINES[name], str(out))
    return out


def compile_all(out_dir: str | Path = COMPILED_DIR) -> list[Path]:
    from datawheel.pipelines import PIPELINES

    return [compile_pipeline(name, out_dir) for name in PIPELINES]


def stale(out_dir: str | Path = COMPILED_DIR) -> list[str]:
    """Names whose checked-in YAML differs from a fresh compile."""
    from datawheel.pipelines import PIPELINES

    with tempfile.TemporaryDirectory() as tmp:
        fresh = {name: compile_pipeline(name, tmp).read_text() for name in PIPELINES}
    out = []
    for name, text in fresh.items():
        current = Path(out_dir) / f"{name}.yaml"
        if not current.exists() or current.read_text() != text:
            out.append(name)
    return out
