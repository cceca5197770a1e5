"""The training loop on real data (scikit-learn digits): learning, determinism, resume."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from digits_data import normalized_split

import datawheel.training.loop as train_mod
from datawheel.errors import DatawheelError
from datawheel.training.loop import FitResult, TrainConfig, fit, pick_device, predict_logits
from datawheel.training.networks import build_model

IMAGE = (1, 8, 8)
TIMING = {"samples_per_second", "seconds"}


_digits = normalized_split


def _fit(config: TrainConfig, log: list[str] | None = None, **kw: Any) -> FitResult:
    Xt, yt, Xv, yv = _digits()
    sink: list[str] = [] if log is None else log
    return fit(
        kw.pop("X_train", Xt),
        kw.pop("y_train", yt),
        Xv,
        kw.pop("y_val", yv),
        n_classes=kw.pop("n_classes", 10),
        image_shape=IMAGE,
        config=config,
        log=sink.append,
        **kw,
    )


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _epoch_lines(log: list[str]) -> list[str]:
    return [line for line in log if line.startswith("epoch ")]


def test_mlp_learns_digits_and_logs_one_line_per_epoch() -> None:
    log: list[str] = []
    result = _fit(TrainConfig(epochs=6), log)
    assert result.metrics["val_accuracy"] >= 0.9
    assert result.device == "cpu" == str(pick_device())
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())
    lines = _epoch_lines(log)
    assert len(lines) == len(result.history) == 6
    pattern = (
        r"epoch 3/6 train_loss=\d+\.\d{3} val_loss=\d+\.\d{3} val_acc=\d\.\d{3} "
        r"samples/s=\d+ \(\d+\.\ds\)"
    )
    assert re.fullmatch(pattern, lines[2])
    assert set(result.metrics) >= {
        "train_loss",
        "val_loss",
        "val_accuracy",
        "epochs_run",
        "best_epoch",
        "samples_per_second",
        "resumed_from_epoch",
    }
    assert result.metrics["samples_per_second"] > 0
    assert result.metrics["resumed_from_epoch"] == 0


def test_cnn_learns_digits() -> None:
    result = _fit(TrainConfig(model_kind="cnn", epochs=4, hidden=64))
    assert result.model.kind == "cnn"
    assert result.metrics["val_accuracy"] > 0.8


def test_same_seed_same_weights_and_metrics() -> None:
    config = TrainConfig(epochs=3)
    a, b = _fit(config), _fit(config)
    assert _same_weights(a.model, b.model)
    assert _untimed(a.history) == _untimed(b.history)
    c = _fit(TrainConfig(epochs=3, seed=1))
    assert not _same_weights(a.model, c.model)


def test_rerun_after_crash_resumes_at_next_epoch_and_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(epochs=4)
    straight = _fit(config, checkpoint_dir=tmp_path / "straight")

    real_epoch = train_mod._train_epoch
    calls: list[int] = []

    def crash_in_epoch_3(*args: Any, **kwargs: Any) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("preempted")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "_train_epoch", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _fit(config, checkpoint_dir=tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pt"]  # no temp leftovers

    calls.clear()
    log: list[str] = []
    resumed = _fit(config, log, checkpoint_dir=tmp_path / "run")
    assert len(calls) == 2  # epochs 3 and 4 only
    assert any("resuming" in line and "after epoch 2" in line for line in log)
    assert _epoch_lines(log)[0].startswith("epoch 3/4 ")
    assert resumed.metrics["resumed_from_epoch"] == 2
    assert resumed.metrics["epochs_trained"] == 2  # throughput over epochs 3 and 4 only
    assert resumed.metrics["samples_per_second"] > 0
    assert _same_weights(resumed.model, straight.model)
    assert _untimed(resumed.history) == _untimed(straight.history)


def test_more_epochs_continue_the_same_run(tmp_path: Path) -> None:
    # epochs is not part of the fingerprint: 2 epochs, then 4, equals 4 straight.
    straight = _fit(TrainConfig(epochs=4))
    _fit(TrainConfig(epochs=2), checkpoint_dir=tmp_path)
    log: list[str] = []
    longer = _fit(TrainConfig(epochs=4), log, checkpoint_dir=tmp_path)
    assert longer.metrics["resumed_from_epoch"] == 2
    assert _epoch_lines(log)[0].startswith("epoch 3/4 ")
    assert _same_weights(longer.model, straight.model)


def test_finished_run_is_returned_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _fit(TrainConfig(epochs=3), checkpoint_dir=tmp_path)

    def no_training(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("trained again")

    monkeypatch.setattr(train_mod, "_train_epoch", no_training)
    again = _fit(TrainConfig(epochs=3), checkpoint_dir=tmp_path)
    assert _same_weights(first.model, again.model)
    assert again.history == first.history
    assert again.metrics["val_loss"] == first.metrics["val_loss"]
    assert again.metrics["resumed_from_epoch"] == 3
    # nothing trained here: no throughput figure borrowed from the cached run
    assert again.metrics["epochs_trained"] == 0 and "samples_per_second" not in again.metrics


def test_changed_config_ignores_the_checkpoint(tmp_path: Path) -> None:
    _fit(TrainConfig(epochs=2), checkpoint_dir=tmp_path)
    log: list[str] = []
    other = _fit(TrainConfig(epochs=2, lr=2e-3), log, checkpoint_dir=tmp_path)
    assert other.metrics["resumed_from_epoch"] == 0
    assert any(line.startswith("ignoring checkpoint") for line in log)
    assert len(_epoch_lines(log)) == 2


def test_early_stopping_keeps_the_best_epoch() -> None:
    _, yt, Xv, yv = _digits()
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 10, size=len(yt))  # pure noise: val loss cannot keep improving
    config = TrainConfig(epochs=30, patience=2, lr=1e-2)
    result = _fit(config, y_train=noisy)
    assert result.metrics["stopped_early"] == 1
    assert result.metrics["epochs_run"] < 30
    assert result.metrics["epochs_run"] == result.metrics["best_epoch"] + 2
    val_losses = [h["val_loss"] for h in result.history]
    assert result.metrics["val_loss"] == min(val_losses)
    logits = torch.from_numpy(predict_logits(result.model, Xv))
    model_loss = F.cross_entropy(logits, torch.from_numpy(yv)).item()
    assert model_loss == pytest.approx(result.metrics["val_loss"], abs=1e-5)


def test_freeze_keeps_the_backbone_and_reinitializes_a_new_head() -> None:
    base = _fit(TrainConfig(model_kind="cnn", epochs=2, hidden=32))
    _, yt, _, yv = _digits()
    log: list[str] = []
    tuned = _fit(
        TrainConfig(model_kind="cnn", epochs=2, hidden=32),
        log,
        y_train=yt % 5,
        y_val=yv % 5,
        n_classes=5,
        init_state=base.model.state_dict(),
        freeze=True,
    )
    before, after = base.model.state_dict(), tuned.model.state_dict()
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)  # BatchNorm stats are kept too
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert after["head.weight"].shape == (5, 32)
    assert any("head re-initialized" in line for line in log)


def test_init_state_with_another_backbone_is_refused() -> None:
    base = _fit(TrainConfig(epochs=1, hidden=16))
    with pytest.raises(DatawheelError, match="backbone does not match"):
        _fit(TrainConfig(epochs=1, hidden=32), init_state=base.model.state_dict())


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"model_kind": "rnn"},
        {"patience": -1},
        {"weight_decay": -0.1},
    ],
)
def test_bad_config_is_a_user_error(bad: dict[str, Any]) -> None:
    config = TrainConfig(**bad)
    with pytest.raises(DatawheelError) as err:
        config.validate()
    assert "Fix: use --param" in str(err.value)
    with pytest.raises(DatawheelError):
        _fit(config)


def test_bad_labels_are_a_user_error() -> None:
    with pytest.raises(DatawheelError, match="class indices"):
        _fit(TrainConfig(epochs=1), n_classes=5)


def test_data_is_copied_once_and_no_dataloader(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("DataLoader used")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", refuse)
    real = train_mod._to_device
    copies: list[tuple[int, ...]] = []

    def counting(array: np.ndarray, *args: Any) -> torch.Tensor:
        copies.append(array.shape)
        return real(array, *args)

    monkeypatch.setattr(train_mod, "_to_device", counting)
    result = _fit(TrainConfig(epochs=3, batch_size=16))  # 3 epochs x 85 batches
    assert len(result.history) == 3
    assert len(copies) == 4  # X_train, y_train, X_val, y_val: once each


def test_pick_device_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device().type == "cpu"


def test_bf16_autocast_path_trains() -> None:
    # fit takes this path only on CUDA; CPU autocast runs the same code here.
    Xt, yt, Xv, _ = _digits()
    torch.manual_seed(0)
    model = build_model("mlp", 64, 10, None, hidden=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(Xt), torch.from_numpy(yt)
    losses = [
        train_mod._train_epoch(model, opt, x, y, batch_size=64, use_bf16=True) for _ in range(3)
    ]
    assert losses[2] < losses[0]
    assert predict_logits(model, Xv).dtype == np.float32


def test_unwritable_checkpoint_dir_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatawheelError, match="cannot write a checkpoint"):
        _fit(TrainConfig(epochs=1), checkpoint_dir=blocker / "sub")
