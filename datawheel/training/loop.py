"""The training loop: device-resident data, AdamW, early stopping, resumable checkpoints.

The whole dataset is copied to the device once; every epoch draws one
``torch.randperm`` on the device and slices mini-batches from it, so there is
no DataLoader and no per-batch host-to-device copy. Checkpoint handling and
seeding live in :mod:`datawheel.training.checkpoint`.

Resume rule: a checkpoint is reused when its fingerprint (every
:class:`TrainConfig` field except ``epochs``, the data shapes, ``image_shape``,
``freeze`` and a hash of ``init_state``) matches. ``epochs`` is left out on
purpose: there is no learning-rate schedule, so re-running with a larger
``epochs`` continues the same run and ends exactly where an uninterrupted run
with that ``epochs`` would. A run that stopped early, or already has at least
``epochs`` epochs, is returned as it is without training more. The metrics say what this
call did: ``resumed_from_epoch``, ``epochs_trained`` (``epochs_run`` counts the resumed
ones too), and ``samples_per_second`` over the epochs trained here only, absent when none were.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datawheel.errors import DatawheelError
from datawheel.training import checkpoint as ckpt
from datawheel.training.networks import Classifier, build_model, check_model_kind, freeze_backbone

__all__ = ["FitResult", "TrainConfig", "fit", "pick_device", "predict_logits"]

_EVAL_BATCH = 4096


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run; :meth:`validate` checks them."""

    model_kind: str = "mlp"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    patience: int = 5  # epochs without a better val loss before stopping; 0 = never stop early
    hidden: int = 128

    def validate(self) -> TrainConfig:
        """Raise :class:`DatawheelError` for a value training cannot use; return ``self``."""
        check_model_kind(self.model_kind)
        checks = [
            ("epochs", self.epochs >= 1, "at least 1", "30"),
            ("batch_size", self.batch_size >= 1, "at least 1", "64"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number", "0.001"),
            ("weight_decay", 0 <= self.weight_decay < math.inf, "0 or more", "0.0001"),
            ("patience", self.patience >= 0, "0 (off) or more", "5"),
            ("hidden", self.hidden >= 1, "at least 1", "128"),
        ]
        for name, ok, need, example in checks:
            if not ok:
                raise DatawheelError(
                    f"{name}={getattr(self, name)} is invalid: it must be {need}",
                    f"use --param {name}={example}",
                )
        return self


@dataclass
class FitResult:
    """The best model (eval mode, on CPU) and how training went."""

    model: Classifier
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"


def pick_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to_device(array: npt.NDArray[Any], dtype: np.dtype[Any], device: torch.device) -> Tensor:
    """The one host-to-device copy of a whole array."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype)).to(device)


def _train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, xb: Tensor, yb: Tensor, use_bf16: bool
) -> Tensor:
    """One optimizer step on one mini-batch; the detached loss stays on the device."""
    with torch.autocast(device_type=xb.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss = F.cross_entropy(model(xb), yb)
    optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)
    optimizer.step()
    return loss.detach()


def _train_epoch(
    model: Classifier,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    use_bf16: bool,
    frozen_backbone: bool = False,
) -> float:
    """One pass over device-resident ``x``/``y`` in a random order; the mean train loss."""
    model.train()
    if frozen_backbone:
        model.backbone.eval()  # a frozen feature extractor keeps its BatchNorm stats and no dropout
    n = x.shape[0]
    order = torch.randperm(n, device=x.device)
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        total += _train_step(model, optimizer, x[idx], y[idx], use_bf16).float() * idx.numel()
    return float(total.item()) / n  # the only device sync of the epoch


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, use_bf16: bool) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over device-resident ``x``/``y``."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float32, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with (
        torch.inference_mode(),
        torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_bf16),
    ):
        for start in range(0, x.shape[0], _EVAL_BATCH):
            logits = model(x[start : start + _EVAL_BATCH]).float()
            yb = y[start : start + _EVAL_BATCH]
            loss += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(dim=1) == yb).sum()
    n = x.shape[0]
    return float(loss.item()) / n, float(correct.item()) / n


def predict_logits(
    model: nn.Module, X: npt.NDArray[np.floating[Any]], batch_size: int = _EVAL_BATCH
) -> npt.NDArray[np.float32]:
    """Float32 logits ``[N, n_classes]`` for normalized rows ``X``, in eval mode, batched."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    chunks: list[npt.NDArray[np.float32]] = []
    with torch.inference_mode():
        for start in range(0, len(X), batch_size):
            xb = _to_device(X[start : start + batch_size], np.dtype(np.float32), device)
            chunks.append(model(xb).float().cpu().numpy())
    model.train(was_training)
    if not chunks:
        n_classes = getattr(model, "n_classes", 0)
        return np.zeros((0, n_classes if isinstance(n_classes, int) else 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _check_data(
    X_train: npt.NDArray[Any],
    y_train: npt.NDArray[Any],
    X_val: npt.NDArray[Any],
    y_val: npt.NDArray[Any],
    n_classes: int,
) -> None:
    for name, x, y in (("training", X_train, y_train), ("validation", X_val, y_val)):
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise DatawheelError(
                f"{name} data must be non-empty rows [N, F] with N labels, got "
                f"features {x.shape} and labels {y.shape}",
                "re-run the split step on a dataset with rows in both splits",
            )
        if not np.isfinite(x).all():
            raise DatawheelError(f"{name} features contain NaN or inf", "re-run the transform")
        if y.min() < 0 or y.max() >= n_classes:
            raise DatawheelError(
                f"{name} labels must be class indices in [0, {n_classes}), "
                f"found {int(y.min())}..{int(y.max())}",
                "encode labels with the dataset's class list",
            )
    if X_train.shape[1] != X_val.shape[1]:
        raise DatawheelError(
            f"training rows have {X_train.shape[1]} features but validation rows have "
            f"{X_val.shape[1]}",
            "split both from the same dataset version",
        )


def fit(
    X_train: npt.NDArray[np.floating[Any]],
    y_train: npt.NDArray[np.integer[Any]],
    X_val: npt.NDArray[np.floating[Any]],
    y_val: npt.NDArray[np.integer[Any]],
    *,
    n_classes: int,
    image_shape: tuple[int, int, int] | None,
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    init_state: dict[str, Tensor] | None = None,
    freeze: bool = False,
    log: Callable[[str], None] = print,
    categorical: dict[int, int] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> FitResult:
    """Train a classifier on normalized rows; resume from ``checkpoint_dir/last.pt`` if it fits.

    ``on_checkpoint(path)`` is called after each epoch's checkpoint is written (the train
    step mirrors it to a store with it)."""
    config.validate()
    _check_data(X_train, y_train, X_val, y_val, n_classes)
    device = pick_device()
    use_bf16 = device.type == "cuda"
    n_features = int(X_train.shape[1])
    cats = {int(i): int(k) for i, k in (categorical or {}).items()}  # column -> categories
    fingerprint = ckpt.fingerprint(
        {
            **{k: v for k, v in dataclasses.asdict(config).items() if k != "epochs"},
            **({"categorical": sorted(cats.items())} if cats else {}),
        },
        shapes=[X_train.shape, X_val.shape],
        n_classes=n_classes,
        image_shape=image_shape,
        freeze=freeze,
        init_state=init_state,
    )
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / "last.pt"
    with ckpt.deterministic(device):
        ckpt.seed_everything(config.seed)
        model = build_model(
            config.model_kind, n_features, n_classes, image_shape, config.hidden, cats
        )
        if init_state is not None:
            ckpt.load_init_state(model, init_state, log)
        if freeze:
            freeze_backbone(model)
        model.to(device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        run = ckpt.RunState()
        saved = None if path is None else ckpt.load(path, fingerprint, log)
        if saved is not None:
            run = ckpt.restore(saved, model, optimizer, device)
            log(f"resuming from checkpoint {path} after epoch {run.epoch}")
        resumed_from = run.epoch
        if run.stopped_early or run.epoch >= config.epochs:
            log(f"checkpoint already finished after {run.epoch} epochs; not training further")
        else:
            log(
                f"training {config.model_kind} on {device.type}: {len(X_train)} train rows, "
                f"{len(X_val)} val rows, {n_features} features, {n_classes} classes"
            )
            xt, xv = (_to_device(a, np.dtype(np.float32), device) for a in (X_train, X_val))
            yt, yv = (_to_device(a, np.dtype(np.int64), device) for a in (y_train, y_val))
            bs, flags = config.batch_size, {"use_bf16": use_bf16, "frozen_backbone": freeze}
            for epoch in range(run.epoch + 1, config.epochs + 1):
                start = time.perf_counter()
                loss = _train_epoch(model, optimizer, xt, yt, batch_size=bs, **flags)
                seconds = time.perf_counter() - start
                val_loss, val_acc = _evaluate(model, xv, yv, use_bf16)
                if not (math.isfinite(loss) and math.isfinite(val_loss)):
                    raise DatawheelError(
                        f"training diverged at epoch {epoch} (loss is not finite)",
                        f"lower the learning rate, e.g. --param lr={config.lr / 10:g}",
                    )
                rate = len(X_train) / max(seconds, 1e-9)
                entry = dict(epoch=float(epoch), train_loss=loss, val_loss=val_loss)
                entry.update(val_accuracy=val_acc, samples_per_second=rate, seconds=seconds)
                run.record(model, entry, config.patience)
                if path is not None:
                    ckpt.save(path, fingerprint, run, model, optimizer, device)
                    if on_checkpoint is not None:
                        on_checkpoint(path)
                log(
                    f"epoch {epoch}/{config.epochs} train_loss={loss:.3f} val_loss={val_loss:.3f} "
                    f"val_acc={val_acc:.3f} samples/s={rate:.0f} ({seconds:.1f}s)"
                )
                if run.stopped_early:
                    log(f"early stopping after epoch {epoch}: best epoch {run.best_epoch}")
                    break
    return _result(model, run, device, resumed_from)


def _result(model: Classifier, run: ckpt.RunState, device: torch.device, resumed: int) -> FitResult:
    model.load_state_dict(run.best_state)
    model.cpu().eval()
    best = run.history[run.best_epoch - 1]
    fresh = run.history[resumed:]  # the epochs this call trained; the rest came from a checkpoint
    metrics = {
        "train_loss": best["train_loss"],
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "epochs_run": float(len(run.history)),
        "epochs_trained": float(len(fresh)),
        "best_epoch": float(run.best_epoch),
        "resumed_from_epoch": float(resumed),
        "stopped_early": float(run.stopped_early),
    }
    if fresh:  # throughput only of epochs run here, never a cached run's figure
        seconds = sum(h["seconds"] for h in fresh)
        samples = sum(h["samples_per_second"] * h["seconds"] for h in fresh)
        metrics["samples_per_second"] = samples / max(seconds, 1e-9)
    return FitResult(model=model, metrics=metrics, history=list(run.history), device=str(device))
