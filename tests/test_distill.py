"""Distillation and the compress step: the loss, the student's shape, its files and accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from digits_data import raw_split
from torch import nn

from datawheel.data.split import Splits, write_splits
from datawheel.data.transform import fit_transform
from datawheel.errors import DatawheelError
from datawheel.orchestration.compress import (
    DEFAULT_SIZE_THRESHOLD_BYTES,
    check_compress_params,
    compress_step,
)
from datawheel.orchestration.preflight import check_parameters
from datawheel.orchestration.train import train_step
from datawheel.training import distill as distill_mod
from datawheel.training.distill import DistillConfig, distill, distillation_loss, student_shape
from datawheel.training.export import load_exported
from datawheel.training.loop import TrainConfig, fit
from datawheel.training.networks import build_model
from datawheel.training.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_logits, onnx_session

FEATURES = [f"px{i}" for i in range(64)]
CLASSES = [str(i) for i in range(10)]
TEACHER_FILES = {
    "drift_reference.json",
    "model.onnx",
    "model.pt",
    "model.ts",
    "model_int8.onnx",
    "train.json",
    "transform.json",
}
STUDENT_FILES = {"student.pt", "student.ts", "student.onnx", "student.json"}


class _Sink:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.logged[metric] = value


# --- the loss and the student's shape ----------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def test_distillation_loss_matches_the_formula_on_a_tiny_case() -> None:
    s = np.array([[1.0, -0.5, 2.0], [0.0, 3.0, -1.0]])
    t = np.array([[2.0, 0.0, 1.0], [-1.0, 1.0, 4.0]])
    y = np.array([2, 0])
    temperature, alpha = 4.0, 0.7
    p_t, p_s = _softmax(t / temperature), _softmax(s / temperature)
    kl = float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1)))
    ce = float(np.mean(-np.log(_softmax(s)[np.arange(2), y])))
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    got = distillation_loss(
        torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature, alpha
    ).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # the two ends: only the soft targets, only the labels
    only_soft = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), 4.0, 1.0)
    assert only_soft.item() == pytest.approx(16 * kl, rel=1e-6)
    only_hard = distillation_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), 4.0, 0.0)
    assert only_hard.item() == pytest.approx(ce, rel=1e-6)
    # a student that answers exactly like its teacher has nothing left to learn from it
    same = distillation_loss(torch.tensor(t), torch.tensor(t), torch.tensor(y), 2.0, 1.0)
    assert abs(same.item()) < 1e-7


def test_the_soft_term_has_the_gradient_scale_of_t_squared() -> None:
    """Hinton's T^2: the soft term's gradient stays of the same order as T grows."""
    torch.manual_seed(0)
    t = torch.randn(8, 5) * 3
    y = torch.zeros(8, dtype=torch.int64)
    norms = []
    for temperature in (2.0, 8.0):
        s = torch.randn(8, 5, generator=torch.Generator().manual_seed(1)).requires_grad_()
        torch.autograd.backward(distillation_loss(s, t, y, temperature, 1.0))
        assert s.grad is not None
        norms.append(float(s.grad.norm()))
    assert 0.2 < norms[1] / norms[0] < 5


def _convs(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_student_has_a_quarter_of_the_hidden_units_or_half_the_channels() -> None:
    mlp = build_model("mlp", 64, 10, None, 128)
    assert student_shape(mlp) == (32, None)
    assert student_shape(build_model("mlp", 64, 10, None, 40)) == (16, None)  # at least 16
    cnn = build_model("cnn", 64, 10, (1, 8, 8), 128)
    assert _convs(cnn) == [32, 64]
    assert student_shape(cnn) == (128, (16, 32))
    small = build_model("cnn", 64, 10, (1, 8, 8), 128, channels=(16, 32))
    assert _convs(small) == [16, 32]
    n_params = [sum(p.numel() for p in m.parameters()) for m in (cnn, small)]
    assert n_params[1] < n_params[0] / 2
    assert small(torch.zeros(3, 64)).shape == (3, 10)
    # an MLP has no channels; the categorical encoder is kept whatever channels says
    cat = build_model("mlp", 4, 3, None, 16, {0: 5}, channels=(8, 8))
    assert type(cat.backbone[0]).__name__ == "CategoricalEncoder"
    with pytest.raises(DatawheelError, match="channels"):
        build_model("cnn", 64, 10, (1, 8, 8), 128, channels=(0, 32))


def _tabular(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Normalized rows: column 0 a categorical code (0..4) that decides the label."""
    rng = np.random.default_rng(0)
    code = rng.integers(0, 5, n)
    num = rng.normal(size=(n, 3)).astype(np.float32)
    y = (code >= 3).astype(np.int64)
    return np.column_stack([code.astype(np.float32), num]).astype(np.float32), y


def test_a_categorical_mlp_student_keeps_the_encoder_and_is_deterministic() -> None:
    x, y = _tabular()
    cats = {0: 5}
    config = TrainConfig(epochs=8, hidden=64, lr=1e-2)
    teacher = fit(x[:400], y[:400], x[400:], y[400:], n_classes=2, image_shape=None,
                  config=config, log=lambda _: None, categorical=cats).model  # fmt: skip
    settings = DistillConfig(epochs=4, lr=1e-2)
    runs = [
        distill(teacher, x[:400], y[:400], x[400:], y[400:], config=settings, categorical=cats,
                log=lambda _: None)
        for _ in range(2)
    ]  # fmt: skip
    student = runs[0].model
    assert runs[0].hidden == 16 and runs[0].channels is None
    assert type(student.backbone[0]).__name__ == "CategoricalEncoder"
    assert not student.training and next(student.parameters()).device.type == "cpu"
    assert len(runs[0].history) == 4 and runs[0].metrics["val_accuracy"] > 0.9
    first, second = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same student


def test_the_bf16_autocast_path_distils() -> None:
    # distill takes this path only on CUDA; CPU autocast runs the same code here.
    x, y = _tabular()
    teacher = build_model("mlp", 4, 2, None, 64)
    student = build_model("mlp", 4, 2, None, 16)
    soft = distill_mod._teacher_logits(teacher, torch.from_numpy(x))
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    data = (torch.from_numpy(x), soft, torch.from_numpy(y))
    losses = [distill_mod._epoch(student, opt, data, DistillConfig(), True) for _ in range(4)]
    assert all(math.isfinite(v) for v in losses) and losses[3] < losses[0]


@pytest.mark.parametrize(
    ("mode", "temperature", "alpha", "message"),
    [
        ("sometimes", 4.0, 0.7, "compress='sometimes' is not one of auto, on, off"),
        ("on", 0.0, 0.7, "distill_temperature=0.0 must be a positive number"),
        ("on", math.inf, 0.7, "distill_temperature=inf must be a positive number"),
        ("on", 4.0, 1.5, "distill_alpha=1.5 must be in [0, 1]"),
        ("on", 4.0, math.nan, "distill_alpha=nan must be in [0, 1]"),
    ],
)
def test_bad_compress_parameters_say_how_to_fix(
    mode: str, temperature: float, alpha: float, message: str
) -> None:
    with pytest.raises(DatawheelError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        check_compress_params(mode, temperature, alpha)
    assert "Fix: pass" in str(e.value)
    with pytest.raises(DatawheelError, match=r"compress|distill"):  # `datawheel submit` too
        check_parameters(
            {"compress": mode, "distill_temperature": temperature, "distill_alpha": alpha}
        )


@pytest.mark.parametrize(
    "bad", [{"temperature": -1.0}, {"alpha": 2.0}, {"epochs": 0}, {"lr": math.nan}]
)
def test_a_distill_config_it_cannot_use_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(DatawheelError, match="is invalid: it must be") as e:
        DistillConfig(**bad).validate()
    assert "Fix: use --param" in str(e.value)


def test_preflight_accepts_the_defaults_and_each_mode() -> None:
    check_parameters({})
    for mode in ("auto", "on", "off"):
        check_parameters({"compress": mode, "distill_temperature": 1.0, "distill_alpha": 0.0})


# --- the compress step on real digits models ---------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A digits split, an MLP and a CNN teacher, and the compress step run on each (the MLP
    with mode=on, the CNN with the default auto and threshold)."""
    root = tmp_path_factory.mktemp("distill")
    xt, yt, xv, yv, _, _ = raw_split()
    tf = fit_transform(xt, FEATURES, CLASSES, [1, 8, 8])
    splits_dir = root / "splits"
    write_splits(Splits(xt, yt, xv[:200], yv[:200], xv[200:], yv[200:], tf), splits_dir)
    out: dict[str, Any] = {"splits": splits_dir, "x_test": xv[200:], "y_test": yv[200:]}
    for kind, mode in (("mlp", "on"), ("cnn", "auto")):
        teacher = root / kind
        train_step(
            str(splits_dir),
            str(teacher),
            _Sink(),
            model_kind=kind,
            epochs=15,
            batch_size=64,
            learning_rate=3e-3,
            seed=0,
            checkpoint_root=str(root / "ckpt"),
        )
        sink = _Sink()
        result = compress_step(
            str(splits_dir), str(teacher), str(root / f"{kind}-out"), sink, mode=mode
        )
        out[kind] = {
            "teacher": teacher,
            "out": root / f"{kind}-out",
            "result": result,
            "sink": sink,
        }
    return out


def test_the_default_threshold_leaves_the_digits_mlp_and_compresses_the_cnn(
    digits: dict[str, Any],
) -> None:
    mlp_size = (digits["mlp"]["teacher"] / "model.onnx").stat().st_size
    cnn_size = (digits["cnn"]["teacher"] / "model.onnx").stat().st_size
    assert mlp_size < DEFAULT_SIZE_THRESHOLD_BYTES < cnn_size
    cnn = digits["cnn"]["result"]
    assert cnn["compressed"] is True and "over the threshold" in cnn["reason"]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_student_is_smaller_and_close_to_its_teacher(digits: dict[str, Any], kind: str) -> None:
    run = digits[kind]
    out: Path = run["out"]
    names = {p.name for p in out.iterdir()}
    assert names == TEACHER_FILES | STUDENT_FILES
    for name in TEACHER_FILES:  # every teacher file copied as it is
        assert (out / name).read_bytes() == (run["teacher"] / name).read_bytes(), name
    assert (out / "student.onnx").stat().st_size < (out / "model.onnx").stat().st_size / 2
    info = json.loads((out / "student.json").read_text())
    assert {"config", "hidden", "channels", "temperature", "alpha"} <= set(info)
    assert (info["temperature"], info["alpha"]) == (4.0, 0.7)
    if kind == "mlp":
        assert (info["hidden"], info["channels"]) == (32, [])
    else:
        assert (info["hidden"], info["channels"]) == (128, [16, 32])
    teacher_acc, student_acc = info["teacher_test_accuracy"], info["test_accuracy"]
    assert teacher_acc > 0.9
    assert student_acc > 0.85 and student_acc >= teacher_acc - 0.08, (student_acc, teacher_acc)
    # the step's result and metrics carry the same figures
    result, logged = run["result"], run["sink"].logged
    assert result["student_test_accuracy"] == student_acc == logged["student_test_accuracy"]
    assert logged["compressed"] == 1.0
    assert logged["student_onnx_bytes"] == (out / "student.onnx").stat().st_size
    # the teacher's accuracy is the one model.ts gives the raw test rows, as evaluate scores it
    with torch.inference_mode():
        teacher = load_exported(out / "model.ts")
        pred = teacher(torch.from_numpy(digits["x_test"])).argmax(1).numpy()
    assert teacher_acc == pytest.approx(float(np.mean(pred == digits["y_test"])), abs=1e-9)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_student_ts_and_onnx_agree_on_raw_rows(digits: dict[str, Any], kind: str) -> None:
    out: Path = digits[kind]["out"]
    rows = np.array(digits["x_test"], np.float32)
    rows[0, :5] = np.nan  # a missing value becomes the training mean inside both graphs
    with torch.inference_mode():
        ts = load_exported(out / "student.ts")(torch.from_numpy(rows)).numpy()
    session = onnx_session(out / "student.onnx")
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    assert session.get_inputs()[0].shape[0] == "batch"
    onnx = onnx_logits(session, rows)
    assert np.isfinite(ts).all() and ts.shape == (len(rows), 10)
    np.testing.assert_allclose(onnx, ts, atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_logits(session, rows[:1]), onnx[:1], atol=1e-5, rtol=0)
    # student.json's accuracy is student.onnx's on the same raw test rows
    info = json.loads((out / "student.json").read_text())
    clean = onnx_logits(session, np.asarray(digits["x_test"], np.float32)).argmax(1)
    assert info["test_accuracy"] == pytest.approx(float(np.mean(clean == digits["y_test"])))
    # student.pt is the student network's state dict, which rebuilds at the recorded shape
    state = torch.load(out / "student.pt", weights_only=True)
    channels = tuple(info["channels"]) or None
    shape = (1, 8, 8) if kind == "cnn" else None
    student = build_model(kind, 64, 10, shape, info["hidden"], channels=channels)  # type: ignore[arg-type]
    student.load_state_dict(state)


def test_mode_off_and_auto_below_the_threshold_only_copy(
    digits: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher: Path = digits["mlp"]["teacher"]
    for mode, out in (("off", tmp_path / "off"), ("auto", tmp_path / "auto")):
        sink = _Sink()
        result = compress_step(str(digits["splits"]), str(teacher), str(out), sink, mode=mode)
        assert result["compressed"] is False and sink.logged == {"compressed": 0.0}
        assert {p.name for p in out.iterdir()} == TEACHER_FILES
        for name in TEACHER_FILES:
            assert (out / name).read_bytes() == (teacher / name).read_bytes()
    logged = capsys.readouterr().out
    assert "compress: no student (compress=off)" in logged
    assert "not over the 163840-byte threshold" in logged


def test_auto_over_a_lower_threshold_distils(digits: dict[str, Any], tmp_path: Path) -> None:
    result = compress_step(
        str(digits["splits"]),
        str(digits["mlp"]["teacher"]),
        str(tmp_path / "out"),
        _Sink(),
        mode="auto",
        size_threshold_bytes=1024,
        temperature=2.0,
        alpha=0.5,
    )
    assert result["compressed"] is True and "over the threshold" in result["reason"]
    info = json.loads((tmp_path / "out/student.json").read_text())
    assert (info["temperature"], info["alpha"]) == (2.0, 0.5)
    assert result["student_onnx_bytes"] < result["teacher_onnx_bytes"]


def test_bad_mode_or_folder_is_one_line_and_exit_1(
    digits: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        compress_step(
            str(digits["splits"]), str(digits["mlp"]["teacher"]), str(tmp_path), _Sink(), mode="x"
        )
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "error: compress: compress='x' is not one of auto, on, off" in err
    assert "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        compress_step(str(digits["splits"]), str(empty), str(tmp_path / "o"), _Sink())
    assert "is not a trained model folder" in capsys.readouterr().err
