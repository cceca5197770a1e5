"""Knowledge distillation: a smaller student trained from the teacher's softened outputs.

The student is the same kind of :class:`~datawheel.training.networks.Classifier` with fewer
hidden units (an MLP: ``hidden // 4``, at least 16) or half the convolution channels (a
CNN). It is trained on the training split with Hinton et al.'s loss::

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

``T^2`` keeps the soft term's gradients on the scale of the hard one whatever ``T`` is. The
teacher's logits are computed once, on the device, before the first epoch. The loop is
:func:`~datawheel.training.loop.fit`'s: device-resident data, AdamW, bf16 autocast on CUDA,
deterministic kernels, and early stopping on the validation split's cross-entropy (the best
epoch's weights are kept). There is no checkpoint: a student is a fraction of the teacher's
training time and a rerun starts over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datawheel.errors import DatawheelError
from datawheel.training import checkpoint as ckpt
from datawheel.training.loop import _check_data, _evaluate, _to_device, pick_device
from datawheel.training.networks import _CNN_CHANNELS, Classifier, build_model

__all__ = [
    "DistillConfig",
    "DistillResult",
    "distill",
    "distillation_loss",
    "student_shape",
]

_MIN_HIDDEN = 16
_TEACHER_BATCH = 4096


@dataclass
class DistillConfig:
    """The distillation's settings; the optimizer ones default to the teacher's own."""

    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    patience: int = 5

    def validate(self) -> DistillConfig:
        """Raise :class:`DatawheelError` for a value distillation cannot use; return ``self``."""
        t, a = self.temperature, self.alpha
        checks = [
            ("distill_temperature", t, _positive(t), "a positive number", "4"),
            ("distill_alpha", a, 0 <= a <= 1, "in [0, 1]", "0.7"),
            ("epochs", self.epochs, self.epochs >= 1, "at least 1", "30"),
            ("batch_size", self.batch_size, self.batch_size >= 1, "at least 1", "64"),
            ("lr", self.lr, _positive(self.lr), "a positive number", "0.001"),
            ("weight_decay", self.weight_decay, 0 <= self.weight_decay < math.inf, "0 or more",
             "0.0001"),
            ("patience", self.patience, self.patience >= 0, "0 (off) or more", "5"),
        ]  # fmt: skip
        for name, value, ok, need, example in checks:
            if not ok:
                raise DatawheelError(
                    f"{name}={value} is invalid: it must be {need}",
                    f"use --param {name}={example}",
                )
        return self


def _positive(value: float) -> bool:
    return value > 0 and math.isfinite(value)


@dataclass
class DistillResult:
    """The best student (eval mode, on CPU), its shape and how training went."""

    model: Classifier
    hidden: int
    channels: tuple[int, int] | None
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"


def student_shape(teacher: Classifier) -> tuple[int, tuple[int, int] | None]:
    """The student's ``(hidden, channels)``: an MLP keeps a quarter of the hidden units (16
    at least), a CNN half of each convolution's channels (and the same hidden layer)."""
    if teacher.kind == "cnn":
        convs = [m for m in teacher.backbone if isinstance(m, nn.Conv2d)]
        widths = [c.out_channels for c in convs] if len(convs) == 2 else list(_CNN_CHANNELS)
        return teacher.hidden, (max(1, widths[0] // 2), max(1, widths[1] // 2))
    return max(_MIN_HIDDEN, teacher.hidden // 4), None


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float
) -> Tensor:
    """``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE(student, labels)``, the
    KL between the temperature-``T`` softmaxes, both terms averaged over the batch."""
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def _teacher_logits(teacher: nn.Module, x: Tensor) -> Tensor:
    """The teacher's float32 logits for every device-resident row, in eval mode."""
    teacher.eval()
    with torch.inference_mode():
        out = [teacher(x[s : s + _TEACHER_BATCH]).float() for s in range(0, len(x), _TEACHER_BATCH)]
    return torch.cat(out).clone()  # a normal tensor: autograd may read it


def _epoch(
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: tuple[Tensor, Tensor, Tensor],
    config: DistillConfig,
    use_bf16: bool,
) -> float:
    """One pass over the rows in a random order; the mean distillation loss."""
    x, soft, y = data
    student.train()
    n = x.shape[0]
    order = torch.randperm(n, device=x.device)
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size]
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = student(x[idx])
        loss = distillation_loss(logits, soft[idx], y[idx], config.temperature, config.alpha)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        total += loss.detach() * idx.numel()
    return float(total.item()) / n


def distill(
    teacher: Classifier,
    X_train: npt.NDArray[np.floating[Any]],
    y_train: npt.NDArray[np.integer[Any]],
    X_val: npt.NDArray[np.floating[Any]],
    y_val: npt.NDArray[np.integer[Any]],
    *,
    config: DistillConfig,
    categorical: dict[int, int] | None = None,
    log: Callable[[str], None] = print,
) -> DistillResult:
    """Train a student of :func:`student_shape` from ``teacher`` on normalized rows (the
    teacher's own inputs); early stopping on the validation split's cross-entropy."""
    config.validate()
    n_classes = teacher.n_classes
    _check_data(X_train, y_train, X_val, y_val, n_classes)
    device = pick_device()
    use_bf16 = device.type == "cuda"
    hidden, channels = student_shape(teacher)
    with ckpt.deterministic(device):
        ckpt.seed_everything(config.seed)
        student = build_model(
            teacher.kind,
            teacher.n_features,
            n_classes,
            teacher.image_shape,
            hidden,
            {int(i): int(k) for i, k in (categorical or {}).items()},
            channels=channels,
        ).to(device)
        optimizer = torch.optim.AdamW(
            student.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        xt, xv = (_to_device(a, np.dtype(np.float32), device) for a in (X_train, X_val))
        yt, yv = (_to_device(a, np.dtype(np.int64), device) for a in (y_train, y_val))
        soft = _teacher_logits(teacher.to(device), xt)
        teacher.cpu()
        log(
            f"distilling a {teacher.kind} student (hidden={hidden}"
            f"{f', channels={list(channels)}' if channels else ''}) on {device.type}: "
            f"T={config.temperature:g} alpha={config.alpha:g}, {len(X_train)} train rows"
        )
        run = ckpt.RunState()
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            loss = _epoch(student, optimizer, (xt, soft, yt), config, use_bf16)
            seconds = time.perf_counter() - start
            val_loss, val_acc = _evaluate(student, xv, yv, use_bf16)
            if not (math.isfinite(loss) and math.isfinite(val_loss)):
                raise DatawheelError(
                    f"distillation diverged at epoch {epoch} (loss is not finite)",
                    "lower distill_temperature or the learning rate",
                )
            entry = dict(epoch=float(epoch), train_loss=loss, val_loss=val_loss)
            entry.update(val_accuracy=val_acc, seconds=seconds)
            run.record(student, entry, config.patience)
            log(
                f"student epoch {epoch}/{config.epochs} distill_loss={loss:.3f} "
                f"val_loss={val_loss:.3f} val_acc={val_acc:.3f} ({seconds:.1f}s)"
            )
            if run.stopped_early:
                log(f"student: early stopping after epoch {epoch}: best epoch {run.best_epoch}")
                break
    student.load_state_dict(run.best_state)
    student.cpu().eval()
    best = run.history[run.best_epoch - 1]
    metrics = {
        "distill_loss": best["train_loss"],
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "epochs_run": float(len(run.history)),
        "best_epoch": float(run.best_epoch),
        "stopped_early": float(run.stopped_early),
    }
    return DistillResult(student, hidden, channels, metrics, list(run.history), str(device))
