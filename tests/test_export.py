"""Export: TorchScript on raw features matches eager; int8 agrees; files and hashes."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from digits_data import raw_split

import datawheel.training.export as export_mod
from datawheel.errors import DatawheelError
from datawheel.storage.files import sha256_file
from datawheel.training.export import export_model, int8_method, load_exported
from datawheel.training.loop import TrainConfig, fit
from datawheel.training.networks import Classifier, build_model


@functools.cache
def _trained(kind: str) -> tuple[Classifier, np.ndarray, np.ndarray, np.ndarray]:
    """A model trained on normalized digits, its mean/std, and RAW validation rows."""
    Xt, yt, Xv, yv, mean, std = raw_split()
    result = fit(
        (Xt - mean) / std,
        yt,
        (Xv - mean) / std,
        yv,
        n_classes=10,
        image_shape=(1, 8, 8),
        config=TrainConfig(model_kind=kind, epochs=3, hidden=64),
        log=lambda _: None,
    )
    return result.model, mean, std, Xv


def _eager_on_raw(
    model: Classifier, mean: np.ndarray, std: np.ndarray, raw: np.ndarray
) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(model(torch.from_numpy((raw - mean) / std)).numpy())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_torchscript_on_raw_features_matches_eager(kind: str, tmp_path: Path) -> None:
    model, mean, std, raw = _trained(kind)
    files = export_model(model, mean=mean, std=std, out_dir=tmp_path)
    assert files == {
        "state_dict": "model.pt",
        "torchscript": "model.ts",
        "torchscript_int8": "model_int8.ts",
    }
    expected = _eager_on_raw(model, mean, std, raw)
    served = load_exported(tmp_path / "model.ts")
    assert isinstance(served, torch.jit.ScriptModule) and not served.training
    with torch.no_grad():
        got = served(torch.from_numpy(raw)).numpy()
    assert got.shape == (len(raw), 10)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

    with torch.no_grad():
        int8 = load_exported(tmp_path / "model_int8.ts")(torch.from_numpy(raw)).numpy()
    agreement = (int8.argmax(axis=1) == expected.argmax(axis=1)).mean()
    assert agreement >= 0.95
    assert not np.array_equal(int8, got)  # it really is a different (quantized) network


def test_int8_uses_torch_dynamic_quantization(tmp_path: Path) -> None:
    model, mean, std, _ = _trained("mlp")
    assert int8_method() == "torch.ao.quantization.quantize_dynamic"
    export_model(model, mean=mean, std=std, out_dir=tmp_path)
    code = load_exported(tmp_path / "model_int8.ts").net.head.code
    assert "quantized" in code
    assert (tmp_path / "model_int8.ts").stat().st_size < (tmp_path / "model.ts").stat().st_size


def test_int8_fallback_when_torch_has_no_quantize_dynamic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, mean, std, raw = _trained("mlp")
    monkeypatch.setattr(export_mod, "_dynamic_quantizer", lambda: None)
    assert int8_method() == "weight-only int8 fallback"
    export_model(model, mean=mean, std=std, out_dir=tmp_path)
    int8 = load_exported(tmp_path / "model_int8.ts")
    assert int8.net.head.qweight.dtype == torch.int8
    with torch.no_grad():
        got = int8(torch.from_numpy(raw)).numpy()
    expected = _eager_on_raw(model, mean, std, raw)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.95


def test_state_dict_round_trips_and_hashes(tmp_path: Path) -> None:
    model, mean, std, raw = _trained("cnn")
    files = export_model(model, mean=mean, std=std, out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files.values())
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    rebuilt = build_model("cnn", 64, 10, (1, 8, 8), hidden=64)
    rebuilt.load_state_dict(state)
    rebuilt.eval()
    # the reloaded network computes what the trained one does (on normalized rows)
    np.testing.assert_allclose(
        _eager_on_raw(rebuilt, mean, std, raw), _eager_on_raw(model, mean, std, raw), atol=1e-6
    )
    for name in files.values():
        digest = sha256_file(tmp_path / name)
        assert digest == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_served_model_needs_no_datawheel_code(tmp_path: Path) -> None:
    model, mean, std, raw = _trained("cnn")
    export_model(model, mean=mean, std=std, out_dir=tmp_path)
    np.save(tmp_path / "raw.npy", raw[:5])
    script = (
        "import sys; sys.modules['datawheel'] = None\n"  # any datawheel import would fail
        "import numpy as np, torch\n"
        f"m = torch.jit.load({str(tmp_path / 'model.ts')!r})\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'raw.npy')!r}))\n"
        "print(m(x).argmax(1).tolist())\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True
    )
    expected = _eager_on_raw(model, mean, std, raw[:5]).argmax(axis=1).tolist()
    assert out.stdout.strip() == str(expected)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        (np.zeros(64), np.zeros(64), "std has non-finite or non-positive"),
        (np.zeros(63), np.ones(63), "63 values"),
        (np.full(64, np.nan), np.ones(64), "mean has non-finite"),
    ],
)
def test_bad_normalization_is_a_user_error(
    mean: np.ndarray, std: np.ndarray, match: str, tmp_path: Path
) -> None:
    model, _, _, _ = _trained("mlp")
    with pytest.raises(DatawheelError, match=match):
        export_model(model, mean=mean, std=std, out_dir=tmp_path)


def test_load_exported_errors(tmp_path: Path) -> None:
    with pytest.raises(DatawheelError, match="no exported model"):
        load_exported(tmp_path / "missing.ts")
    (tmp_path / "junk.ts").write_bytes(b"not a model")
    with pytest.raises(DatawheelError, match="not a TorchScript model"):
        load_exported(tmp_path / "junk.ts")


def test_exported_model_imputes_missing_values_like_the_transform(tmp_path: Path) -> None:
    """The served TorchScript applies the same NaN imputation as Transform.apply."""
    from datawheel.data.transform import fit_transform

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, 5)).astype(np.float32)
    tf = fit_transform(raw, [f"f{i}" for i in range(5)], ["a", "b"])
    model = build_model("mlp", 5, 2, None, hidden=8).eval()
    export_model(
        model,
        mean=np.asarray(tf.mean, np.float32),
        std=np.asarray(tf.std, np.float32),
        out_dir=tmp_path,
    )
    holes = raw.copy()
    holes[::3, 1] = np.nan
    holes[::5, 4] = np.nan
    served = load_exported(tmp_path / "model.ts")(torch.from_numpy(holes)).detach().numpy()
    with torch.no_grad():
        expected = model(torch.from_numpy(tf.apply(holes))).numpy()
    assert not np.isnan(served).any()
    np.testing.assert_allclose(served, expected, atol=1e-5)
