"""Small classifiers for tabular rows and small images: an MLP and a CNN.

Every model is a :class:`Classifier` with exactly two children, ``backbone`` and
``head`` (the final :class:`torch.nn.Linear`), and takes a flat float32 batch
``[N, n_features]``. The CNN reshapes that batch to ``image_shape`` itself, so
training, evaluation and serving all feed the same flat rows. An MLP over rows with
categorical codes starts with a :class:`~datawheel.training.encoder.CategoricalEncoder`
(one-hot or embeddings) inside its backbone.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from datawheel.errors import DatawheelError
from datawheel.training.encoder import CategoricalEncoder

__all__ = ["MODEL_KINDS", "Classifier", "build_model", "check_model_kind", "freeze_backbone"]

MODEL_KINDS: tuple[str, ...] = ("mlp", "cnn")


def check_model_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`MODEL_KINDS`, else a one-line DatawheelError."""
    if kind not in MODEL_KINDS:
        raise DatawheelError(
            f"unknown model kind {kind!r}",
            f"use --param model_kind= one of {', '.join(MODEL_KINDS)}",
        )
    return kind


_DROPOUT = 0.2
_CNN_CHANNELS = (32, 64)
_CNN_POOLED = 2  # adaptive pooling to 2x2 keeps a little layout for 8x8..32x32 inputs


class Classifier(nn.Module):
    """``head(backbone(x))``: flat rows ``[N, n_features]`` in, logits ``[N, n_classes]`` out."""

    def __init__(
        self,
        kind: str,
        backbone: nn.Sequential,
        head: nn.Linear,
        *,
        n_features: int,
        n_classes: int,
        hidden: int,
        image_shape: tuple[int, int, int] | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.kind = kind
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden = hidden
        self.image_shape = image_shape

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.backbone(x)
        logits: Tensor = self.head(features)
        return logits


def _mlp_backbone(n_features: int, hidden: int, categorical: dict[int, int]) -> nn.Sequential:
    first: list[nn.Module] = []
    width = n_features
    if categorical:
        encoder = CategoricalEncoder(n_features, categorical)
        first, width = [encoder], encoder.width
    return nn.Sequential(
        *first,
        nn.Linear(width, hidden),
        nn.ReLU(),
        nn.Dropout(_DROPOUT),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(_DROPOUT),
    )


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


def _cnn_backbone(
    image_shape: tuple[int, int, int], hidden: int, widths: tuple[int, int] = _CNN_CHANNELS
) -> nn.Sequential:
    channels, _, _ = image_shape
    c1, c2 = widths
    return nn.Sequential(
        nn.Unflatten(1, image_shape),
        *_conv_block(channels, c1),
        nn.MaxPool2d(2),
        *_conv_block(c1, c2),
        nn.AdaptiveAvgPool2d(_CNN_POOLED),
        nn.Flatten(),
        nn.Linear(c2 * _CNN_POOLED * _CNN_POOLED, hidden),
        nn.ReLU(),
        nn.Dropout(_DROPOUT),
    )


def _check_image_shape(image_shape: tuple[int, int, int] | None, n_features: int) -> None:
    if image_shape is None:
        raise DatawheelError(
            "model kind 'cnn' needs image data but this dataset has no image shape",
            "use --param model_kind=mlp or ingest an image folder",
        )
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise DatawheelError(
            f"image shape {tuple(image_shape)} is not (channels, height, width)",
            "re-ingest the image folder",
        )
    if math.prod(image_shape) != n_features:
        raise DatawheelError(
            f"image shape {tuple(image_shape)} has {math.prod(image_shape)} values "
            f"but rows have {n_features} features",
            "re-ingest the image folder so features and image shape agree",
        )
    if min(image_shape[1:]) < 2:
        raise DatawheelError(
            f"images of {image_shape[1]}x{image_shape[2]} pixels are too small for the cnn",
            "use --param model_kind=mlp",
        )


def build_model(
    kind: str,
    n_features: int,
    n_classes: int,
    image_shape: tuple[int, int, int] | None,
    hidden: int = 128,
    categorical: dict[int, int] | None = None,
    channels: tuple[int, int] | None = None,
) -> Classifier:
    """Build a freshly initialized classifier of ``kind`` (one of :data:`MODEL_KINDS`);
    ``categorical`` maps each categorical feature's column to its number of categories.
    ``channels`` sets a CNN's two convolution widths (default :data:`_CNN_CHANNELS`, a
    distilled student takes fewer); an MLP has none and ignores it."""
    check_model_kind(kind)
    if n_features < 1:
        raise DatawheelError("the dataset has no feature columns", "ingest data with features")
    if n_classes < 2:
        raise DatawheelError(
            f"a classifier needs at least 2 classes, the dataset has {n_classes}",
            "ingest data with at least two distinct labels",
        )
    if hidden < 1:
        raise DatawheelError(f"hidden={hidden} must be at least 1", "use --param hidden=128")
    widths = _CNN_CHANNELS if channels is None else (int(channels[0]), int(channels[1]))
    if min(widths) < 1:
        raise DatawheelError(
            f"CNN channels {widths} must be at least 1 each",
            f"leave channels unset for the default {_CNN_CHANNELS}",
        )
    shape: tuple[int, int, int] | None = None
    if image_shape is not None and len(image_shape) == 3:
        shape = (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))
    if kind == "cnn" and categorical:
        raise DatawheelError(
            "model kind 'cnn' takes images, but this dataset has categorical features",
            "use --param model_kind=mlp",
        )
    if kind == "cnn":
        _check_image_shape(image_shape, n_features)
        assert shape is not None
        backbone = _cnn_backbone(shape, hidden, widths)
    else:
        backbone = _mlp_backbone(n_features, hidden, dict(categorical or {}))
    return Classifier(
        kind,
        backbone,
        nn.Linear(hidden, n_classes),
        n_features=n_features,
        n_classes=n_classes,
        hidden=hidden,
        image_shape=shape,
    )


def freeze_backbone(model: Classifier) -> None:
    """Stop gradients for every parameter except the head's (transfer learning)."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("head."))
