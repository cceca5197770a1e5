"""Model builders: shapes, children, image sizes, errors, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datawheel.errors import DatawheelError
from datawheel.training.networks import MODEL_KINDS, Classifier, build_model, freeze_backbone


def test_kinds() -> None:
    assert MODEL_KINDS == ("mlp", "cnn")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_two_children_and_logits_shape(kind: str) -> None:
    model = build_model(kind, 64, 10, (1, 8, 8), hidden=32)
    assert isinstance(model, Classifier)
    assert [name for name, _ in model.named_children()] == ["backbone", "head"]
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (32, 10)
    out = model(torch.randn(5, 64))
    assert out.shape == (5, 10) and out.dtype == torch.float32


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 12, 9)])
def test_cnn_takes_flat_rows_of_small_and_large_images(shape: tuple[int, int, int]) -> None:
    n_features = shape[0] * shape[1] * shape[2]
    model = build_model("cnn", n_features, 7, shape, hidden=16)
    assert any(isinstance(m, nn.Conv2d) for m in model.backbone.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    model.train()
    assert model(torch.randn(3, n_features)).shape == (3, 7)
    model.eval()
    assert model(torch.randn(1, n_features)).shape == (1, 7)


def test_unknown_kind_names_the_allowed_kinds() -> None:
    with pytest.raises(DatawheelError) as err:
        build_model("transformer", 64, 10, None)
    assert "'transformer'" in str(err.value)
    assert "mlp" in str(err.value) and "cnn" in str(err.value)


def test_cnn_without_image_shape_says_what_to_do() -> None:
    with pytest.raises(DatawheelError) as err:
        build_model("cnn", 64, 10, None)
    message = str(err.value)
    assert "model kind 'cnn' needs image data" in message
    assert "Fix: use --param model_kind=mlp or ingest an image folder" in message
    assert "\n" not in message


def test_cnn_image_shape_must_match_features() -> None:
    with pytest.raises(DatawheelError, match="65 features"):
        build_model("cnn", 65, 10, (1, 8, 8))


@pytest.mark.parametrize(("n_features", "n_classes", "hidden"), [(0, 3, 8), (4, 1, 8), (4, 3, 0)])
def test_degenerate_sizes_are_user_errors(n_features: int, n_classes: int, hidden: int) -> None:
    with pytest.raises(DatawheelError):
        build_model("mlp", n_features, n_classes, None, hidden=hidden)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_freeze_backbone_leaves_only_the_head_trainable(kind: str) -> None:
    model = build_model(kind, 64, 10, (1, 8, 8))
    freeze_backbone(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_same_seed_same_init() -> None:
    torch.manual_seed(3)
    a = build_model("cnn", 64, 10, (1, 8, 8)).state_dict()
    torch.manual_seed(3)
    b = build_model("cnn", 64, 10, (1, 8, 8)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
