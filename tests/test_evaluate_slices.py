"""The reference and production slices of the test split, and the production gate.

Unit tests of :mod:`datawheel.evaluation.slices` on hand-made correctness, then
evaluate_step against a real LocalStore registry with the tiny real models of
test_evaluate_step: the production slice is chosen from the rows' classes and the
challenger's own answers, so each test knows what either model scores on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_evaluate_step import NAME, Sink, _data, champion_from, constant, export_dir

from datawheel.data.split import Splits, load_splits, write_splits
from datawheel.evaluation import Comparison, compare, gate_production, slice_accuracies
from datawheel.evaluation.report import evaluation_html
from datawheel.orchestration.evaluate import evaluate_step
from datawheel.storage import LocalStore
from datawheel.training.export import load_exported


def _bools(bits: str) -> np.ndarray:
    return np.array([b == "1" for b in bits])


def test_slice_accuracies_count_each_slice() -> None:
    new, old = _bools("1101101111"), _bools("1111100000")
    prod = _bools("0000011111")
    s = slice_accuracies(new, old, prod)
    assert s["reference"] == {
        "rows": 5,
        "challenger_accuracy": 0.8,
        "champion_accuracy": 1.0,
        "diff": pytest.approx(-0.2),
    }
    assert s["production"]["rows"] == 5 and s["production"]["challenger_accuracy"] == 0.8
    assert s["production"]["champion_accuracy"] == 0.0 and s["production"]["diff"] == 0.8
    assert s["combined"]["rows"] == 10 and s["combined"]["diff"] == pytest.approx(0.3)
    none = slice_accuracies(new, None, np.zeros(10, np.bool_))
    assert none["production"] == {
        "rows": 0,
        "challenger_accuracy": None,
        "champion_accuracy": None,
        "diff": None,
    }
    assert none["reference"]["champion_accuracy"] is None
    assert none["reference"]["challenger_accuracy"] == none["combined"]["challenger_accuracy"]
    with pytest.raises(ValueError, match="do not match"):
        slice_accuracies(new, old, prod[:5])


def test_gate_rejects_a_production_regression_beyond_the_tolerance_only() -> None:
    new = np.ones(100, np.bool_)
    new[:10] = False  # wrong on 10 rows of the 20 production rows
    old = np.zeros(100, np.bool_)
    old[:19] = True  # right on 19 of them, wrong on every reference row
    prod = np.zeros(100, np.bool_)
    prod[:20] = True
    slices = slice_accuracies(new, old, prod)
    promoted = compare(new, old, champion_version="v1")
    assert promoted.decision == "promote"
    got = gate_production(promoted, slices, 0.0)
    assert got.decision == "reject" and got.production_tolerance == 0.0
    assert got.reason.startswith("the production slice regressed: on the production slice")
    assert (
        "(20 test rows) the challenger's accuracy is 0.5000 and the champion's 0.9500" in got.reason
    )
    assert "although the combined test split passes (challenger better by" in got.reason
    # exactly at the tolerance (0.45 below) is not more than it: promote, the reason says so
    at = gate_production(promoted, slices, 0.45)
    assert at.decision == "promote" and at.reason.endswith("within the tolerance 0.4500")
    # a combined reject stays a reject and names the production slice too
    rejected = compare(new, old, margin=0.9, champion_version="v1")
    worse = gate_production(rejected, slices, 0.0)
    assert worse.decision == "reject" and worse.reason.startswith("not shown better")
    assert "and the production slice regressed" in worse.reason
    # no production rows, or no champion: nothing changes but the recorded tolerance
    plain = gate_production(promoted, slice_accuracies(new, old, ~np.ones(100, bool)), 0.0)
    assert (plain.decision, plain.reason) == ("promote", promoted.reason)
    first = Comparison("promote", "no champion yet: the first model becomes champion")
    assert gate_production(first, slice_accuracies(new, None, prod), 0.0).decision == "promote"


# --- evaluate_step on real models ---------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """As in test_evaluate_step: the blobs splits (no test_production) and the challenger."""
    splits, model = _data()
    write_splits(splits, tmp_path / "splits")
    export_dir(model, splits.transform, tmp_path / "challenger")
    return {"tmp": tmp_path, "store": LocalStore(tmp_path / "store"), "splits": splits}


def _challenger_correct(env: dict[str, Any]) -> np.ndarray:
    splits: Splits = env["splits"]
    model = load_exported(env["tmp"] / "challenger" / "model.ts")
    with torch.no_grad():
        pred = model(torch.from_numpy(splits.x_test)).argmax(1).numpy()
    return np.asarray(pred == splits.y_test)


def _with_production(env: dict[str, Any], production: np.ndarray) -> None:
    s: Splits = env["splits"]
    flagged = Splits(
        s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test, s.transform, production
    )
    write_splits(flagged, env["tmp"] / "splits")
    np.testing.assert_array_equal(load_splits(env["tmp"] / "splits").test_production, production)


def _run(env: dict[str, Any], tolerance: float = 0.0) -> tuple[dict[str, Any], Sink]:
    tmp: Path = env["tmp"]
    sink = Sink()
    result = evaluate_step(
        env["store"].uri,
        NAME,
        "blobs-data",
        str(tmp / "splits"),
        str(tmp / "challenger"),
        0.0,
        str(tmp / "report.md"),
        sink,
        html_path=str(tmp / "report.html"),
        production_tolerance=tolerance,
    )
    assert isinstance(result, dict)
    json.dumps(result)  # the register step gets it as JSON
    return result, sink


def test_champion_better_on_production_rejects_though_better_overall(
    env: dict[str, Any],
) -> None:
    """The champion always answers "a"; production is the "a" rows: it is perfect there."""
    tf = env["splits"].transform
    y = env["splits"].y_test
    correct = _challenger_correct(env)
    production = y == 0
    assert not correct[production].all()  # the challenger errs on some "a" row
    _with_production(env, production)
    champion_from(env, constant(tf, "a"), tf, "champ")
    ev, sink = _run(env)
    n = int(production.sum())
    ours = float(correct[production].mean())
    assert ev["decision"] == "reject"
    assert ev["reason"].startswith("the production slice regressed")
    assert f"on the production slice ({n} test rows)" in ev["reason"]
    assert f"the challenger's accuracy is {ours:.4f} and the champion's 1.0000" in ev["reason"]
    assert "although the combined test split passes" in ev["reason"]
    assert ev["ci_low"] > 0  # the bootstrap alone would have promoted
    slices = ev["slices"]
    assert slices["production"] == {
        "rows": n,
        "challenger_accuracy": pytest.approx(ours),
        "champion_accuracy": 1.0,
        "diff": pytest.approx(ours - 1.0),
    }
    assert slices["reference"]["rows"] == len(y) - n
    assert slices["reference"]["champion_accuracy"] == 0.0  # never "a" there
    assert slices["reference"]["challenger_accuracy"] == pytest.approx(correct[~production].mean())
    assert slices["combined"]["challenger_accuracy"] == pytest.approx(ev["metrics"]["accuracy"])
    assert ev["production_tolerance"] == 0.0
    assert sink.logged["production_accuracy"] == pytest.approx(ours)
    assert sink.logged["champion_production_accuracy"] == 1.0
    assert sink.logged["reference_accuracy"] == pytest.approx(correct[~production].mean())
    assert ev["extra"]["production_accuracy"] == pytest.approx(ours)  # onto the model card
    md = (env["tmp"] / "report.md").read_text()
    assert md.startswith("# Evaluation: REJECT") and "## Test slices" in md
    assert f"| production | {n} | {ours:.4f} | 1.0000 | {ours - 1:+.4f} |" in md
    assert f"| reference | {len(y) - n} | " in md and f"| combined | {len(y)} | " in md
    assert "at most 0.0000 below the champion's" in md
    page = (env["tmp"] / "report.html").read_text()
    assert "<h2>Test slices</h2>" in page
    assert (
        f"<tr><td>production</td><td>{n}</td><td>{ours:.4f}</td><td>1.0000</td>"
        f"<td>{ours - 1:+.4f}</td></tr>"
    ) in page
    # a tolerance wider than the regression lets the combined verdict stand
    ev, _ = _run(env, tolerance=1.0 - ours + 1e-9)
    assert ev["decision"] == "promote" and "within the tolerance" in ev["reason"]


def test_champion_worse_on_both_slices_is_replaced(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    y = env["splits"].y_test
    production = y == 1  # the "b" rows: the constant "a" champion never gets one right
    _with_production(env, production)
    version = champion_from(env, constant(tf, "a"), tf, "champ")
    ev, sink = _run(env)
    assert ev["decision"] == "promote" and ev["champion_version"] == version
    assert ev["reason"].startswith("challenger better by")
    assert f"on the production slice ({int(production.sum())} test rows)" in ev["reason"]
    assert ev["reason"].endswith("within the tolerance 0.0000")
    assert ev["slices"]["production"]["champion_accuracy"] == 0.0
    assert ev["slices"]["production"]["diff"] > 0.8 and ev["slices"]["reference"]["diff"] > 0
    assert sink.logged["champion_reference_accuracy"] == pytest.approx(
        float(np.mean(y[~production] == 0))
    )


def test_no_champion_promotes_and_reports_the_slices(env: dict[str, Any]) -> None:
    production = np.zeros(len(env["splits"].y_test), np.bool_)
    production[::3] = True
    _with_production(env, production)
    ev, sink = _run(env)
    assert ev["decision"] == "promote" and "no champion yet" in ev["reason"]
    assert ev["slices"]["production"]["rows"] == int(production.sum())
    assert ev["slices"]["production"]["champion_accuracy"] is None
    assert "champion_production_accuracy" not in sink.logged
    assert "production_accuracy" in sink.logged
    md = (env["tmp"] / "report.md").read_text()
    assert f"| production | {int(production.sum())} | " in md and "| n/a | n/a |" in md


def test_old_splits_have_an_empty_production_slice(env: dict[str, Any]) -> None:
    """The fixture's splits.npz has no test_production: every test row is a reference row."""
    tf = env["splits"].transform
    champion_from(env, constant(tf, "a"), tf, "champ")
    ev, sink = _run(env)
    assert ev["decision"] == "promote" and "production" not in ev["reason"]
    assert ev["slices"]["production"]["rows"] == 0
    assert ev["slices"]["reference"] == ev["slices"]["combined"]
    assert "production_accuracy" not in sink.logged and "reference_accuracy" not in sink.logged
    assert set(ev["extra"]) == {"int8_accuracy"}


def test_an_impossible_tolerance_is_a_user_error(env: dict[str, Any]) -> None:
    with pytest.raises(SystemExit):
        _run(env, tolerance=-0.1)


def test_html_without_slices_has_no_slice_table() -> None:
    page = evaluation_html(
        model="m",
        dataset="d",
        decision="promote",
        reason="r",
        metrics={"accuracy": 1.0},
        history=[],
        classes=["x", "y"],
        confusion=[[1, 0], [0, 1]],
    )
    assert "Test slices" not in page
