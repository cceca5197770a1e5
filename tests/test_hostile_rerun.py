"""Re-runs and full disks: the checkpoint cache never passes a cached or foreign run off as a
new one, registering the same model again reuses its version, and a register that fills
the disk fails at once in one line and leaves the store as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from digits_data import raw_split

from datawheel import registry
from datawheel.data.split import Splits, write_splits
from datawheel.data.transform import fit_transform
from datawheel.orchestration.register import register_step
from datawheel.orchestration.train import train_step
from datawheel.storage import LocalStore

FEATURES = [f"px{i}" for i in range(64)]
CLASSES = [str(i) for i in range(10)]


class _Sink:
    def log_metric(self, metric: str, value: float) -> None:
        pass


def _splits(out: Path, features: list[str] = FEATURES) -> Path:
    xt, yt, xv, yv, _, _ = raw_split()
    tf = fit_transform(xt, features, CLASSES, [1, 8, 8])
    write_splits(Splits(xt, yt, xv[:200], yv[:200], xv[200:], yv[200:], tf), out)
    return out


@pytest.fixture(scope="module")
def splits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _splits(tmp_path_factory.mktemp("splits"))


def _train(splits: Path, out: Path, store: str, ckpt: Path, **kw: Any) -> dict[str, float]:
    args: dict[str, Any] = {
        "model_kind": "mlp",
        "epochs": 3,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "seed": 0,
        "store": store,
        "checkpoint_root": str(ckpt),
    }
    return train_step(str(splits), str(out), _Sink(), **{**args, **kw})


def _evaluation(decision: str, champion: str | None) -> str:
    doc = {"metrics": {"accuracy": 0.9}, "extra": {}, "decision": decision, "reason": "test",
           "champion_version": champion}  # fmt: skip
    return json.dumps(doc)


def _register(store: LocalStore, model: Path, decision: str, champion: str | None) -> Any:
    alias = "champion" if decision == "promote" else "challenger"
    ev = _evaluation(decision, champion)
    return json.loads(register_step(store.uri, "digits", str(model), "digits", "d1", ev, alias))


def test_the_checkpoint_is_keyed_by_store_data_and_config(splits_dir: Path, tmp_path: Path) -> None:
    ckpt, a, b = tmp_path / "ckpt", f"file://{tmp_path / 'a'}", f"file://{tmp_path / 'b'}"
    first = _train(splits_dir, tmp_path / "m1", a, ckpt)
    assert (first["resumed_from_epoch"], first["epochs_trained"]) == (0, 3)
    again = _train(splits_dir, tmp_path / "m2", a, ckpt)  # a retry in the same store resumes
    assert (again["resumed_from_epoch"], again["epochs_trained"]) == (3, 0)
    assert "samples_per_second" not in again  # no throughput claimed for epochs not run here
    # another store with the same data never resumes a's run, nor reports its throughput
    other = _train(splits_dir, tmp_path / "m3", b, ckpt)
    assert (other["resumed_from_epoch"], other["epochs_trained"]) == (0, 3)
    assert other["samples_per_second"] > 0
    # the same numbers under other column names are another dataset (the transform differs)
    renamed = _splits(tmp_path / "renamed", [f"f{i}" for i in range(64)])
    assert (renamed / "splits.npz").read_bytes() == (splits_dir / "splits.npz").read_bytes()
    assert _train(renamed, tmp_path / "m4", a, ckpt)["resumed_from_epoch"] == 0
    assert _train(splits_dir, tmp_path / "m5", a, ckpt, seed=1)["resumed_from_epoch"] == 0
    assert len(list(ckpt.iterdir())) == 4  # a, b, renamed, seed=1


def test_registering_the_same_model_again_reuses_its_version(
    splits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, ckpt = LocalStore(tmp_path / "store"), tmp_path / "ckpt"
    _train(splits_dir, tmp_path / "m1", store.uri, ckpt)
    first = _register(store, tmp_path / "m1", "promote", None)
    assert (first["model_version"], first["alias"], first["reused"]) == ("v1", "champion", False)
    # the re-run resumes the finished checkpoint: the same weights, exported again
    _train(splits_dir, tmp_path / "m2", store.uri, ckpt)
    capsys.readouterr()
    again = _register(store, tmp_path / "m2", "reject", "v1")  # identical: CI holds 0, reject
    assert (again["model_version"], again["alias"], again["reused"]) == ("v1", "champion", True)
    assert "reused it, registered nothing new" in capsys.readouterr().out
    assert [mv.version for mv in registry.list_versions(store, "digits")] == ["v1"]
    assert registry.get_alias(store, "digits", "challenger") is None  # not its own rival
    card = registry.resolve(store, "digits", "champion").card
    assert card["identity"] and card["metrics"]["epochs_trained"] == 3  # v1's own card
    # another model is a new version
    _train(splits_dir, tmp_path / "m3", store.uri, ckpt, seed=1)
    third = _register(store, tmp_path / "m3", "reject", "v1")
    assert (third["model_version"], third["alias"], third["reused"]) == ("v2", "challenger", False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` until about ``leave`` bytes are free."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_a_register_that_fills_the_disk_fails_at_once_and_leaves_nothing(
    splits_dir: Path, tmp_path: Path, tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(tiny_disk / "store")
    model = tmp_path / "model"
    _train(splits_dir, model, store.uri, tmp_path / "ckpt")
    size = sum(p.stat().st_size for p in model.iterdir())
    filler = _fill(tiny_disk, leave=size // 2)  # about half of the model fits
    capsys.readouterr()
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        _register(store, model, "promote", None)
    assert time.monotonic() - start < 10
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    (line,) = err.splitlines()
    assert line.startswith("[datawheel] error: register: cannot write 'models/digits/versions/v1/")
    assert "No space left on device. Fix: free disk space" in line and "Traceback" not in err
    assert not (tiny_disk / "store" / "models").exists()  # no partial version, no claim
    filler.unlink()
    done = _register(store, model, "promote", None)  # the retry, once there is room
    assert (done["model_version"], done["alias"]) == ("v1", "champion")


# Run as the CLI runs pipelines: in a process whose working directory is not the checkout
# (its docker/ folder would shadow the docker package kfp.local imports).
_LOCAL_RUN = """
import json, sys, time
from datawheel.orchestration.local_runner import LocalRunner
from datawheel.orchestration.params import defaults
from datawheel.orchestration.preflight import check_training
from datawheel.orchestration.retry_policy import retried_tasks, without_retries
from datawheel.pipelines.training import training

local = without_retries(training)
args = check_training({**defaults(training), "store": sys.argv[1], "epochs": 2})
start = time.monotonic()
result = LocalRunner(sys.argv[2]).run(local, args)
print(json.dumps({"took": time.monotonic() - start, "status": result.status,
                  "error": result.error, "steps": [s.task for s in result.steps],
                  "retried": retried_tasks(training), "retried_local": retried_tasks(local)}))
"""


def test_a_local_run_that_fills_the_disk_fails_at_once(tmp_path: Path, tiny_disk: Path) -> None:
    # the whole training pipeline through kfp.local: the dataset fits, the model does not
    _fill(tiny_disk, leave=400 * 1024)
    store = f"file://{tiny_disk / 'store'}"
    proc = subprocess.run(
        [sys.executable, "-c", _LOCAL_RUN, store, str(tmp_path / "runs")],
        cwd=tmp_path,
        env={**os.environ, "DATAWHEEL_CHECKPOINT_DIR": str(tmp_path / "ckpt")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["retried"] and not out["retried_local"]  # the original keeps its retries
    assert out["status"] == "FAILED"
    assert out["error"].startswith("register: cannot write 'models/"), out
    assert "No space left on device. Fix: free disk space" in out["error"]
    assert out["steps"].count("register") == 1  # run once, not 4 times
    assert out["took"] < 120, out  # no 30 + 60 + 120 s of retry backoff
    assert not (tiny_disk / "store" / "models").exists()


# That re-running the pipeline on a store reuses its model (no new version, resumed from
# the finished checkpoint) is test_pipeline_local.py's test_rerunning_the_pipeline_reuses_the_model,
# on the runs that file makes anyway.
