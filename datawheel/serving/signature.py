"""What a served model takes on the wire and how it describes itself in its v2 metadata.

A :class:`Signature` is built once per loaded version from its transform:

* every model takes one input per feature, named by the feature, shape ``[n]`` or
  ``[n, 1]``: a number type for a numeric feature (JSON ``null`` or a binary NaN is a
  missing value, imputed with the training mean), ``BYTES`` for a categorical one (its
  category as a string; ``null`` or an unseen string is the "other" category);
* a model without categorical features also takes today's single ``[n, n_features]``
  number tensor (any name), the fast path;
* an image model also takes ``image``: ``BYTES`` ``[n]`` holding PNG or JPEG files (raw in
  the binary extension, base64 strings in JSON), decoded by :mod:`datawheel.data.image_decode`
  exactly as the training images were.

:meth:`Signature.metadata` is the ``GET /v2/models/NAME`` document: ``inputs`` is the form
a generic client should build (the single tensor, or the named inputs of a model with
categorical features) and ``parameters`` carries the feature schema or the image
preprocessing, plus every accepted input form, and which variant answers: ``platform`` is
``pytorch_torchscript`` or ``onnxruntime_onnx``; ``parameters.variant`` (torchscript, onnx,
onnx-int8 or student), ``parameters.runtime`` (torchscript or onnxruntime),
``parameters.variant_checksum`` (the SHA-256 of its file) and ``parameters.device``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datawheel.data.image_decode import Preprocessing
from datawheel.data.transform import Transform

__all__ = ["DIGITS_SOURCE", "IMAGE_INPUT", "Signature", "signature_of"]

IMAGE_INPUT = "image"
DIGITS_SOURCE = "builtin:digits"
_IMAGE_FORMATS = ("PNG", "JPEG")
_MISSING = (
    "a missing value is JSON null in a numeric input (or NaN in binary data): it is imputed "
    "with the training mean, as in training; null in a BYTES (categorical) input, or a "
    "category the model never saw, is the 'other' category"
)


@dataclass(frozen=True)
class Signature:
    """The inputs one model version accepts (see the module docstring)."""

    features: tuple[str, ...]
    codes: dict[str, dict[str, float]]  # categorical feature -> {category: its code}
    schema: list[dict[str, Any]]  # the transform's feature schema (names, types, ranges)
    image: Preprocessing | None = None
    image_source: str = ""  # what the training images were, when it is worth saying
    column: dict[str, int] = field(default_factory=dict)  # feature -> its column

    @property
    def tensor_ok(self) -> bool:
        """Whether the single ``[n, n_features]`` tensor is accepted (no categorical feature)."""
        return not self.codes

    def same_inputs(self, other: Signature) -> bool:
        """Whether a request parses into the same rows for both (features, codes, image)."""
        return (self.features, self.codes, self.image) == (other.features, other.codes, other.image)

    def named_inputs(self) -> list[dict[str, Any]]:
        return [
            {"name": f, "datatype": "BYTES" if f in self.codes else "FP32", "shape": [-1]}
            for f in self.features
        ]

    def tensor_input(self) -> dict[str, Any]:
        return {"name": "input", "datatype": "FP32", "shape": [-1, len(self.features)]}

    def image_input(self) -> dict[str, Any]:
        return {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]}

    def wanted(self) -> str:
        """The inputs a categorical model wants, for an error message."""
        shown = ", ".join(
            f"{f} ({'BYTES' if f in self.codes else 'FP32'})" for f in self.features[:20]
        )
        more = f" and {len(self.features) - 20} more" if len(self.features) > 20 else ""
        return f"one input per feature, shape [n]: {shown}{more}"

    def metadata(
        self,
        name: str,
        version: str,
        classes: list[str],
        checksum: str,
        served: Mapping[str, str] | None = None,
    ) -> Any:
        """The v2 model metadata; ``served`` says which variant answers (``variant``,
        ``runtime``, ``platform``, ``file_checksum``, ``device``; TorchScript if None)."""
        served = served or {}
        forms: dict[str, Any] = {}
        if self.tensor_ok:
            forms["tensor"] = {
                "inputs": [self.tensor_input()],
                "note": "one tensor, any name, any number type, the features in 'features' order",
            }
        forms["named"] = {
            "inputs": self.named_inputs(),
            "note": "one input per feature, named by it, shape [n] or [n, 1]: BYTES (strings) "
            "for a categorical feature, a number type for a numeric one",
        }
        parameters: dict[str, Any] = {
            "classes": classes,
            "checksum": checksum,
            "variant": served.get("variant", "torchscript"),
            "runtime": served.get("runtime", "torchscript"),
            "variant_checksum": served.get("file_checksum") or checksum,
            "device": served.get("device", "cpu"),
            "missing_values": _MISSING,
        }
        if self.image is not None:
            forms[IMAGE_INPUT] = {
                "inputs": [self.image_input()],
                "note": "PNG or JPEG files, one per row: raw bytes in the binary tensor "
                "extension, or standard base64 strings (RFC 4648, padded) in JSON",
            }
            image = self.image.describe()
            image["formats"] = list(_IMAGE_FORMATS)
            if self.image_source:
                image["training_data"] = self.image_source
            image["features"] = {  # pixels: not listed one by one
                "count": len(self.features),
                "names": f"{self.features[0]}..{self.features[-1]}",
                "layout": "the pixels channel-first, row-major, 0..1",
            }
            parameters["image"] = image
        else:
            parameters["features"] = self.schema
        parameters["input_forms"] = forms
        primary = [self.tensor_input()] if self.tensor_ok else self.named_inputs()
        return {
            "name": name,
            "versions": [version],
            "platform": served.get("platform", "pytorch_torchscript"),
            "inputs": primary,
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]},
            ],
            "parameters": parameters,
        }


_DIGITS_NOTE = (
    "scikit-learn's 8x8 digits: 17 gray levels 0..16 (white strokes on black), scaled /16 to "
    "0..1 at ingest. An image sent to this model is converted to L, resized to 8x8 and "
    "divided by 255, so draw a light digit on black; 255 stands for 16"
)


def _schema(transform: Transform, codes: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    described = getattr(transform, "feature_schema", None)
    if callable(described):
        return list(described())
    low = getattr(transform, "low", None) or [None] * transform.n_features
    high = getattr(transform, "high", None) or [None] * transform.n_features
    out: list[dict[str, Any]] = []
    for i, f in enumerate(transform.features):
        if f in codes:
            out.append({"name": f, "type": "categorical", "categories": list(codes[f])})
        else:
            out.append({"name": f, "type": "numeric", "range": [low[i], high[i]]})
    return out


def signature_of(transform: Transform, source: str | None = None) -> Signature:
    """The signature of a version with ``transform``; ``source`` is its dataset's origin
    (``builtin:digits`` is described as what it is), None when unknown."""
    categories: dict[str, list[str]] = getattr(transform, "categories", None) or {}
    codes = {
        f: {str(c): float(i + 1) for i, c in enumerate(cats)} for f, cats in categories.items()
    }
    image = Preprocessing.for_shape(transform.image_shape) if transform.image_shape else None
    return Signature(
        features=tuple(transform.features),
        codes=codes,
        schema=_schema(transform, codes),
        image=image,
        image_source=_DIGITS_NOTE if source == DIGITS_SOURCE and image is not None else "",
        column={f: i for i, f in enumerate(transform.features)},
    )
