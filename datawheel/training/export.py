"""Export a trained classifier for serving: state dict, TorchScript, ONNX and ONNX int8.

The TorchScript and ONNX files wrap the network in a module that applies the fitted
normalization ``(x - mean) / std`` first, so a server feeds RAW feature rows
``[N, n_features]`` (float32) and needs neither training code nor the transform.

int8 is ONNX Runtime's (:mod:`datawheel.training.onnx_export`): dynamic for an MLP, static
QDQ calibrated on the training rows for a CNN. torch's ``torch.ao.quantization`` path,
deprecated in torch 2.13 and due to be removed, is not used.
"""

# No ``from __future__ import annotations`` here: TorchScript must resolve the real
# annotations of the scripted modules below.
import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from datawheel.errors import DatawheelError
from datawheel.storage.files import atomic_write
from datawheel.training.onnx_export import ONNX_FILE, ONNX_INT8_FILE, export_onnx, quantize_int8

__all__ = [
    "EXPORT_FILES",
    "Exported",
    "export_model",
    "load_exported",
]

EXPORT_FILES: dict[str, str] = {
    "state_dict": "model.pt",
    "torchscript": "model.ts",
    "onnx": ONNX_FILE,
    "onnx_int8": ONNX_INT8_FILE,
}


@dataclass(frozen=True)
class Exported:
    files: dict[str, str]  # what each file is -> its name in the folder
    int8_method: str  # how model_int8.onnx was made


class _Normalized(nn.Module):
    """``net((impute(x) - mean) / std)``: the served module, fed raw feature rows.

    Missing values (NaN) become the training mean, exactly as
    :meth:`datawheel.data.transform.Transform.apply` does before training.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.where(torch.isnan(x), self.mean.expand_as(x), x)
        out: Tensor = self.net((x - self.mean) / self.std)
        return out


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation notices for TorchScript."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _stats(name: str, values: npt.NDArray[Any], n_features: int | None) -> Tensor:
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if n_features is not None and arr.shape[0] != n_features:
        raise DatawheelError(
            f"normalization {name} has {arr.shape[0]} values but the model takes "
            f"{n_features} features",
            "export with the transform fitted for this model's training data",
        )
    if not np.isfinite(arr).all() or (name == "std" and (arr <= 0).any()):
        raise DatawheelError(
            f"normalization {name} has non-finite{' or non-positive' if name == 'std' else ''} "
            "values",
            "refit the transform (a zero std must be stored as 1)",
        )
    return torch.from_numpy(arr.copy())


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with _quiet():
        scripted: torch.jit.ScriptModule = torch.jit.script(module.eval())
    return scripted


def _jit_save(module: torch.jit.ScriptModule) -> Callable[[BinaryIO], None]:
    def write(fh: BinaryIO) -> None:
        with _quiet():
            torch.jit.save(module, fh)  # type: ignore[no-untyped-call]

    return write


def export_model(
    model: nn.Module,
    *,
    mean: npt.NDArray[np.floating[Any]],
    std: npt.NDArray[np.floating[Any]],
    out_dir: Path,
    calibration: npt.NDArray[np.floating[Any]] | None = None,
) -> Exported:
    """Write ``model.pt``, ``model.ts``, ``model.onnx`` and ``model_int8.onnx`` to ``out_dir``.

    ``model.pt`` is the network's state dict (normalized inputs; what ``fit(init_state=...)``
    takes). The ``.ts`` and ``.onnx`` files take raw features. ``calibration`` is raw
    training rows: a CNN's static int8 quantization is calibrated on them (required for a
    CNN). Returns the files (:data:`EXPORT_FILES`, plus ``onnx_data`` when the weights went
    to an external file) and how int8 was made.
    """
    net = copy.deepcopy(model).cpu().eval()
    n_features = getattr(net, "n_features", None)
    n_features = n_features if isinstance(n_features, int) else None
    wrapper = _Normalized(net, _stats("mean", mean, n_features), _stats("std", std, n_features))
    wrapper.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    atomic_write(out / EXPORT_FILES["state_dict"], lambda fh: torch.save(state, fh))
    atomic_write(out / EXPORT_FILES["torchscript"], _jit_save(_script(wrapper)))
    width = n_features or int(np.asarray(mean).size)
    rows = np.asarray(calibration, np.float32) if calibration is not None else None
    sample = rows[:2] if rows is not None and len(rows) >= 2 else np.zeros((2, width), np.float32)
    written = export_onnx(wrapper, np.nan_to_num(sample), out)
    is_cnn = getattr(net, "kind", "") == "cnn"
    method = quantize_int8(out, static=is_cnn, calibration=rows)
    files = dict(EXPORT_FILES)
    extra = [f for f in written if f != ONNX_FILE]
    if extra:
        files["onnx_data"] = extra[0]
    return Exported(files, method)


def load_exported(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load an exported ``.ts`` file onto ``device`` (the CPU by default), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DatawheelError(f"no exported model at {path}", "export the model first")
    try:
        with _quiet():
            module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location=device
            )
    except RuntimeError as exc:
        raise DatawheelError(
            f"{path} is not a TorchScript model ({str(exc).splitlines()[0]})",
            "re-export the model",
        ) from None
    module.eval()
    return module
