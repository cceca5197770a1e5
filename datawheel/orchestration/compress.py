"""Compress step: copy the trained model folder and, when it pays, add a distilled student.

The step sits between train (or the sweep's pick) and evaluate. It copies every file of the
model folder, then, when on, trains a smaller student from the teacher's softened outputs
(:mod:`datawheel.training.distill`) and writes beside the teacher's files:

- ``student.pt``: the student's state dict (normalized inputs, like ``model.pt``);
- ``student.ts`` and ``student.onnx``: TorchScript and ONNX fp32 taking RAW float32 rows
  ``[n, n_features]`` (the fitted transform inside, input ``input``, output ``logits``,
  dynamic batch axis), the same interface as ``model.ts`` and ``model.onnx``;
- ``student.json``: ``{"config", "hidden", "channels", "temperature", "alpha",
  "test_accuracy", "teacher_test_accuracy", ...}``, both accuracies measured on the same raw
  test rows (the teacher through ``model.ts`` as the evaluate step scores it, the student
  through ``student.onnx``, the file its serving variant runs).

Modes: ``on`` always distils, ``off`` only copies, ``auto`` (the default) distils when
``model.onnx`` is larger than ``size_threshold_bytes``. The default threshold,
:data:`DEFAULT_SIZE_THRESHOLD_BYTES` = 160 KiB, lies between the two digits models at their
defaults: the MLP (64 features, hidden 128: ~116 KiB) is left alone, since a model that small
answers in the runtime's per-call overhead and a student would only cost accuracy, and the
CNN (32 and 64 channels: ~231 KiB) gets a student. Pass ``compress=on`` to distil any model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from datawheel.errors import DatawheelError
from datawheel.orchestration.step import MetricsSink, log, pipeline_step

__all__ = [
    "COMPRESS_MODES",
    "DEFAULT_SIZE_THRESHOLD_BYTES",
    "STUDENT_FILES",
    "check_compress_params",
    "compress_step",
]

COMPRESS_MODES: tuple[str, ...] = ("auto", "on", "off")
DEFAULT_SIZE_THRESHOLD_BYTES = 160 * 1024
STUDENT_FILES: dict[str, str] = {
    "state_dict": "student.pt",
    "torchscript": "student.ts",
    "onnx": "student.onnx",
    "info": "student.json",
}


def check_compress_params(mode: str, temperature: float, alpha: float) -> None:
    """One-line :class:`DatawheelError` for a mode, temperature or alpha the step refuses."""
    if mode not in COMPRESS_MODES:
        raise DatawheelError(
            f"compress={mode!r} is not one of {', '.join(COMPRESS_MODES)}",
            "pass --param compress=auto (distil when the model is large), on or off",
        )
    if not (temperature > 0 and math.isfinite(temperature)):
        raise DatawheelError(
            f"distill_temperature={temperature} must be a positive number",
            "pass e.g. --param distill_temperature=4",
        )
    if not 0 <= alpha <= 1:
        raise DatawheelError(
            f"distill_alpha={alpha} must be in [0, 1] (the soft targets' weight)",
            "pass e.g. --param distill_alpha=0.7",
        )


def _copy_folder(src: Path, dst: Path) -> None:
    if not (src / "model.onnx").is_file():
        raise DatawheelError(
            f"{src} has no model.onnx: it is not a trained model folder",
            "run the train step first and pass its model",
        )
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, dirs_exist_ok=True)


@pipeline_step
def compress_step(
    splits_dir: str,
    model_dir: str,
    out_dir: str,
    metrics: MetricsSink,
    *,
    mode: str = "auto",
    size_threshold_bytes: int = DEFAULT_SIZE_THRESHOLD_BYTES,
    temperature: float = 4.0,
    alpha: float = 0.7,
    seed: int = 0,
) -> dict[str, Any]:
    """Copy ``model_dir`` to ``out_dir``; when on, add the distilled student's files.

    Returns ``{"compressed": bool, "reason": str, ...}`` with, when a student was made,
    ``student.json``'s figures and both ONNX sizes in bytes.
    """
    check_compress_params(mode, temperature, alpha)
    src, out = Path(model_dir), Path(out_dir)
    _copy_folder(src, out)
    size = (src / "model.onnx").stat().st_size
    if mode == "off" or (mode == "auto" and size <= size_threshold_bytes):
        reason = (
            "compress=off"
            if mode == "off"
            else f"model.onnx is {size} bytes, not over the {size_threshold_bytes}-byte threshold"
        )
        log(f"compress: no student ({reason}); model folder copied")
        metrics.log_metric("compressed", 0.0)
        return {"compressed": False, "reason": reason, "teacher_onnx_bytes": float(size)}
    reason = "compress=on" if mode == "on" else f"model.onnx is {size} bytes, over the threshold"
    info = _make_student(splits_dir, out, temperature=temperature, alpha=alpha, seed=seed)
    student_size = (out / STUDENT_FILES["onnx"]).stat().st_size
    log(
        f"compress: student test_accuracy={info['test_accuracy']:.4f} "
        f"({student_size} bytes student.onnx) vs teacher {info['teacher_test_accuracy']:.4f} "
        f"({size} bytes model.onnx), {size / max(student_size, 1):.1f}x smaller ({reason})"
    )
    figures = {
        "student_test_accuracy": float(info["test_accuracy"]),
        "teacher_test_accuracy": float(info["teacher_test_accuracy"]),
        "student_onnx_bytes": float(student_size),
        "teacher_onnx_bytes": float(size),
    }
    metrics.log_metric("compressed", 1.0)
    for name, value in figures.items():
        metrics.log_metric(name, value)
    return {"compressed": True, "reason": reason, **figures, "student": info}


def _load_teacher(out: Path, splits: Any) -> tuple[Any, dict[str, Any]]:
    """The trained classifier from ``model.pt`` and ``train.json``'s config."""
    import torch

    from datawheel.training.networks import build_model

    train = json.loads((out / "train.json").read_text())
    config = dict(train.get("config", {}))
    tf = splits.transform
    shape = tuple(tf.image_shape) if tf.image_shape else None
    teacher = build_model(
        str(config.get("model_kind", "mlp")),
        tf.n_features,
        len(tf.classes),
        shape,  # type: ignore[arg-type]
        int(config.get("hidden", 128)),
        tf.cardinalities(),
    )
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:
        raise DatawheelError(
            f"model.pt does not fit the model train.json describes ({str(exc).splitlines()[0]})",
            "re-run the train step on these splits",
        ) from None
    return teacher.eval(), config


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    from datawheel.evaluation.predict import predict_classes

    if not len(y):
        return 0.0
    return float(np.mean(predict_classes(path, x, n_classes=n_classes) == y))


def _make_student(
    splits_dir: str, out: Path, *, temperature: float, alpha: float, seed: int
) -> dict[str, Any]:
    """Distil, export ``student.pt``/``.ts``/``.onnx`` into ``out``, score, write the json."""
    import torch

    from datawheel.data.split import load_splits
    from datawheel.storage.files import atomic_write
    from datawheel.training.distill import DistillConfig, distill
    from datawheel.training.export import _jit_save, _Normalized, _script, _stats
    from datawheel.training.onnx_export import export_onnx

    splits = load_splits(splits_dir)
    tf = splits.transform
    teacher, train_config = _load_teacher(out, splits)
    # the teacher's own budget and optimizer settings (train.json keeps them as JSON numbers)
    budget = ("epochs", "batch_size", "lr", "weight_decay", "patience")
    config = DistillConfig(
        temperature=temperature,
        alpha=alpha,
        seed=seed,
        **{k: train_config[k] for k in budget if k in train_config},
    )
    result = distill(
        teacher,
        tf.apply(splits.x_train),
        splits.y_train,
        tf.apply(splits.x_val),
        splits.y_val,
        config=config,
        categorical=tf.cardinalities(),
        log=log,
    )
    n = tf.n_features
    mean, std = (
        _stats(k, np.asarray(v, np.float32), n) for k, v in (("mean", tf.mean), ("std", tf.std))
    )
    wrapper = _Normalized(result.model, mean, std).eval()
    state = result.model.state_dict()
    atomic_write(out / STUDENT_FILES["state_dict"], lambda fh: torch.save(state, fh))
    atomic_write(out / STUDENT_FILES["torchscript"], _jit_save(_script(wrapper)))
    rows = np.asarray(splits.x_train[:2], np.float32)
    sample = rows if len(rows) >= 2 else np.zeros((2, n), np.float32)
    export_onnx(wrapper, np.nan_to_num(sample), out, name=STUDENT_FILES["onnx"])
    n_classes, test = len(tf.classes), (splits.x_test, splits.y_test)
    info: dict[str, Any] = {
        "config": {**vars(config), "model_kind": teacher.kind},
        "hidden": result.hidden,
        "channels": list(result.channels) if result.channels else [],
        "temperature": temperature,
        "alpha": alpha,
        "test_accuracy": _accuracy(out / STUDENT_FILES["onnx"], *test, n_classes),
        "teacher_test_accuracy": _accuracy(out / "model.ts", *test, n_classes),
        "teacher_hidden": teacher.hidden,
        "metrics": result.metrics,
        "history": result.history,
        "device": result.device,
    }
    (out / STUDENT_FILES["info"]).write_text(json.dumps(info, indent=2))
    return info
