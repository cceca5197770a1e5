"""Live drift on the inference thread: what counting one batch into the window costs.

Per batch size, in one run, the median and best of ``--repeat`` timings (microseconds per
call, each timing averaging ``--number`` calls) of:

* ``mean-shift (before)``: what the server did per batch before the live window (the
  removed ``DriftMonitor.observe``: NaN to the mean, batch mean, one EWMA update);
* ``LiveDrift.observe``: the window's per-batch work (batches under 64 rows are queued and
  binned 64 rows at a time, so that row is the cost per batch, amortised);
* ``model.predict``: the digits MLP the server runs on the same batch, for scale;
* ``LiveDrift.scores``: one /metrics scrape's PSI over the window (not on the hot path).

The reference is the digits training rows (64 features, ``build_reference``). Timings
only; nothing is asserted. The end-to-end figure is ``serve_bench.py --baseline-path``.

    .venv/bin/python benchmarks/live_drift_bench.py --batches 1,8,64,256
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

from datawheel.monitoring.baseline import build_reference
from datawheel.monitoring.live import LiveDrift
from datawheel.training.networks import build_model


class _MeanShift:
    """The removed DriftMonitor.observe, inlined (the per-batch cost before)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean, self.std = mean, std
        self.shift = np.zeros(len(mean))
        self.rows = 0

    def observe(self, rows: np.ndarray) -> None:
        missing = np.isnan(rows)
        if missing.any():
            rows = np.where(missing, self.mean, rows)
        z = (rows.mean(axis=0, dtype=np.float64) - self.mean) / self.std
        self.shift += (1.0 - 0.5 ** (len(rows) / 1000.0)) * (z - self.shift)
        self.rows += len(rows)


def _time(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    runs = [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat)]
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,64,256", help="batch sizes (rows)")
    parser.add_argument("--number", type=int, default=200, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings per figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_digits()
    x = np.asarray(data.data, np.float32) / 16.0
    classes = [str(c) for c in range(10)]
    names = [f"px_{i}" for i in range(x.shape[1])]
    reference = build_reference(x[:1200], names, labels=[str(c) for c in data.target[:1200]])
    mean = x[:1200].mean(axis=0).astype(np.float64)
    std = np.where(x[:1200].std(axis=0) > 0, x[:1200].std(axis=0), 1.0).astype(np.float64)
    net = build_model("mlp", x.shape[1], len(classes), None).eval()
    table = Table(title="per batch, microseconds (median / best)")
    for column in ("rows", "mean-shift (before)", "LiveDrift.observe", "model.predict", "scores"):
        table.add_column(column, justify="right")
    rng = np.random.default_rng(0)
    for size in (int(b) for b in args.batches.split(",")):
        batch = x[rng.integers(0, len(x), size)]
        predicted = rng.integers(0, 10, size)
        window = LiveDrift(reference, names, classes)
        tensor = torch.from_numpy(batch)

        def predict(t: torch.Tensor = tensor) -> None:
            with torch.inference_mode():
                torch.softmax(net(t), dim=1).numpy()

        calls: list[tuple[Callable[[], object], int]] = [
            (partial(_MeanShift(mean, std).observe, batch), args.number),
            (partial(window.observe, batch, predicted), args.number),
            (predict, args.number),
            (window.scores, max(1, args.number // 10)),
        ]
        cells = [_time(fn, number, args.repeat) for fn, number in calls]
        table.add_row(str(size), *(f"{med:,.1f} / {best:,.1f}" for med, best in cells))
    Console().print(table)


if __name__ == "__main__":
    main()
