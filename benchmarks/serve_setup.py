"""serve_bench set-up: everything before the first server starts.

The servers' venvs (``benchmarks/.venv-kserve`` for kserve and fastapi,
``.venv-litserve``, ``.venv-bentoml``; each created on first use), the model (trained
into the work dir, or the champion of ``--store`` copied there), the workload (request
bodies from real digits rows and the class ``model.ts`` predicts for each) and the wrk
script that sends them. Imported by ``benchmarks/serve_bench.py`` (a script: this folder
is on ``sys.path``), never run by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = [
    "BENCH",
    "REPO",
    "REQUIREMENTS",
    "VENVS",
    "Workload",
    "champion_file",
    "console",
    "copy_model",
    "ensure_kserve_venv",
    "ensure_venv",
    "make_workload",
    "store_path",
    "train_model",
    "write_lua",
]

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
TORCH = "torch==2.13.0"  # the CPU wheel on local disk; installed first in every venv
KSERVE_REQUIREMENTS = (TORCH, "kserve>=0.21,<0.22")  # in this order: CPU torch first
# The venv each non-datawheel server runs in (bare FastAPI borrows kserve's: kserve brings
# fastapi, uvicorn and orjson), and what that venv gets, in order.
VENVS: dict[str, str] = {
    "kserve": "kserve",
    "fastapi": "kserve",
    "litserve": "litserve",
    "bentoml": "bentoml",
}
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "kserve": KSERVE_REQUIREMENTS,
    "litserve": (TORCH, "litserve>=0.2.19,<0.3", "numpy"),
    "bentoml": (TORCH, "bentoml>=1.4,<1.5"),
}
_STAMP = ".serve-bench-installed"

console = Console(soft_wrap=True)  # progress lines stay whole when piped


@dataclass(frozen=True)
class Workload:
    model_name: str
    model_file: Path
    store: Path
    bodies: list[str]
    expected: list[str]  # the class name model.ts predicts for each body


def _run_checked(cmd: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def ensure_kserve_venv(venv: Path, install: bool) -> Path:
    """The kserve venv's python, creating the venv (torch CPU first, then kserve) if needed."""
    return ensure_venv(venv, KSERVE_REQUIREMENTS, install)


def ensure_venv(venv: Path, requirements: Sequence[str], install: bool) -> Path:
    """The venv's python, creating the venv and installing ``requirements`` in order if needed."""
    python = venv / "bin" / "python"
    stamp = venv / _STAMP
    if python.exists() and stamp.exists():
        return python
    if not install:
        raise SystemExit(f"{venv} is missing; run without --no-install to create it")
    console.print(f"[bold]creating {venv}[/] ({', then '.join(requirements)}) ...")
    start = time.perf_counter()
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        _run_checked([base, "-m", "venv", str(venv)], f"creating {venv.name}")
    for requirement in requirements:
        # One at a time: torch==2.13.0 resolves to the CPU wheel on local disk; the server
        # after it then finds torch satisfied instead of pulling a CUDA build.
        _run_checked(
            [str(python), "-m", "pip", "install", "-q", requirement], f"pip install {requirement}"
        )
    stamp.write_text(" ".join(requirements) + "\n")
    console.print(f"  installed in {time.perf_counter() - start:.0f} s")
    return python


def store_path(store: str) -> Path:
    if store.startswith("file://"):
        return Path(store[len("file://") :]).expanduser().resolve()
    if "://" in store:
        raise SystemExit(f"--store {store!r}: only file:// stores are supported here")
    return Path(store).expanduser().resolve()


def train_model(datawheel: Path, workdir: Path, epochs: int) -> Path:
    """Train and register digits into a fresh store under ``workdir``; the store's path."""
    store = workdir / "store"
    console.print(f"[bold]training[/] digits ({epochs} epochs) into {store} ...")
    start = time.perf_counter()
    _run_checked(
        [
            str(datawheel),
            *("run", "training", "--local", "--store", f"file://{store}"),
            *("--param", f"epochs={epochs}", "--json"),
        ],
        "datawheel run training",
        cwd=workdir,
        env={**os.environ, "DATAWHEEL_CHECKPOINT_DIR": str(workdir / "checkpoints")},
    )
    console.print(f"  trained in {time.perf_counter() - start:.0f} s")
    return store


def champion_file(store: Path, model: str, alias: str = "champion") -> Path:
    alias_file = store / "models" / model / "aliases" / f"{alias}.json"
    if not alias_file.is_file():
        raise SystemExit(f"{alias_file} not found: is {model!r} registered in {store}?")
    version = str(json.loads(alias_file.read_text())["version"])
    path = store / "models" / model / "versions" / version / "model.ts"
    if not path.is_file():
        raise SystemExit(f"{path} not found")
    return path


def copy_model(src: Path, model: str, dest: Path) -> Path:
    """A store at ``dest`` with ``src``'s model: its aliases and champion version only.

    The benchmark never serves from the caller's store: ``datawheel serve`` writes its
    prediction ledger into the store it serves from.
    """
    version_dir = champion_file(src, model).parent
    if dest.exists():
        shutil.rmtree(dest)

    def skip(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == version_dir.parent:
            return [n for n in names if n != version_dir.name]
        return []

    shutil.copytree(src / "models" / model, dest / "models" / model, ignore=skip)
    return dest


def make_workload(model: str, store: Path, rows: int) -> Workload:
    """Request bodies from real digits rows, and the class model.ts predicts for each."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    model_file = champion_file(store, model)
    classes = [
        str(c) for c in json.loads((model_file.parent / "transform.json").read_text())["classes"]
    ]
    data = np.asarray(load_digits().data, dtype=np.float32) / 16.0  # as datawheel ingests digits
    pick = np.linspace(0, len(data) - 1, num=min(rows, len(data))).astype(int)
    x = data[pick]
    module = torch.jit.load(str(model_file), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        predicted = module(torch.from_numpy(x)).argmax(dim=1).tolist()
    bodies = [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, x.shape[1]],
                        "datatype": "FP32",
                        "data": [float(v) for v in row],
                    }
                ]
            },
            separators=(",", ":"),
        )
        for row in x
    ]
    return Workload(model, model_file, store, bodies, [classes[i] for i in predicted])


def write_lua(bodies: Sequence[str], path: Path) -> Path:
    """A wrk script that POSTs the bodies round-robin (requests built once, in init)."""
    for body in bodies:
        if "]==]" in body:
            raise ValueError("body contains the Lua long-bracket terminator")
    items = ",\n".join(f"  [==[{b}]==]" for b in bodies)
    path.write_text(
        f"""-- generated by benchmarks/serve_bench.py
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{items}
}}
local requests = {{}}
local i = 0
function init(args)
  for k, b in ipairs(bodies) do requests[k] = wrk.format(nil, nil, nil, b) end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"""
    )
    return path
