"""Check a training run's arguments before any step runs, so bad input fails fast.

Everything here is cheap next to training, and each failure is a
:class:`DatawheelError` naming the problem and the fix. Nothing is written. The source is
loaded and held to the same absolute data checks as the validate step
(:func:`datawheel.data.validation.check_frame`), so data that cannot train (one class,
infinite values, missing labels, too few rows) is refused here, not after minutes of
retried steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datawheel.data.sources import load_source
from datawheel.data.validation import check_frame
from datawheel.data.versions import default_name
from datawheel.errors import DatawheelError
from datawheel.orchestration.compress import check_compress_params
from datawheel.orchestration.sweep import lr_grid
from datawheel.storage import LocalStore, open_store, validate_name
from datawheel.training.networks import check_model_kind

__all__ = ["check_flywheel", "check_parameters", "check_training"]


def check_parameters(args: dict[str, Any]) -> None:
    """The checks that need neither the store nor the source: model kind, sizes, learning
    rates, the compress mode and distillation settings, names. ``datawheel submit`` runs
    these before anything reaches the cluster."""
    check_model_kind(str(args.get("model_kind", "mlp")))
    for key in ("epochs", "batch_size", "image_size"):
        if key in args and int(args[key]) < 1:
            raise DatawheelError(
                f"{key}={args[key]} must be at least 1", f"pass --param {key}=N, N >= 1"
            )
    lr_grid(float(args.get("learning_rate", 1e-3)), str(args.get("sweep_learning_rates", "")))
    check_compress_params(
        str(args.get("compress", "auto")),
        float(args.get("distill_temperature", 4.0)),
        float(args.get("distill_alpha", 0.7)),
    )
    tolerance = float(args.get("accuracy_tolerance", 0.005))
    if not 0 <= tolerance < 1:
        raise DatawheelError(
            f"accuracy_tolerance={tolerance:g} is not an accuracy difference in [0, 1)",
            "pass e.g. --param accuracy_tolerance=0.005",
        )
    budget = float(args.get("latency_budget_ms", 0.0))
    if budget < 0:
        raise DatawheelError(
            f"latency_budget_ms={budget:g} is negative",
            "pass a batch-1 p99 budget in milliseconds, e.g. --param latency_budget_ms=5, or 0 "
            "for none",
        )
    for key in ("dataset_name", "model_name"):
        if args.get(key):
            validate_name(str(args[key]), f"--param {key}")


def check_training(args: dict[str, Any]) -> dict[str, Any]:
    """Validate and complete training arguments; returns them with the store URI resolved."""
    out = dict(args)
    check_parameters(out)
    kind = str(out.get("model_kind", "mlp"))
    store = open_store(out.get("store") or None)  # unreachable S3 / bad credentials fail here
    out["store"] = store.uri if isinstance(store, LocalStore) else out.get("store")
    source = str(out.get("source", "digits"))
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 -> float32 inf: refused below
        loaded = load_source(
            source,
            label=str(out.get("label", "label")),
            image_size=int(out.get("image_size", 16)),
        )
    if len(loaded.frame) == 0:
        raise DatawheelError(f"source {source!r} has no rows", "ingest a file with data rows")
    if kind == "cnn" and loaded.image_shape is None:
        raise DatawheelError(
            f"model kind 'cnn' needs image data, but {source!r} is tabular",
            "use --param model_kind=mlp, or ingest an image folder or 'digits'",
        )
    if not out.get("dataset_name"):
        out["dataset_name"] = validate_name(default_name(loaded.source), "dataset name")
    report = check_frame(
        loaded.frame, loaded.label, subject=f"source {source!r} (dataset {out['dataset_name']})"
    )
    report.raise_if_hard()
    return out


def check_flywheel(args: dict[str, Any]) -> dict[str, Any]:
    """Validate flywheel arguments: the parameters, the store, a registered model to harvest
    for (its card names the dataset), and the window's times."""
    from datawheel import registry
    from datawheel.flywheel.harvest import parse_time

    out = dict(args)
    check_parameters(out)
    name = str(out.get("model_name") or "")
    if not name:
        raise DatawheelError("the flywheel needs a model", "pass --param model_name=NAME")
    store = open_store(out.get("store") or None)
    out["store"] = store.uri if isinstance(store, LocalStore) else out.get("store")
    if not registry.list_versions(store, name):
        raise DatawheelError(
            f"model {name!r} has no versions in {store.uri}: the flywheel retrains a served model",
            "train and register one first: datawheel run training --local",
        )
    for key in ("since", "until"):
        if str(out.get(key) or "").strip():
            parse_time(str(out[key]))
    return out
