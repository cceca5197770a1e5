"""Train checkpoints in the store (DATAWHEEL_CHECKPOINT_DIR=store): a retried train step in a
fresh pod, with no volume, resumes from the store; parallel trials keep separate keys."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import SeaweedFS
from test_train_register_steps import _train, splits_dir  # noqa: F401  (the module fixture)

from datawheel.orchestration.checkpoint_store import StoreCheckpoints, is_store_target
from datawheel.storage import LocalStore, open_store


def test_store_targets_are_told_from_folders() -> None:
    assert is_store_target("store") and is_store_target("s3://b/ckpt")
    assert is_store_target("file:///tmp/x")
    assert not is_store_target("/mnt/checkpoints") and not is_store_target("")


def test_pushes_are_throttled_but_the_last_one_always_lands(tmp_path: Path) -> None:
    store, t = LocalStore(tmp_path / "s"), [0.0]
    mirror = StoreCheckpoints(store, "checkpoints/abc", every_s=30, clock=lambda: t[0])
    local = tmp_path / "run" / "last.pt"
    assert not mirror.pull(local.parent)  # nothing stored yet
    local.parent.mkdir()
    for epoch in range(5):  # five epochs in ten seconds: one upload, then the final one
        local.write_bytes(f"epoch {epoch}".encode())
        mirror.push(local)
        t[0] += 2
    assert mirror.pushes == 1 and store.get_bytes("checkpoints/abc/last.pt") == b"epoch 0"
    mirror.push(local, final=True)
    assert mirror.pushes == 2 and store.get_bytes("checkpoints/abc/last.pt") == b"epoch 4"
    fresh = tmp_path / "fresh"
    assert StoreCheckpoints(store, "checkpoints/abc").pull(fresh)
    assert (fresh / "last.pt").read_bytes() == b"epoch 4"


def _s3_uri(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{seaweedfs.bucket}/t-{uuid.uuid4().hex[:12]}"


def test_a_retried_train_step_resumes_from_the_store_with_no_volume(
    splits_dir: Path,  # noqa: F811
    tmp_path: Path,
    seaweedfs: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = _s3_uri(seaweedfs, monkeypatch)
    kw: dict[str, Any] = {"checkpoint_root": "store", "store": uri}
    first, _ = _train(splits_dir, tmp_path / "pod-1", **kw)
    keys = [k for k in open_store(uri).list("checkpoints/") if k.endswith("last.pt")]
    assert len(keys) == 1
    capsys.readouterr()
    # the retry runs in another pod: another model folder, another (empty) temp folder
    again, _ = _train(splits_dir, tmp_path / "pod-2", **kw)
    out = capsys.readouterr().out
    assert f"resuming from {keys[0]} in the store" in out
    assert "checkpoint already finished after 4 epochs" in out
    assert (first["epochs_trained"], again["epochs_trained"]) == (4, 0)
    assert again["val_accuracy"] == first["val_accuracy"]
    # a parallel trial (another learning rate) checkpoints under its own key
    _train(splits_dir, tmp_path / "pod-3", learning_rate=1e-3, epochs=1, **kw)
    assert len([k for k in open_store(uri).list("checkpoints/") if k.endswith("last.pt")]) == 2
    assert not list(tmp_path.glob("ckpt*"))  # nothing was written to a local checkpoint root
