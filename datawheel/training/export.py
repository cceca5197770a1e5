"""Export a trained classifier for serving: state dict, TorchScript, int8 TorchScript.

The TorchScript files wrap the network in a module that applies the fitted
normalization ``(x - mean) / std`` first, so a server feeds RAW feature rows
``[N, n_features]`` (float32) and needs neither training code nor the transform.

int8: ``torch.ao.quantization.quantize_dynamic`` still works in torch 2.13 (it
warns that it is deprecated in favour of torchao, which datawheel does not
depend on). It quantizes every ``nn.Linear`` to int8 weights with activations
quantized on the fly; convolutions stay float32. If a later torch drops it, a
weight-only int8 fallback (int8 weights + per-row scales, dequantized in
``forward``) keeps the same file and interface.
"""

# No ``from __future__ import annotations`` here: TorchScript must resolve the real
# annotations of the scripted modules below.
import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datawheel.errors import DatawheelError
from datawheel.storage.files import atomic_write

__all__ = [
    "EXPORT_FILES",
    "export_model",
    "int8_method",
    "load_exported",
]

EXPORT_FILES: dict[str, str] = {
    "state_dict": "model.pt",
    "torchscript": "model.ts",
    "torchscript_int8": "model_int8.ts",
}

_Quantizer = Callable[..., nn.Module]


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


class _Int8Linear(nn.Module):
    """Weight-only int8 ``nn.Linear`` (symmetric, one scale per output row)."""

    qweight: Tensor
    scale: Tensor
    bias: Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.qweight.float() * self.scale[:, None], self.bias)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation notices for TorchScript and torch.ao quantization."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        yield


def _dynamic_quantizer() -> _Quantizer | None:
    """torch's ``quantize_dynamic`` if this build has it and an int8 CPU engine, else None."""
    with _quiet():
        try:
            from torch.ao import quantization
        except ImportError:
            return None
    fn: _Quantizer | None = getattr(quantization, "quantize_dynamic", None)
    engines = set(torch.backends.quantized.supported_engines) - {"none"}
    return fn if engines else None


def int8_method() -> str:
    """Which int8 path :func:`export_model` takes with this torch build."""
    if _dynamic_quantizer() is not None:
        return "torch.ao.quantization.quantize_dynamic"
    return "weight-only int8 fallback"


def _swap_linear(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _Int8Linear(child))
        else:
            _swap_linear(child)


def _quantize_int8(module: nn.Module) -> nn.Module:
    quantized = copy.deepcopy(module).eval()
    quantizer = _dynamic_quantizer()
    if quantizer is None:
        _swap_linear(quantized)
        return quantized
    with _quiet():
        return quantizer(quantized, {nn.Linear}, dtype=torch.qint8)


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
) -> dict[str, str]:
    """Write ``model.pt``, ``model.ts`` and ``model_int8.ts`` to ``out_dir``; their file names.

    ``model.pt`` is the network's state dict (normalized inputs; what ``fit(init_state=...)``
    takes). Both ``.ts`` files take raw features. Keys are those of :data:`EXPORT_FILES`.
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
    int8 = _script(_quantize_int8(wrapper))
    atomic_write(out / EXPORT_FILES["torchscript_int8"], _jit_save(int8))
    return dict(EXPORT_FILES)


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
