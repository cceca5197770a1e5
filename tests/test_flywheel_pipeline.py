"""The flywheel pipeline end to end through kfp.local: production labels in the ledger become
a dataset version, the champion is fine-tuned on it, evaluated and registered; a second run
with nothing new ends unchanged. Also the demo's shifted traffic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from cli_helpers import datawheel
from harvest_support import _KEY, Ledger
from serving_support import build_model_store

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.flywheel.demo_traffic import shifted_pools, thicker_strokes
from datawheel.serving.ids import PredictionIds
from datawheel.storage import LocalStore


def _run_flywheel(args: list[str], cwd: Path) -> dict[str, Any]:
    """``datawheel run flywheel --local --json`` in a child (as users run it)."""
    proc = datawheel("run", "flywheel", "--local", "--json", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    result["progress"] = proc.stderr
    return result


def test_the_flywheel_retrains_on_production_labels_then_stays_unchanged(tmp_path: Path) -> None:
    uri = build_model_store(tmp_path / "store", versions=1, epochs=3)
    store = LocalStore(tmp_path / "store")
    (x, y), _ = shifted_pools()
    x, y = x[:240], y[:240]
    ledger = Ledger(store, model="digits", ids=PredictionIds("digits", _KEY))
    predicted = ["0"] * len(x)  # what a poor champion answered: most labels are corrections
    pids = ledger.predict(x, predicted)
    ledger.label(pids, y.tolist(), predicted)
    args = ["--store", uri, "--param", "epochs=3", "--param", "reason=test: new labels"]

    first = _run_flywheel(args, tmp_path)
    assert first["status"] == "SUCCEEDED", first["error"]
    tasks = {s["task"] for s in first["timings"]["steps"]}
    assert {"harvest", "validate", "drift-report", "prep", "train", "evaluate", "register"} <= tasks
    assert "written as a candidate" in first["progress"]
    summary = first["summary"]
    assert summary["decision"] in ("promote", "reject")
    assert summary["alias"] == ("champion" if summary["decision"] == "promote" else "challenger")
    harvested = ds.get_version(store, "digits", summary["dataset_version"])
    lineage = harvested.manifest["lineage"]
    assert lineage["reason"] == "test: new labels" and lineage["labels"] == len(x)
    assert harvested.manifest["rows"] == 1797 + len(x)
    card = registry.read_card(store, "digits", summary["model_version"]).card
    assert card["dataset_version"] == harvested.version
    assert card["trigger"] == "test: new labels"

    second = _run_flywheel(args, tmp_path)
    assert second["status"] == "SUCCEEDED", second["error"]
    assert second["summary"]["decision"] == "unchanged"
    assert {s["task"] for s in second["timings"]["steps"]} == {"harvest", "unchanged"}
    assert [v.version for v in ds.list_versions(store, "digits")][-1] == harvested.version


def test_thicker_strokes_only_brighten_and_the_pools_are_disjoint() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 64)).astype(np.float32) * (rng.random((5, 64)) < 0.3)
    thick = thicker_strokes(x)
    assert thick.shape == x.shape and np.all(thick >= x)
    one = np.zeros((1, 64), np.float32)
    one[0, 27] = 1.0  # row 3, column 3: its four neighbours light up, nothing else
    lit = np.flatnonzero(thicker_strokes(one)[0])
    assert sorted(lit.tolist()) == [19, 26, 27, 28, 35]
    (a, ya), (b, yb) = shifted_pools()
    assert len(a) + len(b) == 1797 and len(a) == len(ya) and len(b) == len(yb)
    assert not {r.tobytes() for r in a[:200]} & {r.tobytes() for r in b[:200]}
