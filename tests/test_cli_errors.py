"""Bad input: a one-line error naming problem and fix, non-zero exit, nothing left behind.

``datawheel run`` refusals that come before any step run ``main()`` in this process
(:func:`_run_refused`): a child would import torch and compile the pipeline DSL (seconds
of CPU) only to print one line. The refusals that come from a step (validate) and the
light commands (datasets, models) run the installed command in a child, as users do."""

from __future__ import annotations

import json
import socket
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import datawheel, main_cli

from datawheel.storage import open_store


@pytest.fixture
def run_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """``datawheel run training --local ARGS`` through ``main()`` here, in ``tmp_path`` (its
    default store and pipeline root are relative), as a CompletedProcess: exit status,
    stdout, and stderr with any warning the run raised written as Python writes it there."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DATAWHEEL_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, out, err = main_cli(capsys, "run", "training", "--local", *args)
        shown = "".join(
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught
        )
        return subprocess.CompletedProcess(["datawheel", "run", *args], code, out, shown + err)

    return run


def _keys(store: str) -> list[str]:
    return open_store(store).list("")


def _assert_one_line_error(proc: Any, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    assert "Fix:" in last, last
    for needle in needles:
        assert needle in last, last
    return str(last)


def _csv(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _table(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    frame["label"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    return frame


@pytest.mark.parametrize(
    ("make_source", "needles"),
    [
        (lambda d: str(d / "missing.csv"), ("does not exist",)),
        (lambda d: _csv(d / "nolabel.csv", _table().drop(columns="label")), ("no label column",)),
        (lambda d: _csv(d / "empty.csv", _table().iloc[:0]), ("no rows",)),
        (lambda d: _write(d / "zero.csv", ""), ("empty",)),
    ],
    ids=["missing-file", "no-label-column", "header-only", "zero-bytes"],
)
def test_bad_sources(
    tmp_path: Path, run_refused: Any, make_source: Any, needles: tuple[str, ...]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    source = make_source(tmp_path)
    proc = run_refused("--store", store, "--param", f"source={source}")
    _assert_one_line_error(proc, *needles)
    assert _keys(store) == []


def _committed(store: str) -> list[str]:
    """Keys of committed dataset versions and of model versions: none may appear."""
    return [k for k in _keys(store) if "/versions/" in k]


@pytest.mark.parametrize(
    ("frame", "needles"),
    [
        (_table().assign(label="yes"), ("only 1 class ('yes')", "Fix: add rows of another class")),
        (
            _table().assign(b=_table()["b"].where(_table().index != 4, np.inf)),
            ("finite b: 1 value(s) infinite", "float32"),
        ),
        (
            _table().assign(c=_table()["c"].where(_table().index != 4, 1e300)),
            ("finite c:", "beyond float32's range"),
        ),
        (
            _table().assign(label=_table()["label"].where(_table().index > 3)),
            ("4 row(s) have no label", "Fix: give every row a label"),
        ),
        (
            _table().assign(label=np.where(np.arange(60) < 2, "rare", _table()["label"])),
            ("class(es) rare (2) have fewer than 5 rows",),
        ),
    ],
    ids=["one-class", "inf-column", "overflows-float32", "nan-labels", "tiny-class"],
)
def test_data_that_cannot_train_fails_before_any_step(
    tmp_path: Path, run_refused: Any, frame: pd.DataFrame, needles: tuple[str, ...]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    source = _csv(tmp_path / "bad.csv", frame)
    proc = run_refused("--store", store, "--param", f"source={source}")
    line = _assert_one_line_error(proc, f"source {source!r}", "hard anomal", *needles)
    assert "RuntimeWarning" not in proc.stderr  # the float32 overflow is reported, not warned
    assert "Executing task" not in proc.stderr + proc.stdout, line  # refused before ingest
    assert _committed(store) == []


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        ("model_name=../../x", "--param model_name '../../x' is not valid"),
        ("dataset_name=../x", "--param dataset_name '../x' is not valid"),
        ("dataset_name=Digits", "--param dataset_name 'Digits' is not valid"),
    ],
)
def test_bad_names_fail_before_any_step(
    tmp_path: Path, run_refused: Any, param: str, needle: str
) -> None:
    store = f"file://{tmp_path / 'store'}"
    proc = run_refused("--store", store, "--param", param)
    _assert_one_line_error(proc, needle, "lowercase letters")
    assert _keys(store) == []
    assert not (tmp_path / "x").exists()


def test_unknown_model_kind(tmp_path: Path, run_refused: Any) -> None:
    store = f"file://{tmp_path / 'store'}"
    proc = run_refused("--store", store, "--param", "model_kind=transformer")
    _assert_one_line_error(proc, "unknown model kind 'transformer'", "mlp")
    assert _keys(store) == []


def test_bad_parameter_type_and_name(run_refused: Any) -> None:
    proc = run_refused("--param", "epochs=many")
    _assert_one_line_error(proc, "epochs='many'")
    proc = run_refused("--param", "epoch=3")
    _assert_one_line_error(proc, "unknown parameter 'epoch'")


def test_schema_violation_fails_validation_and_leaves_no_version(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    good = _csv(tmp_path / "good.csv", _table())
    ok = datawheel("datasets", "ingest", good, "--name", "tab", "--store", store, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "(committed)" in ok.stdout  # the CLI validates what it ingests
    before = [k for k in _keys(store) if "/versions/" in k]
    bad = _table(seed=1).drop(columns="c")
    bad["d"] = 1.0
    proc = datawheel(
        "run",
        "training",
        "--local",
        "--store",
        store,
        "--param",
        f"source={_csv(tmp_path / 'bad.csv', bad)}",
        "--param",
        "dataset_name=tab",
        "--param",
        "epochs=2",
        cwd=tmp_path,
    )
    line = _assert_one_line_error(proc, "validate:", "hard anomalies", "c: column missing")
    assert "d: column not in the reference schema" in line
    assert [k for k in _keys(store) if "/versions/" in k] == before
    assert not [k for k in _keys(store) if k.startswith("models/")]
    assert any(k.startswith("datasets/tab/rejected/") for k in _keys(store))
    assert not [k for k in _keys(store) if "/candidates/" in k]


def test_datasets_ingest_refuses_and_rejects_bad_data(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    one_class = _csv(tmp_path / "one.csv", _table().assign(label="yes"))
    proc = datawheel("datasets", "ingest", one_class, "--store", store, cwd=tmp_path)
    _assert_one_line_error(proc, "only 1 class ('yes')")
    assert _committed(store) == []
    assert [k.rsplit("/", 1)[-1] for k in _keys(store)] == ["manifest.json", "report.md"]
    listed = datawheel("datasets", "list", "--json", "--store", store, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_pin_reference_refuses_uncommitted(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    good = _csv(tmp_path / "good.csv", _table())
    ok = datawheel("datasets", "ingest", good, "--name", "tab", "--store", store, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    proc = datawheel(
        "datasets", "pin-reference", "tab", "0123456789abcdef", "--reason", "x",
        "--store", store, cwd=tmp_path,
    )  # fmt: skip
    _assert_one_line_error(proc, "tab@0123456789abcdef is not a committed version", "pin one of")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_s3_endpoint(run_refused: Any) -> None:
    env = {
        "DATAWHEEL_S3_ENDPOINT": f"127.0.0.1:{_free_port()}",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    proc = run_refused("--store", "s3://bucket/p", env=env)
    _assert_one_line_error(proc, "cannot reach S3 endpoint", "DATAWHEEL_S3_ENDPOINT")


def test_wrong_s3_credentials(run_refused: Any, seaweedfs: Any) -> None:
    env = {**seaweedfs.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    proc = run_refused("--store", f"s3://{seaweedfs.bucket}/p", env=env)
    _assert_one_line_error(proc, "rejected the credentials", "AWS_SECRET_ACCESS_KEY")


def test_missing_s3_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATAWHEEL_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    proc = datawheel("datasets", "list", "--store", "s3://bucket/p", cwd=tmp_path)
    _assert_one_line_error(proc, "DATAWHEEL_S3_ENDPOINT")


def test_models_rollback_without_history(tmp_path: Path) -> None:
    proc = datawheel("models", "rollback", "digits", "--store", f"file://{tmp_path}", cwd=tmp_path)
    _assert_one_line_error(proc, "model 'digits' is not in the registry", "it does not exist")
