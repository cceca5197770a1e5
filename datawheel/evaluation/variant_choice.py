"""A model's serving variants measured on this machine, and the one picked to serve.

Every variant takes the same raw rows and answers logits (see :data:`VARIANTS`). For each
file present in a model folder, :func:`measure_variants` records its size on disk, the
latency of single calls at batch 1 and batch 64 (p50 and p99 over repeated calls, one
intra-op thread, after a warm-up) and its accuracy on the test split. :func:`choose_variant`
takes the fastest (batch-1 p50) variant whose accuracy is within ``accuracy_tolerance`` of
the full model's (TorchScript fp32) and, when ``latency_budget_ms`` is set, whose batch-1
p99 meets it; the card keeps the table and the choice, and ``datawheel serve --variant auto``
serves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datawheel.training.variant_table import FULL, VARIANTS

__all__ = [
    "FULL",
    "VARIANTS",
    "Choice",
    "VariantFigures",
    "choose_variant",
    "measure_variants",
    "variant_rows",
]

BATCHES = (1, 64)


@dataclass(frozen=True)
class VariantFigures:
    name: str
    file: str
    runtime: str
    size_bytes: int
    accuracy: float
    latency_ms: dict[str, dict[str, float]]  # "batch1"/"batch64" -> {"p50", "p99"}

    def p(self, batch: int, q: str) -> float:
        return float(self.latency_ms[f"batch{batch}"][q])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def _size(folder: Path, file: str) -> int:
    """The file and any external-data file beside it (``model.onnx.data``)."""
    return sum(p.stat().st_size for p in folder.glob(f"{file}*") if p.is_file())


def _latency(
    run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, calls: int
) -> dict[str, float]:
    for _ in range(max(3, calls // 10)):  # warm-up: allocations, lazy init, caches
        run(rows)
    times = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        run(rows)
        times[i] = time.perf_counter() - start
    return {
        "p50": float(np.percentile(times, 50) * 1e3),
        "p99": float(np.percentile(times, 99) * 1e3),
    }


def _batch(x: np.ndarray, n: int) -> np.ndarray:
    if not len(x):
        raise ValueError("no test rows to time the variants on")
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:n], np.float32)


def measure_variants(
    folder: str | Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    calls: int = 200,
    log: Callable[[str], None] = lambda _: None,
) -> list[VariantFigures]:
    """Size, latency and test accuracy of every variant in ``folder``, in :data:`VARIANTS`
    order. Latency runs with one intra-op thread (torch's setting is restored after)."""
    import torch

    from datawheel.evaluation.predict import logits_runner, predict_classes

    folder = Path(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: list[VariantFigures] = []
    try:
        for name, variant in VARIANTS.items():
            file, runtime = variant.file, variant.runtime
            path = folder / file
            if not path.is_file():
                continue
            run = logits_runner(path, threads=1)
            latency = {
                f"batch{b}": _latency(
                    run, _batch(x_test, b), calls if b == 1 else max(20, calls // 4)
                )
                for b in BATCHES
            }
            n_classes = int(run(_batch(x_test, 1)).shape[1])
            pred = predict_classes(path, x_test, n_classes=n_classes)
            accuracy = float(np.mean(pred == y_test)) if len(y_test) else 0.0
            fig = VariantFigures(name, file, runtime, _size(folder, file), accuracy, latency)
            out.append(fig)
            log(
                f"variant {name:<11} {fig.size_bytes / 1024:8.1f} KiB  accuracy {accuracy:.4f}  "
                f"batch 1 p50 {fig.p(1, 'p50'):.3f} ms p99 {fig.p(1, 'p99'):.3f} ms  "
                f"batch 64 p50 {fig.p(64, 'p50'):.3f} ms"
            )
    finally:
        torch.set_num_threads(threads)
    return out


def choose_variant(
    figures: list[VariantFigures],
    *,
    accuracy_tolerance: float = 0.005,
    latency_budget_ms: float = 0.0,
) -> Choice:
    """The variant to serve (see the module docstring); ``latency_budget_ms`` 0 is unset."""
    if not figures:
        return Choice(FULL, "no variant was measured: the full model serves")
    full = next((f for f in figures if f.name == FULL), figures[0])
    floor = full.accuracy - accuracy_tolerance
    accurate = [f for f in figures if f.accuracy >= floor - 1e-12]
    fastest = sorted(accurate, key=lambda f: (f.p(1, "p50"), f.p(64, "p50")))
    within = [f for f in fastest if not latency_budget_ms or f.p(1, "p99") <= latency_budget_ms]
    budget = f" and a batch-1 p99 within {latency_budget_ms:g} ms" if latency_budget_ms else ""
    tolerance = f"within {accuracy_tolerance:g} of {full.name}'s {full.accuracy:.4f}"
    if within:
        best = within[0]
        return Choice(
            best.name,
            f"fastest at batch 1 (p50 {best.p(1, 'p50'):.3f} ms) of the variants with accuracy "
            f"{tolerance}{budget}",
        )
    best = fastest[0] if fastest else full
    return Choice(
        best.name,
        f"no variant with accuracy {tolerance} meets the latency budget of "
        f"{latency_budget_ms:g} ms (batch-1 p99); serving the fastest accurate one "
        f"({best.p(1, 'p99'):.3f} ms)",
    )


def variant_rows(variants: list[dict[str, Any]], chosen: str) -> list[list[str]]:
    """The report table's rows: name, runtime, size, accuracy, latencies, chosen mark."""
    rows = []
    for v in variants:
        lat = v["latency_ms"]
        rows.append(
            [
                v["name"],
                v["runtime"],
                f"{v['size_bytes'] / 1024:.1f} KiB",
                f"{v['accuracy']:.4f}",
                f"{lat['batch1']['p50']:.3f} / {lat['batch1']['p99']:.3f}",
                f"{lat['batch64']['p50']:.3f} / {lat['batch64']['p99']:.3f}",
                "serves" if v["name"] == chosen else "",
            ]
        )
    return rows
