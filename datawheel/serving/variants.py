"""Which exported file a server runs, and the runtime that runs it.

A registered version holds several variants of one model (see the card's ``variants``):

============  ==================  ===========  ===========================
variant       file                runtime      v2 metadata ``platform``
============  ==================  ===========  ===========================
torchscript   ``model.ts``        torchscript  ``pytorch_torchscript``
onnx          ``model.onnx``      onnxruntime  ``onnxruntime_onnx``
onnx-int8     ``model_int8.onnx`` onnxruntime  ``onnxruntime_onnx``
student       ``student.onnx``    onnxruntime  ``onnxruntime_onnx``
============  ==================  ===========  ===========================

All of them take raw float32 rows ``[n, n_features]`` and answer logits. ``auto`` serves
the card's ``serving_variant`` (the evaluate step's choice), TorchScript for a version
registered before variants were measured. :func:`pick_variant` refuses a variant the
version does not have; :func:`load_runner` loads the file (already checksum-verified by
the registry) and returns the function the server calls per batch.

ONNX Runtime runs on CUDA when torch sees a GPU and the installed onnxruntime has the CUDA
execution provider (onnxruntime-gpu, in the CUDA image), else on the CPU; its intra-op
threads are torch's (``torch.get_num_threads()``), so either runtime uses the cores a
TorchScript server would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datawheel.errors import DatawheelError
from datawheel.training.variant_table import VARIANTS, Variant

__all__ = [
    "AUTO",
    "CHOICES",
    "VARIANTS",
    "Runner",
    "Variant",
    "load_runner",
    "pick_variant",
    "variant_files",
]

AUTO = "auto"


#: What ``datawheel serve --variant`` accepts.
CHOICES: tuple[str, ...] = (AUTO, *VARIANTS)
_DEFAULT = "torchscript"  # what a card without "serving_variant" serves

#: Probabilities for raw float32 rows ``[n, n_features]``: float32 ``[n, n_classes]``.
Runner = Callable[[np.ndarray], np.ndarray]


def _has(card: Mapping[str, Any]) -> list[str]:
    files = card.get("files") or {}
    return [v.name for v in VARIANTS.values() if v.file in files]


def pick_variant(card: Mapping[str, Any], requested: str = AUTO) -> Variant:
    """The variant to serve of the version whose card is ``card``: ``requested``, or for
    ``auto`` the card's ``serving_variant`` (TorchScript when it has none). A variant
    whose file is not among the card's files is refused, naming those it has."""
    where = f"{card.get('name', 'the model')}:{card.get('version', '?')}"
    if requested == AUTO:
        chosen = card.get("serving_variant")
        name = chosen.get("name") if isinstance(chosen, Mapping) else None
        name = str(name) if name else _DEFAULT
        how = f"the variant its card chose (serving_variant {name!r})"
    else:
        name, how = requested, f"the {requested!r} variant"
    variant = VARIANTS.get(name)
    if variant is None:
        raise DatawheelError(
            f"{where}: {how} is not a variant this server knows",
            f"pass --variant with one of {', '.join(CHOICES)}",
        )
    if variant.file not in (card.get("files") or {}):
        has = _has(card)
        raise DatawheelError(
            f"{where} has no {variant.name} variant ({variant.file} is not among its files; "
            f"it has {', '.join(has) or 'none'})",
            f"serve one it has (--variant {has[0] if has else 'torchscript'}, or --variant auto "
            "for the card's choice), or register the version with its "
            f"{variant.file}",
        )
    return variant


def variant_files(card: Mapping[str, Any], variant: Variant) -> list[str]:
    """The card's files that make up ``variant``: its file, plus an ONNX model's external
    weights (``model.onnx.data``) when the export wrote them beside it."""
    files = card.get("files") or {}
    return [variant.file, *sorted(f for f in files if f.startswith(variant.file + "."))]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float32)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return np.asarray(z)


def _torchscript(path: Path, device: str) -> tuple[Runner, str]:
    import torch

    from datawheel.training.export import load_exported

    module = load_exported(path, device)

    def run(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits: torch.Tensor = module(torch.from_numpy(rows).to(device))
            return np.asarray(torch.softmax(logits.float(), dim=1).cpu().numpy())

    return run, device


def _onnxruntime(path: Path, device: str) -> tuple[Runner, str]:
    import torch

    from datawheel.training.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_session

    session = onnx_session(path, device=device, threads=torch.get_num_threads())
    on = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    outputs = [OUTPUT_NAME]

    def run(rows: np.ndarray) -> np.ndarray:
        feed = {INPUT_NAME: np.ascontiguousarray(rows, np.float32)}
        return _softmax(session.run(outputs, feed)[0])

    return run, on


def load_runner(variant: Variant, folder: Path) -> tuple[Runner, str]:
    """Load ``variant``'s file from ``folder``: the per-batch function and the device it
    runs on (``cuda`` when torch sees a GPU and the runtime can use it, else ``cpu``)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(folder, variant.file)
    if variant.runtime == "torchscript":
        return _torchscript(path, device)
    return _onnxruntime(path, device)
