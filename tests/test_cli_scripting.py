"""The CLI as a script sees it: ``--json`` everywhere, whole lines into a pipe, one store rule.

Commands run through ``main()`` with pytest's captured stdout (not a terminal), as in a pipe.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import datawheel
from cli_helpers import main_cli as _cli
from kfp_recorder import kfp_api

from datawheel import registry
from datawheel.cli.main import main
from datawheel.cli.output import plain_lines
from datawheel.cli.run import _progress
from datawheel.orchestration.local_runner import RunEvent
from datawheel.storage import open_store

LONG = "a-dataset-name-that-is-long-enough-to-be-cut-in-80-columns-x"  # 60 characters


def _csv(path: Path) -> str:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.uniform(0, 1, size=(40, 2)), columns=["a", "b"])
    frame["label"] = np.where(np.arange(40) % 2 == 0, "yes", "no")
    frame.to_csv(path, index=False)
    return str(path)


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "model.ts").write_bytes(b"torchscript " + root.name.encode() * 50)
    (root / "transform.json").write_text('{"mean": [0.0]}')
    return root


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with one dataset whose source path is long, and two registered models."""
    root = tmp_path_factory.mktemp("filled")
    store = f"file://{root / 'store'}"
    source = _csv(root / ("s" * 120 + ".csv"))
    try:
        main(["datasets", "ingest", source, "--name", LONG, "--store", store])
    except SystemExit as exc:
        assert not exc.code
    st = open_store(store)
    card = {"metrics": {"test_accuracy": 0.875}, "dataset": LONG, "dataset_version": "abc"}
    for name in ("digits", "iris"):
        registry.register(st, name, _model_dir(root / name), card=card)
    registry.promote(st, "digits", "v1", alias="champion")
    return {"store": store, "source": source}


def test_datasets_list_in_a_pipe_is_whole_plain_lines(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, "datasets", "list", "--store", filled["store"])
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == [
        "dataset", "version", "ref", "rows", "classes", "parent", "created_at", "source"
    ]  # fmt: skip
    cells = row.split()
    assert cells[0] == LONG and cells[-1] == filled["source"]  # nothing cut
    assert len(row) > 200 and "…" not in out and "│" not in out and "\x1b" not in out
    assert cells[2:6] == ["*", "40", "2", "-"]
    (listed,) = json.loads(
        _cli(capsys, "datasets", "list", "--json", "--store", filled["store"])[1]
    )
    assert listed["source"] == filled["source"] and listed["dataset"] == LONG
    code, out, _ = _cli(capsys, "datasets", "list", LONG, "--json", "--store", filled["store"])
    assert code == 0 and [r["dataset"] for r in json.loads(out)] == [LONG]


def test_datasets_show_json(filled: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ((), ("--json",)):
        code, out, _ = _cli(capsys, "datasets", "show", LONG, *extra, "--store", filled["store"])
        assert code == 0
        doc = json.loads(out)
        assert doc["manifest"]["name"] == LONG and doc["manifest"]["rows"] == 40


def test_models_list_and_show(filled: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "models", "list", "--store", filled["store"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "model", "version", "aliases", "test_accuracy", "dataset", "created_at"
    ]  # fmt: skip
    assert [ln.split()[:4] for ln in lines[1:]] == [
        ["digits", "v1", "champion", "0.8750"],
        ["iris", "v1", "-", "0.8750"],
    ]
    assert all(f"{LONG}@abc" in ln for ln in lines[1:])
    rows = json.loads(_cli(capsys, "models", "list", "--json", "--store", filled["store"])[1])
    assert [(r["model"], r["aliases"], r["test_accuracy"]) for r in rows] == [
        ("digits", ["champion"], 0.875),
        ("iris", [], 0.875),
    ]
    code, out, _ = _cli(capsys, "models", "list", "iris", "--json", "--store", filled["store"])
    assert code == 0 and [r["model"] for r in json.loads(out)] == ["iris"]
    code, out, _ = _cli(capsys, "models", "show", "digits", "--json", "--store", filled["store"])
    assert code == 0 and json.loads(out)["dataset"] == LONG


@pytest.mark.parametrize(
    "args",
    [
        ("models", "list", "nope"),
        ("models", "show", "nope"),
        ("models", "show", "nope@champion"),
        ("models", "rollback", "nope"),
    ],
)
def test_an_unknown_model_does_not_exist_and_the_others_are_named(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, out, err = _cli(capsys, *args, "--store", filled["store"])
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line == (
        f"error: model 'nope' is not in the registry at {open_store(filled['store']).uri}: "
        "it does not exist. Fix: use one of: digits, iris."
    )
    assert "alias" not in line
    code, out, err = _cli(capsys, *args, "--json", "--store", filled["store"])
    if args[1] != "rollback":  # rollback has no --json: a usage error, also as JSON
        assert json.loads(out) == {
            "error": line.removeprefix("error: ").split(". Fix: ")[0],
            "fix": "use one of: digits, iris",
        }


def test_an_unknown_dataset_names_those_that_exist(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "datasets", "show", "nope", "--json", "--store", filled["store"])
    assert code == 2
    assert json.loads(out)["fix"] == f"use one of: {LONG}"
    assert err.splitlines() == [
        f"error: dataset 'nope' does not exist in store {open_store(filled['store']).uri}. "
        f"Fix: use one of: {LONG}."
    ]


def test_plain_lines_pad_but_never_cut() -> None:
    lines = plain_lines(("name", "n"), [["x" * 300, "1"], ["y", "22"]], right=("n",))
    assert lines == ["name" + " " * 298 + " n", "x" * 300 + "   1", "y" + " " * 301 + "22"]


def test_progress_into_a_pipe_is_whole_lines() -> None:
    stream = io.StringIO()
    text = "epoch 1/6 " + "loss=0.1 " * 40 + "see http://user:SECRET@host:9/x"
    with _progress(stream, "training", 3) as on_event:
        for event in (RunEvent("start", "ingest"), RunEvent("message", text=text)):
            on_event(event)
        on_event(RunEvent("end", "ingest"))
        on_event(RunEvent("start", "validate"))
    assert stream.getvalue().splitlines() == [
        "training: ingest (0/3 steps done)",
        "  " + text.replace("user:SECRET@", "***@"),
        "training: validate (1/3 steps done)",
    ]


def test_run_failure_with_json_is_an_error_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(capsys, "run", "training", "--local", "--json", "--param", "epochs=x")
    assert code == 2
    assert json.loads(out) == {
        "error": "parameter epochs='x' is not an integer",
        "fix": "pass e.g. --param epochs=30",
    }
    assert (
        err == "error: parameter epochs='x' is not an integer. Fix: pass e.g. --param epochs=30.\n"
    )
    code, out, err = _cli(capsys, "run", "nope", "--local", "--json")
    assert code == 2 and "'nope' is not one of" in json.loads(out)["error"]
    assert list(tmp_path.iterdir()) == []


def test_datawheel_store_is_honoured_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAWHEEL_STORE", "::::")
    for args in (("run", "training", "--local"), ("datasets", "list"), ("models", "list")):
        code, _, err = _cli(capsys, *args)
        assert code == 2 and err.startswith("error: store '::::' is not file://PATH"), err
    code, _, err = _cli(capsys, "run", "training", "--local", "--store", "::x")
    assert code == 2 and err.startswith("error: store '::x'"), err  # --store wins
    assert list(tmp_path.iterdir()) == []


def test_submit_refuses_a_local_store_and_takes_datawheel_store(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAWHEEL_STORE", raising=False)
    with kfp_api() as api:
        for store in ((), ("--store", "file:///srv/x"), ("--param", "store=/srv/x")):
            code, _, err = _cli(capsys, "submit", "training", "--host", api.url, *store)
            assert code == 2
            (line,) = err.splitlines()
            assert "is a local folder (each pod would have its own)" in line
            assert line.endswith(
                "Fix: pass --store s3://BUCKET/PREFIX (or set DATAWHEEL_STORE to it)."
            )
        assert api.calls == []
        monkeypatch.setenv("DATAWHEEL_STORE", "s3://wheel/env")
        code, out, err = _cli(capsys, "submit", "training", "--host", api.url)
        assert code == 0 and "submitted training as run" in out, err
        (run,) = api.posts("/apis/v2beta1/runs")
        assert run["runtime_config"]["parameters"]["store"] == "s3://wheel/env"


def test_a_failed_step_with_json_is_one_error_document_with_one_fix(tmp_path: Path) -> None:
    """A step's own 'problem. Fix: fix.' and the run's log become one fix, said once."""
    store = ["--store", f"file://{tmp_path / 'store'}"]
    ok = datawheel("datasets", "ingest", _csv(tmp_path / "a.csv"), "--name", "tab", *store,
                   cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = pd.read_csv(tmp_path / "a.csv").rename(columns={"b": "c"})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    proc = datawheel("run", "training", "--local", "--json", *store, "--param",
                     f"source={tmp_path / 'bad.csv'}", "--param", "dataset_name=tab",
                     cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["status"] == "FAILED" and doc["error"].startswith("validate: ")
    assert "Fix:" not in doc["error"] + doc["fix"]
    assert doc["fix"].endswith(f"; the full log is at {doc['log']}") and Path(doc["log"]).is_file()
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: {doc['error']}. Fix: {doc['fix']}." and last.count("Fix:") == 1
    progress = proc.stderr.splitlines()[:-1]  # whole lines, never wrapped at 80 columns
    # lr-grid and ingest run side by side: validate starts with one or both of them done
    assert any(re.fullmatch(r"training: validate \([12]/10 steps done\)", ln) for ln in progress)
    assert any(doc["error"] in line and len(line) > 80 for line in progress), progress
