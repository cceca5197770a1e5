"""Run an exported model (TorchScript or ONNX) over many raw rows in bounded memory.

The rows go through the model in batches of ``batch_size``; only the predicted class index
of each row is kept, so the extra memory is one batch of inputs and logits plus one int64
per row, however many rows there are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BATCH_ROWS", "ModelOutputError", "logits_runner", "predict_classes"]

BATCH_ROWS = 8192


class ModelOutputError(ValueError):
    """The model ran but its output is not one row of ``n_classes`` logits per input row."""


def predict_classes(
    model: Any,
    x: np.ndarray,
    *,
    n_classes: int,
    columns: np.ndarray | None = None,
    batch_size: int = BATCH_ROWS,
) -> np.ndarray:
    """The argmax class index of every row of ``x`` (int64), ``batch_size`` rows at a time.

    ``model`` is a loaded module or the path of an exported ``.ts`` or ``.onnx`` file (run by
    ONNX Runtime on the CPU). ``columns`` reorders
    the features per batch (``x[:, columns]``) for a model trained on another column order.
    Raises :class:`ModelOutputError` when the logits are not ``[rows, n_classes]``.
    """
    import torch

    run = logits_runner(model)
    out = np.empty(len(x), np.int64)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            rows = x[start : start + batch_size]
            if columns is not None:
                rows = rows[:, columns]
            logits = run(np.ascontiguousarray(rows, np.float32))
            if tuple(logits.shape) != (len(rows), n_classes):
                raise ModelOutputError(
                    f"the model gave logits of shape {tuple(logits.shape)} for {len(rows)} rows, "
                    f"not ({len(rows)}, {n_classes})"
                )
            out[start : start + len(rows)] = logits.argmax(1)
    return out


def logits_runner(model: Any, *, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """``rows -> logits`` (numpy) for a module, or a ``.ts`` / ``.onnx`` file's path;
    ``threads`` > 0 caps ONNX Runtime's intra-op threads (torch's are the process's)."""
    import torch

    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        from datawheel.training.onnx_export import onnx_logits, onnx_session

        session = onnx_session(model, threads=threads)
        return lambda rows: onnx_logits(session, rows)
    if isinstance(model, (str, Path)):
        from datawheel.training.export import load_exported

        model = load_exported(model)
    module = model

    def run(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(module(torch.from_numpy(rows)).numpy())

    return run
