"""`datawheel drift` run as a user runs it: real files, a real store, a real ledger."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cli_helpers import datawheel
from serving_support import copy_store, digits_rows

from datawheel.serving.ledger import Feedback, Ledger, Prediction
from datawheel.storage import LocalStore

LONG = "a_feature_name_long_enough_to_be_cut_by_any_table_that_truncates_columns"


def _frames(n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current with one shifted numeric feature (x1), one categorical feature
    whose mix changes and gains a category, a label column, and a long feature name."""
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(5)})
    ref[LONG] = rng.normal(size=n)
    ref["colour"] = rng.choice(["red", "green", "blue"], n)
    ref["target"] = rng.choice(["a", "b"], n)
    cur = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(5)})
    cur["x1"] += 1.0
    cur[LONG] = rng.normal(size=n)
    cur["colour"] = rng.choice(["red", "green", "blue", "violet"], n, p=[0.1, 0.3, 0.3, 0.3])
    cur["target"] = rng.choice(["a", "b"], n)
    return ref, cur


def _write(tmp_path: Path) -> tuple[Path, Path]:
    ref, cur = _frames()
    ref_path, cur_path = tmp_path / "reference.csv", tmp_path / "current.parquet"
    ref.to_csv(ref_path, index=False)
    cur.to_parquet(cur_path, index=False)
    return ref_path, cur_path


def _json(proc: Any) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_json_has_the_issue_shape_and_finds_the_shifts(tmp_path: Path) -> None:
    ref, cur = _write(tmp_path)
    out = _json(datawheel("drift", str(ref), str(cur), "--label", "target", "--json", cwd=tmp_path))
    for key in ("features", "drifted_features", "dataset_drift", "reference_rows", "current_rows"):
        assert key in out, key
    assert (out["reference_rows"], out["current_rows"]) == (2000, 2000)
    names = [f["name"] for f in out["features"]]
    assert sorted(names) == sorted(["x0", "x1", "x2", "x3", "x4", LONG, "colour"])  # no target
    for f in out["features"]:
        assert list(f)[:6] == ["name", "test", "statistic", "p_value", "threshold", "drifted"]
    assert set(out["drifted_features"]) == {"x1", "colour"}
    assert names[:2] == out["drifted_features"] or set(names[:2]) == {"x1", "colour"}
    assert out["dataset_drift"] is True
    assert out["label_drift"] is not None and out["label_drift"]["drifted"] is False


def test_table_in_a_pipe_is_plain_and_complete(tmp_path: Path) -> None:
    deep = tmp_path / ("a_folder_with_a_long_name_" * 3) / "nested"
    deep.mkdir(parents=True)
    ref, cur = _write(deep)
    proc = datawheel("drift", str(ref), str(cur), "--label", "target", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "\x1b[" not in text  # no colour codes in a pipe
    assert str(cur) in text and str(ref) in text  # whole paths
    assert LONG in text  # whole names
    lines = text.splitlines()
    assert lines[0].startswith("DATASET DRIFT: 2 of 7 features drifted")
    rows = {line.split()[0]: line for line in lines if line.strip() and line.split()[0] in (
        "x0", "x1", "x2", "x3", "x4", LONG, "colour", "label")}  # fmt: skip
    assert set(rows) == {"x0", "x1", "x2", "x3", "x4", LONG, "colour", "label"}  # label: target
    assert "DRIFT" in rows["x1"] and "DRIFT" in rows["colour"] and "DRIFT" not in rows["x0"]
    assert "'violet': " in rows["colour"]  # the unseen category is named
    assert next(i for i, s in enumerate(lines) if s.split()[:1] == ["x1"]) < next(
        i for i, s in enumerate(lines) if s.split()[:1] == ["x0"]
    )  # ranked by severity
    assert "rule: " in text


def test_html_report_is_written_and_self_contained(tmp_path: Path) -> None:
    ref, cur = _write(tmp_path)
    page = tmp_path / "out" / "drift.html"
    page.parent.mkdir()
    proc = datawheel(
        "drift", str(ref), str(cur), "--label", "target", "--html", str(page), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "<script" not in text and "<link" not in text
    assert all(name in text for name in ("x0", "x4", LONG, "colour"))


def _ingest(tmp_path: Path, store: str, frame: pd.DataFrame, name: str) -> str:
    path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.csv')))}.csv"
    frame.to_csv(path, index=False)
    proc = datawheel(
        "datasets", "ingest", str(path), "--name", "tab", "--store", store, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split(":")[0].strip()  # "tab@VERSION"


def test_dataset_versions_from_the_store(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    rng = np.random.default_rng(1)
    n = 600
    first = pd.DataFrame({"u": rng.uniform(size=n), "v": rng.uniform(size=n)})
    first["label"] = rng.choice(["p", "q"], n)
    second = first.copy()
    second["u"] = rng.beta(5, 1.5, size=n)  # within the reference's range: validation passes
    v1, v2 = _ingest(tmp_path, store, first, "a"), _ingest(tmp_path, store, second, "b")
    assert v1 != v2 and v1.startswith("tab@")
    out = _json(datawheel("drift", v1, v2, "--store", store, "--json", cwd=tmp_path))
    assert out["features"][0]["name"] == "u"  # the label column is not a feature
    assert sorted(f["name"] for f in out["features"]) == ["u", "v"]
    assert out["drifted_features"] == ["u"]
    # a dataset against a file: the file's label column is the dataset's, left out too
    csv = tmp_path / "second.csv"
    second.to_csv(csv, index=False)
    mixed = _json(datawheel("drift", v1, str(csv), "--store", store, "--json", cwd=tmp_path))
    assert sorted(f["name"] for f in mixed["features"]) == ["u", "v"]
    env = {"DATAWHEEL_STORE": store}
    latest = _json(datawheel("drift", v1, "tab@latest", "--json", cwd=tmp_path, env=env))
    assert latest["drifted_features"] == ["u"]


def _one_line_error(proc: Any, *needles: str, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err: str = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Fix: " in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_bad_input_is_one_line_with_a_fix(tmp_path: Path) -> None:
    ref, cur = _write(tmp_path)
    store = f"file://{tmp_path / 'store'}"

    def run(*args: str) -> Any:
        return datawheel("drift", *args, cwd=tmp_path)

    _one_line_error(run("nope@v1", str(cur), "--store", store), "dataset nope@v1")
    _one_line_error(run(str(ref), str(tmp_path / "missing.csv")), "missing.csv does not exist")
    unlabelled = tmp_path / "unlabelled.parquet"
    pd.read_parquet(cur).drop(columns=["target"]).to_parquet(unlabelled)
    _one_line_error(run(str(ref), str(unlabelled)), "do not match", "target", "--label")
    other = tmp_path / "other.csv"
    pd.DataFrame({"x0": [1.0, 2.0], "y": [3.0, 4.0]}).to_csv(other, index=False)
    _one_line_error(run(str(ref), str(other), "--label", "target"), "lacks 6 reference feature")
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(pd.read_csv(ref, nrows=1).columns) + "\n")
    _one_line_error(run(str(ref), str(empty), "--label", "target"), "no rows")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _one_line_error(run(str(ref), str(text)), "not a CSV or Parquet file")
    _one_line_error(run(str(ref)), "nothing to compare")
    html = str(tmp_path / "no" / "such" / "folder" / "r.html")
    _one_line_error(run(str(ref), str(cur), "--html", html), "cannot write the report")
    _one_line_error(run(str(ref), str(cur), "--model", "digits", "--store", store), "not both")
    _one_line_error(run("--model", "digits", "--store", store), "model 'digits' is not")
    _one_line_error(run("--model", "digits", "--since", "yesterday"), "not a duration")


def test_fail_on_drift_exits_1(tmp_path: Path) -> None:
    ref, cur = _write(tmp_path)
    proc = datawheel(
        "drift", str(ref), str(cur), "--label", "target", "--fail-on-drift", cwd=tmp_path
    )
    assert proc.returncode == 1 and "DATASET DRIFT" in proc.stdout
    same = datawheel(
        "drift", str(ref), str(ref), "--label", "target", "--fail-on-drift", cwd=tmp_path
    )
    assert same.returncode == 0 and same.stdout.startswith("no dataset drift"), same.stdout


# --- --model: the model's reference against its ledger window ---------------------------


def _write_ledger(store_dir: Path, spool: Path, rows: list[tuple[float, str, np.ndarray]]) -> None:
    """Predictions (ts, version, inputs) labelled with what that version predicts, as the
    server records them, and a feedback label "0" for each."""
    from datawheel.serving.model import load_served

    models = {
        v: load_served(LocalStore(store_dir), "digits", v, warmup_rows=1) for v in ("v1", "v2")
    }
    ledger = Ledger(lambda: LocalStore(store_dir), model="digits", spool_dir=spool)
    ledger.start()
    for b, (ts, version, x) in enumerate(rows):
        model = models[version]
        labels = model.labels(model.predict(x.astype(np.float32)))
        predictions = [
            Prediction(f"p{b}-{i}", ts, "digits", version, list(map(float, row)), lab, [0.1], 1.0)
            for i, (row, lab) in enumerate(zip(x, labels, strict=True))
        ]
        ledger.append(predictions)
        feedback = [Feedback(p.id, ts + 1, "digits", version, "0", p.label) for p in predictions]
        ledger.append(feedback)
    assert ledger.flush(timeout=30)
    ledger.close()


def test_model_reference_against_its_ledger_window(model_store: str, tmp_path: Path) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    store_dir = Path(uri.removeprefix("file://"))
    now = time.time()
    x, _ = digits_rows(300, offset=1000)
    shifted = x.copy()
    shifted[:, 20] = 1.0  # one pixel stuck on
    _write_ledger(
        store_dir,
        tmp_path / "spool",
        [
            (now - 3600, "v1", shifted),  # in the 24 h window
            (now - 3 * 86400, "v1", x[:100]),  # only in a 7-day window
            (now - 60, "v2", x[:50]),  # another version: not v1's window
        ],
    )
    out = _json(datawheel("drift", "--model", "digits@champion", "--store", uri, "--json",
                          cwd=tmp_path))  # fmt: skip
    assert out["current_rows"] == 300
    assert out["current"] == "digits:v1 ledger, last 24h"
    assert out["drifted_features"][0] == "px_20" and out["dataset_drift"] is True
    assert len(out["features"]) == 64
    assert out["prediction_drift"] is not None and out["prediction_drift"]["rows"] == 300
    assert out["label_drift"] is not None and out["label_drift"]["drifted"] is True  # all "0"
    week = _json(datawheel("drift", "--model", "digits:v1", "--store", uri, "--since", "7d",
                           "--json", cwd=tmp_path))  # fmt: skip
    assert week["current_rows"] == 400
    table = datawheel("drift", "--model", "digits", "--store", uri, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "predictions and labels" in table.stdout and "px_20" in table.stdout
    assert "reference: drift_reference.json of digits:v1" in table.stdout
    err = _one_line_error(
        datawheel("drift", "--model", "digits:v2", "--store", uri, "--since", "1s", cwd=tmp_path),
        "no predictions of digits:v2",
    )
    assert "--since" in err
