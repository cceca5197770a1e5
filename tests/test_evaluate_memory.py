"""evaluate_step on a million test rows stays within 500 MB of extra memory.

It runs in a fresh subprocess, so its peak RSS (VmHWM, i.e. ``ru_maxrss``) is its own: measured once
the inputs are loaded (and torch and scikit-learn are warmed up), and again after the whole
step, challenger, int8 model and a champion scored on reordered columns included. Where
Linux allows it, the peak is restarted at the current RSS before the step
(``/proc/self/clear_refs``), so transients of loading cannot hide growth. The step loads the
splits a second time itself, so the figure is, if anything, an overestimate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from test_evaluate_step import (
    CLASSES,
    FEATURES,
    NAME,
    _data,
    blobs,
    export_dir,
    permuted,
    register_champion,
)

from datawheel.data.split import Splits, write_splits
from datawheel.storage import LocalStore

ROWS = 1_000_000
LIMIT_MB = 500

_SCRIPT = textwrap.dedent(
    """
    import gc, json, resource, sys
    import numpy as np, torch, sklearn.metrics
    from datawheel.data.split import load_splits
    from datawheel.evaluation import classification_metrics, predict_classes
    from datawheel.orchestration.evaluate import evaluate_step

    root, store, name = sys.argv[1:4]

    class Sink:
        def log_metric(self, metric, value):
            pass

    def peak_mb():
        # VmHWM is the mm's peak RSS, which clear_refs restarts; ru_maxrss is the same figure
        # but also keeps the peak any exited thread saw, so it is the fallback only.
        try:
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    splits = load_splits(root + "/splits")  # the inputs
    predict_classes(root + "/challenger/model.ts", splits.x_test[:64], n_classes=3)
    classification_metrics(splits.y_test[:64], splits.y_test[:64], ["a", "b", "c"])
    gc.collect()
    try:  # restart the peak at the current RSS, so loading's transients do not hide growth
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = peak_mb()
    ev = evaluate_step(
        store, name, "big", root + "/splits", root + "/challenger", 0.0,
        root + "/report.md", Sink(),
    )
    print(json.dumps({
        "before_mb": before, "after_mb": peak_mb(), "rows": len(splits.y_test), "reset": reset,
        "decision": ev["decision"], "champion_version": ev["champion_version"],
        "champion_accuracy": ev["champion_accuracy"], "accuracy": ev["metrics"]["accuracy"],
    }))
    """
)


def test_a_million_test_rows_evaluate_in_under_500_mb(tmp_path: Path) -> None:
    small, model = _data()
    x_test, y_test = blobs(ROWS, seed=4)
    splits = Splits(
        small.x_train, small.y_train, small.x_val, small.y_val, x_test, y_test, small.transform
    )
    write_splits(splits, tmp_path / "splits")
    export_dir(model, small.transform, tmp_path / "challenger")
    store = LocalStore(tmp_path / "store")
    # the champion takes the columns in another order and knows one class fewer
    net, champ_tf = permuted(model, small.transform, FEATURES[::-1], CLASSES[:2])
    version = register_champion(store, export_dir(net, champ_tf, tmp_path / "champ"))

    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), store.uri, NAME],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    growth = got["after_mb"] - got["before_mb"]
    print(f"peak RSS growth for {got['rows']} test rows: {growth:.0f} MB ({got})")
    assert got["rows"] == ROWS
    assert got["champion_version"] == version
    assert got["champion_accuracy"] is not None and got["decision"] == "promote"
    assert 0.8 < got["accuracy"] < 1
    assert growth < LIMIT_MB, f"evaluating {ROWS} rows grew the peak RSS by {growth:.0f} MB"
