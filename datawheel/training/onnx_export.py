"""ONNX export and ONNX Runtime int8: the served graph as ``model.onnx`` and ``model_int8.onnx``.

:func:`export_onnx` exports the same module as the TorchScript file (the network behind the
fitted transform, so the graph takes RAW feature rows ``[batch, n_features]`` float32 and
answers logits) with the torch.export-based exporter (``torch.onnx.export(dynamo=True)``)
and a dynamic batch axis. Weights stay inside the file unless the model is too large for
one protobuf (2 GB); then they go to ``model.onnx.data`` beside it. Every file written is
returned, so the card lists each with its SHA-256.

:func:`quantize_int8` makes the int8 variant with ONNX Runtime's quantization tools:
dynamic quantization (int8 weights, activations quantized on the fly) for an MLP, static
QDQ quantization calibrated on training rows (MinMax, per-channel weights) for a CNN, whose
convolutions dynamic quantization would leave in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from datawheel.errors import DatawheelError

__all__ = [
    "INPUT_NAME",
    "ONNX_FILE",
    "ONNX_INT8_FILE",
    "OUTPUT_NAME",
    "export_onnx",
    "onnx_logits",
    "onnx_session",
    "quantize_int8",
]

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_CALIBRATION_ROWS = 512
_TWO_GB = 2 * 1024**3


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and optional-package notices stay out of step logs."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    module: nn.Module,
    sample: np.ndarray,
    out_dir: Path,
    *,
    name: str = ONNX_FILE,
    external_over: int = _TWO_GB,
) -> list[str]:
    """Write ``name`` (``model.onnx``; and ``NAME.data`` for a model over 2 GB); the file names.

    ``module`` takes raw float32 rows; ``sample`` is a few such rows (2 at least, so the
    batch axis is not specialized to 1). ``name`` is the file's name in ``out_dir`` (a
    distilled student is ``student.onnx``). Weights of ``external_over`` bytes or more go to
    an external-data file beside it (one protobuf holds at most 2 GB).
    """
    rows = np.asarray(sample, np.float32)
    if rows.ndim != 2 or len(rows) < 2:
        rows = np.zeros((2, rows.shape[-1] if rows.ndim else 1), np.float32)
    example = torch.from_numpy(np.ascontiguousarray(rows[:2]))
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    batch = torch.export.Dim("batch", min=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    with _quiet():
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        if program is None:  # pragma: no cover - dynamo=True always returns one
            raise DatawheelError("the ONNX exporter returned nothing", "report this as a bug")
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            staged = Path(tmp, name)
            program.save(str(staged), external_data=size >= external_over)
            names = []
            for f in sorted(Path(tmp).iterdir()):
                f.replace(out / f.name)  # same folder: each file lands whole
                names.append(f.name)
    assert target.is_file()
    return names


def _calibration_reader(rows: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(np.array_split(rows, max(1, len(rows) // 64)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    return Reader()


def quantize_int8(
    out_dir: Path, *, static: bool, calibration: np.ndarray | None = None, seed: int = 0
) -> str:
    """Write ``model_int8.onnx`` from ``model.onnx`` in ``out_dir``; the method used.

    ``static``: QDQ with activations calibrated on up to 512 of the ``calibration`` rows
    (raw training rows; a seeded sample); else dynamic int8 weights.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    out = Path(out_dir)
    src, dst = out / ONNX_FILE, out / ONNX_INT8_FILE
    with tempfile.TemporaryDirectory(dir=out) as tmp, _quiet():
        prepared = Path(tmp, "prepared.onnx")
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp, ONNX_INT8_FILE)
        if static:
            rows = np.asarray(calibration if calibration is not None else [], np.float32)
            if rows.ndim != 2 or not len(rows):
                raise DatawheelError(
                    "static int8 quantization needs calibration rows",
                    "pass the training rows the model was fitted on",
                )
            pick = np.random.default_rng(seed).permutation(len(rows))[:_CALIBRATION_ROWS]
            quantize_static(
                str(prepared),
                str(staged),
                _calibration_reader(rows[np.sort(pick)]),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            method = "onnxruntime quantize_static (QDQ, per-channel, MinMax calibration)"
        else:
            quantize_dynamic(str(prepared), str(staged), weight_type=QuantType.QInt8)
            method = "onnxruntime quantize_dynamic (int8 weights)"
        staged.replace(dst)
    return method


def onnx_session(path: str | Path, *, device: str = "cpu", threads: int = 0) -> Any:
    """An ONNX Runtime session for ``path``: the CUDA provider when ``device`` is cuda and
    this onnxruntime has it, else the CPU; ``threads`` > 0 caps intra-op threads."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise DatawheelError(f"no ONNX model at {path}", "export the model first")
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    available = set(ort.get_available_providers())
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatawheelError(
            f"{path} is not a loadable ONNX model ({first})", "re-export the model"
        ) from None


def onnx_logits(session: Any, rows: np.ndarray) -> np.ndarray:
    """The logits ``session`` gives float32 ``rows``."""
    feed = {INPUT_NAME: np.ascontiguousarray(rows, np.float32)}
    return np.asarray(session.run([OUTPUT_NAME], feed)[0])
