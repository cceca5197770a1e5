"""The serving variants an export can hold: each one's file and the runtime that runs it.

Every variant takes raw float32 rows ``[n, n_features]`` and answers logits. The evaluate
step measures the ones a model folder has (:mod:`datawheel.evaluation.variant_choice`) and the
server runs the one asked for (:mod:`datawheel.serving.variants`); both read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "VARIANTS", "Variant"]


@dataclass(frozen=True)
class Variant:
    name: str
    file: str
    runtime: str  # "torchscript" or "onnxruntime"

    @property
    def platform(self) -> str:
        """The v2 model metadata ``platform`` (KServe/Triton's names)."""
        return "pytorch_torchscript" if self.runtime == "torchscript" else "onnxruntime_onnx"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("torchscript", "model.ts", "torchscript"),
        Variant("onnx", "model.onnx", "onnxruntime"),
        Variant("onnx-int8", "model_int8.onnx", "onnxruntime"),
        Variant("student", "student.onnx", "onnxruntime"),
    )
}
FULL = "torchscript"  # the full model every other variant is held against
