"""Export: TorchScript and ONNX on raw features match eager; ONNX int8 agrees; files, hashes."""

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

from datawheel.errors import DatawheelError
from datawheel.storage.files import sha256_file
from datawheel.training.export import export_model, load_exported
from datawheel.training.loop import TrainConfig, fit
from datawheel.training.networks import Classifier, build_model
from datawheel.training.onnx_export import onnx_logits, onnx_session


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
def test_torchscript_and_onnx_on_raw_features_match_eager(kind: str, tmp_path: Path) -> None:
    model, mean, std, raw = _trained(kind)
    exported = export_model(model, mean=mean, std=std, out_dir=tmp_path, calibration=raw)
    assert exported.files == {
        "state_dict": "model.pt",
        "torchscript": "model.ts",
        "onnx": "model.onnx",
        "onnx_int8": "model_int8.onnx",
    }
    expected = _eager_on_raw(model, mean, std, raw)
    served = load_exported(tmp_path / "model.ts")
    assert isinstance(served, torch.jit.ScriptModule) and not served.training
    with torch.no_grad():
        got = served(torch.from_numpy(raw)).numpy()
    assert got.shape == (len(raw), 10)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # ONNX fp32: the same logits within 1e-4 on every row, any batch size (dynamic axis)
    session = onnx_session(tmp_path / "model.onnx")
    assert session.get_inputs()[0].shape[0] == "batch"
    np.testing.assert_allclose(onnx_logits(session, raw), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_logits(session, raw[:1]), expected[:1], atol=1e-4, rtol=0)
    # ONNX int8: dynamic for the MLP, static QDQ for the CNN; smaller, nearly the same answers
    int8 = onnx_logits(onnx_session(tmp_path / "model_int8.onnx"), raw)
    agreement = (int8.argmax(axis=1) == expected.argmax(axis=1)).mean()
    assert agreement >= 0.95
    assert not np.array_equal(int8, got)  # it really is a different (quantized) network
    assert (tmp_path / "model_int8.onnx").stat().st_size < (tmp_path / "model.onnx").stat().st_size
    static = "quantize_static" in exported.int8_method
    assert static == (kind == "cnn"), exported.int8_method


def test_onnx_keeps_missing_values_and_categorical_codes(tmp_path: Path) -> None:
    from datawheel.training.networks import build_model

    net = build_model("mlp", 3, 3, None, hidden=8, categorical={1: 3, 2: 20}).eval()
    mean, std = np.asarray([0.5, 0.0, 0.0], np.float32), np.asarray([2.0, 1.0, 1.0], np.float32)
    rows = np.asarray([[np.nan, 1, 19], [1.0, 0, 0], [2.0, 3, 7], [0.1, 9, -1]], np.float32)
    export_model(net, mean=mean, std=std, out_dir=tmp_path, calibration=rows)
    with torch.no_grad():
        expected = load_exported(tmp_path / "model.ts")(torch.from_numpy(rows)).numpy()
    got = onnx_logits(onnx_session(tmp_path / "model.onnx"), rows)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_a_cnn_needs_calibration_rows_for_int8(tmp_path: Path) -> None:
    model, mean, std, _ = _trained("cnn")
    with pytest.raises(DatawheelError, match="calibration rows"):
        export_model(model, mean=mean, std=std, out_dir=tmp_path)


def test_state_dict_round_trips_and_hashes(tmp_path: Path) -> None:
    model, mean, std, raw = _trained("cnn")
    files = export_model(model, mean=mean, std=std, out_dir=tmp_path, calibration=raw).files
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
    export_model(model, mean=mean, std=std, out_dir=tmp_path, calibration=raw)
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


def test_external_weights_travel_beside_the_graph_and_are_checksummed(tmp_path: Path) -> None:
    """Past the size limit the weights go to NAME.data; it loads, and the card lists it."""
    from datawheel import registry
    from datawheel.storage import LocalStore
    from datawheel.training.export import _Normalized
    from datawheel.training.onnx_export import export_onnx

    model, mean, std, raw = _trained("mlp")
    wrapper = _Normalized(model, torch.from_numpy(mean), torch.from_numpy(std)).eval()
    folder = tmp_path / "m"
    names = export_onnx(wrapper, raw[:4], folder, external_over=0)
    assert names[0] == "model.onnx" and len(names) == 2 and names[1].startswith("model.onnx")
    assert (folder / names[1]).stat().st_size > (folder / "model.onnx").stat().st_size
    with torch.no_grad():
        expected = wrapper(torch.from_numpy(raw)).numpy()
    got = onnx_logits(onnx_session(folder / "model.onnx"), raw)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    (folder / "model.ts").write_bytes(b"stand-in")
    card = registry.register(LocalStore(tmp_path / "store"), "ext", folder, card={}).card
    for name in names:
        assert card["files"][name] == sha256_file(folder / name)
