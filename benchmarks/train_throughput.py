"""Training throughput: datawheel's device-resident loop vs a plain DataLoader loop.

Both loops train the SAME model from the SAME initial weights on the SAME data
(scikit-learn digits, tiled to ``--rows``) with the same optimizer step
(:func:`datawheel.training.loop._train_step`). The only difference is how batches reach
the device:

* resident:   :func:`datawheel.training.loop._train_epoch`, the function ``fit`` runs: the
  whole dataset is copied to the device once, each epoch slices a device randperm;
* dataloader: ``DataLoader(TensorDataset(...), shuffle=True)`` on host tensors, each
  batch copied to the device with ``.to(device)``.

Prints samples/s (median over ``--repeat``) and the speedup. Timings only; no asserts.

    python benchmarks/train_throughput.py --epochs 3 --batch-size 64 --model-kind mlp
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from datawheel.training.loop import _train_epoch, _train_step, pick_device
from datawheel.training.networks import MODEL_KINDS, Classifier, build_model


def _digits(rows: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    reps = -(-rows // len(x))
    x, y = np.tile(x, (reps, 1))[:rows], np.tile(y, reps)[:rows]
    std = x.std(axis=0)
    std[std < 1e-8] = 1.0
    return ((x - x.mean(axis=0)) / std).astype(np.float32), y


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"cpu: {model}, {torch.get_num_threads()} torch threads"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resident(
    model: Classifier,
    opt: torch.optim.Optimizer,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    args: argparse.Namespace,
    device: torch.device,
) -> Callable[[], None]:
    """One timed run: the one-time copy to the device, then ``epochs`` resident epochs."""

    def run() -> None:
        xd = torch.from_numpy(x).to(device)
        yd = torch.from_numpy(y).to(device)
        for _ in range(args.epochs):
            _train_epoch(
                model, opt, xd, yd, batch_size=args.batch_size, use_bf16=device.type == "cuda"
            )

    return run


def _dataloader(
    model: Classifier,
    opt: torch.optim.Optimizer,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    args: argparse.Namespace,
    device: torch.device,
) -> Callable[[], None]:
    """One timed run: ``epochs`` DataLoader epochs with a host-to-device copy per batch."""
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    pin = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, pin_memory=pin)

    def run() -> None:
        for _ in range(args.epochs):
            model.train()
            total = torch.zeros((), device=device)
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=pin), yb.to(device, non_blocking=pin)
                total += _train_step(model, opt, xb, yb, device.type == "cuda") * len(yb)
            float(total.item())  # one sync per epoch, like the resident loop

    return run


def _measure(
    make: Callable[..., Callable[[], None]],
    init: dict[str, torch.Tensor],
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    args: argparse.Namespace,
    device: torch.device,
) -> float:
    """Samples/s of one fresh run of ``make``'s loop from the initial weights ``init``."""
    model = build_model(args.model_kind, x.shape[1], 10, (1, 8, 8), hidden=args.hidden)
    model.load_state_dict(init)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    run = make(model, opt, x, y, args, device)
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return float(args.epochs * len(x)) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-kind", choices=MODEL_KINDS, default="mlp")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)

    device = pick_device()
    x, y = _digits(args.rows)
    torch.manual_seed(0)
    init = build_model(args.model_kind, x.shape[1], 10, (1, 8, 8), hidden=args.hidden).state_dict()
    loops = {"resident (fit)": _resident, "DataLoader + .to()": _dataloader}
    for make in loops.values():  # warm-up: allocator, kernels, thread pools
        _measure(make, init, x[: args.batch_size * 8], y[: args.batch_size * 8], args, device)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.repeat):  # interleaved so drift hits both loops alike
        for name, make in loops.items():
            rates[name].append(_measure(make, init, x, y, args, device))

    console = Console()
    console.print(
        f"device: {_device_name(device)} | torch {torch.__version__} | {args.model_kind} "
        f"hidden={args.hidden} | rows={len(x)} batch={args.batch_size} "
        f"epochs={args.epochs} repeat={args.repeat}"
    )
    table = Table(title="training throughput (samples/s, median of repeats)")
    table.add_column("loop")
    table.add_column("samples/s", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("speedup", justify="right")
    base = statistics.median(rates["DataLoader + .to()"])
    for name, values in rates.items():
        median = statistics.median(values)
        table.add_row(
            name,
            f"{median:,.0f}",
            f"{min(values):,.0f}",
            f"{max(values):,.0f}",
            f"{median / base:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
