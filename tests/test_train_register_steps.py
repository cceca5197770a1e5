"""The train and register pipeline steps as plain functions: files, metrics, transfer, retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from digits_data import raw_split

from datawheel import registry
from datawheel.data.split import Splits, write_splits
from datawheel.data.transform import fit_transform
from datawheel.orchestration.register import register_step
from datawheel.orchestration.train import train_step
from datawheel.storage import LocalStore
from datawheel.training.export import load_exported

FEATURES = [f"px{i}" for i in range(64)]
CLASSES = [str(i) for i in range(10)]


class _Sink:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.logged[metric] = value


@pytest.fixture(scope="module")
def splits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    xt, yt, xv, yv, _, _ = raw_split()
    out = tmp_path_factory.mktemp("splits")
    tf = fit_transform(xt, FEATURES, CLASSES, [1, 8, 8])
    write_splits(Splits(xt, yt, xv[:200], yv[:200], xv[200:], yv[200:], tf), out)
    return out


def _train(splits_dir: Path, out: Path, **kw: Any) -> tuple[dict[str, float], _Sink]:
    sink = _Sink()
    args: dict[str, Any] = {
        "model_kind": "mlp",
        "epochs": 4,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "seed": 0,
        "checkpoint_root": str(out.parent / "ckpt"),
    }
    args.update(kw)
    return train_step(str(splits_dir), str(out), sink, **args), sink


def _evaluation(decision: str, champion: str | None) -> str:
    return json.dumps(
        {
            "metrics": {"accuracy": 0.9},
            "extra": {},
            "decision": decision,
            "reason": "test",
            "champion_version": champion,
        }
    )


def test_train_step_exports_a_model_that_takes_raw_rows(splits_dir: Path, tmp_path: Path) -> None:
    result, sink = _train(splits_dir, tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == [
        "drift_reference.json",
        "model.onnx",
        "model.pt",
        "model.ts",
        "model_int8.onnx",
        "train.json",
        "transform.json",
    ]
    assert result["val_accuracy"] >= 0.85
    assert sink.logged["val_accuracy"] == result["val_accuracy"]
    info = json.loads((tmp_path / "model/train.json").read_text())
    assert info["config"]["epochs"] == 4 and len(info["history"]) == 4
    # the exported graph standardizes by itself: raw validation rows reproduce val_accuracy
    _, _, xv, yv, _, _ = raw_split()
    with torch.inference_mode():
        pred = load_exported(tmp_path / "model/model.ts")(torch.from_numpy(xv[:200])).argmax(1)
    assert float(np.mean(pred.numpy() == yv[:200])) == pytest.approx(
        result["val_accuracy"], abs=1e-6
    )


def test_a_retried_train_step_resumes_from_its_checkpoint(
    splits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _train(splits_dir, tmp_path / "a")
    capsys.readouterr()
    again, _ = _train(splits_dir, tmp_path / "b")
    assert "checkpoint already finished after 4 epochs" in capsys.readouterr().out
    assert (first["resumed_from_epoch"], again["resumed_from_epoch"]) == (0, 4)
    # the same model, and the card does not claim throughput for epochs it did not run
    assert (first["epochs_trained"], again["epochs_trained"]) == (4, 0)
    assert first["samples_per_second"] > 0 and "samples_per_second" not in again
    unchanged = {"resumed_from_epoch", "epochs_trained", "samples_per_second"}
    assert {k: v for k, v in again.items() if k not in unchanged} == {
        k: v for k, v in first.items() if k not in unchanged
    }


def test_transfer_starts_from_the_registered_model_and_freezes_its_backbone(
    splits_dir: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    _train(splits_dir, tmp_path / "base")
    register_step(
        store.uri, "digits", str(tmp_path / "base"), "digits", "d1", _evaluation("promote", None),
        "champion",
    )  # fmt: skip
    _train(splits_dir, tmp_path / "tuned", store=store.uri, transfer_from="digits@champion")
    base = torch.load(tmp_path / "base/model.pt", weights_only=True)
    tuned = torch.load(tmp_path / "tuned/model.pt", weights_only=True)
    backbone = [k for k in base if not k.startswith("head.")]
    head = [k for k in base if k.startswith("head.")]
    assert backbone and head
    assert all(torch.equal(base[k], tuned[k]) for k in backbone)
    assert any(not torch.equal(base[k], tuned[k]) for k in head)
    info = json.loads((tmp_path / "tuned/train.json").read_text())
    assert info["transfer_from"] == "digits@champion"


def test_transfer_from_a_missing_model_is_a_one_line_error(
    splits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(SystemExit) as exit_info:
        _train(splits_dir, tmp_path / "m", store=store.uri, transfer_from="nope@champion")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: train: model 'nope' is not in the registry" in err
    assert "Traceback" not in err


def test_register_step_is_idempotent_and_promotes_against_the_champion_it_saw(
    splits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(tmp_path / "store")
    _train(splits_dir, tmp_path / "m1")
    _train(splits_dir, tmp_path / "m2", seed=1)
    args = ("digits", str(tmp_path / "m1"), "digits", "d1")
    first = json.loads(register_step(store.uri, *args, _evaluation("promote", None), "champion"))
    assert (first["model_version"], first["alias"]) == ("v1", "champion")
    retried = json.loads(register_step(store.uri, *args, _evaluation("promote", None), "champion"))
    assert retried["model_version"] == "v1"  # a retry after success makes no second version
    assert [m.version for m in registry.list_versions(store, "digits")] == ["v1"]
    card = registry.resolve(store, "digits", "v1").card
    assert card["metrics"]["test_accuracy"] == 0.9 and card["decision"] == "promote"

    # m2 was evaluated against "no champion", but v1 became champion meanwhile: refused
    stale = ("digits", str(tmp_path / "m2"), "digits", "d1", _evaluation("promote", None))
    with pytest.raises(SystemExit):
        register_step(store.uri, *stale, "champion")
    assert "points at v1, not nothing" in capsys.readouterr().err
    assert registry.resolve(store, "digits", "champion").version == "v1"
    # the same model evaluated against v1 is promoted; rejected ones only become challenger
    fresh = _evaluation("promote", "v1")
    promoted = json.loads(register_step(store.uri, *stale[:4], fresh, "champion"))
    assert promoted["model_version"] == "v2"
    assert registry.resolve(store, "digits", "champion").version == "v2"
    rejected = json.loads(
        register_step(store.uri, *args, _evaluation("reject", "v2"), "challenger")
    )
    assert (rejected["model_version"], rejected["alias"]) == ("v1", "challenger")
    assert registry.resolve(store, "digits", "champion").version == "v2"
