"""The learning-rate sweep: the grid to train, and the pick of the best trial."""

from __future__ import annotations

import math

import numpy as np

from datawheel.errors import DatawheelError
from datawheel.orchestration.step import log

__all__ = ["lr_grid", "pick_best"]


def lr_grid(learning_rate: float, sweep: str) -> list[float]:
    """The learning rates to train: the sweep's comma-separated list, else the single one."""
    try:
        rates = [float(x) for x in sweep.split(",") if x.strip()]
    except ValueError as exc:
        raise DatawheelError(
            f"sweep_learning_rates {sweep!r} is not a comma-separated list of numbers",
            "pass e.g. --param sweep_learning_rates=0.001,0.003,0.01",
        ) from exc
    rates = rates or [learning_rate]
    if not all(math.isfinite(r) and r > 0 for r in rates):
        raise DatawheelError(
            f"learning rates {rates} must be positive finite numbers",
            "pass rates such as 0.001",
        )
    return rates


def pick_best(val_accuracies: list[float], model_uris: list[str]) -> str:
    """The model URI with the best validation accuracy: the first one on ties; a trial whose
    accuracy is NaN never wins."""
    if not val_accuracies or len(val_accuracies) != len(model_uris):
        raise DatawheelError(
            f"{len(val_accuracies)} sweep accuracies for {len(model_uris)} models: nothing to "
            "choose from",
            "check the train steps' logs",
        )
    acc = np.asarray(val_accuracies, np.float64)
    if np.isnan(acc).all():
        raise DatawheelError(
            "every sweep trial has a NaN validation accuracy",
            "check the train steps' logs; lower the learning rates",
        )
    best = int(np.argmax(np.where(np.isnan(acc), -np.inf, acc)))
    shown = ", ".join(f"{a:.4f}" for a in acc)
    log(f"sweep: val_accuracy per trial [{shown}]; best is trial {best + 1} with {acc[best]:.4f}")
    return model_uris[best]
