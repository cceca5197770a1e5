"""A small real store with flywheel history, for the studio's overview and flywheel tests.

Model ``toy`` v1 (champion, registered with a drift reference and an HTML report) and v2
(challenger), trained on dataset ``toy``; three hours of served rows in the ledger, the
last hour's shifted so the drift engine sees drift; feedback labels, some of them
corrections; a harvest of them (a second dataset version with lineage); a finished
watcher run. Everything is written by the real modules (gate, registry, ledger segments,
harvest, watch state); only ``model.ts`` is a stand-in, which nothing here loads.

``features``/``classes`` may be hostile (``<script>``...): the XSS tests use them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from harvest_support import Ledger

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded
from datawheel.data.transform import Transform
from datawheel.flywheel.harvest import harvest
from datawheel.flywheel.rules import Trigger
from datawheel.flywheel.run_state import WatchState
from datawheel.monitoring.baseline import REFERENCE_FILE, build_reference
from datawheel.serving.ids import PredictionIds
from datawheel.storage import LocalStore

FEATURES = ["f0", "f1", "f2", "f3"]
CLASSES = ["a", "b", "c"]
REPORT = (
    "<!doctype html><html><head><style>h1{color:red}</style></head>"
    "<body><h1>Evaluation of toy v1</h1><script>document.title='ran'</script></body></html>"
)
RUN_REASON = "live accuracy 0.40 < 0.80 over 30 labels"
HARVEST_REASON = "labels: 30 new labels since the last run"
_KEY = b"studio-flywheel-tests-key-0123456789"


def frame(features: list[str], classes: list[str], rows: int = 90, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(rng.random((rows, len(features))).astype(np.float32), columns=features)
    out["label"] = [classes[i % len(classes)] for i in range(rows)]
    return out


def _register(
    store: LocalStore, tmp: Path, data: pd.DataFrame, features: list[str], classes: list[str]
) -> str:
    folder = tmp / f"model-{len(list(tmp.glob('model-*')))}"
    folder.mkdir(parents=True)
    (folder / "model.ts").write_bytes(os.urandom(32))
    n = len(features)
    Transform(features, classes, [0.5] * n, [0.3] * n).save(folder / "transform.json")
    build_reference(data[features].to_numpy(np.float64), features, labels=list(data["label"])).save(
        folder / REFERENCE_FILE
    )
    (folder / "report.html").write_text(REPORT)
    latest = ds.latest_version(store, "toy")
    assert latest is not None
    card = {
        "dataset": "toy",
        "dataset_version": latest.version,
        "metrics": {"test_accuracy": 0.9, "test_macro_f1": 0.88, "val_loss": 0.3},
        "decision": "promote",
        "reason": "better than nothing",
        "model_kind": "mlp",
    }
    return registry.register(store, "toy", folder, card=card).version


def build(
    root: Path,
    *,
    features: list[str] = FEATURES,
    classes: list[str] = CLASSES,
    history: bool = True,
    now: float | None = None,
) -> LocalStore:
    """The store (see the module docstring); ``history`` False: dataset and models only."""
    store = LocalStore(root / "store")
    data = frame(features, classes)
    candidate = ds.ingest_frame(store, Loaded(data, "label", "test:toy"), name="toy")
    assert admit(store, "toy", candidate.version).outcome == "committed"
    v1 = _register(store, root, data, features, classes)
    registry.promote(store, "toy", v1, alias="champion", reason="the first model")
    v2 = _register(store, root, data, features, classes)
    registry.promote(store, "toy", v2, alias="challenger", reason="rejected: worse")
    if history:
        write_history(store, features, classes, time.time() if now is None else now)
    return store


def write_history(store: LocalStore, features: list[str], classes: list[str], now: float) -> None:
    """Three hours of traffic (the last one drifted), labels, a harvest, a watcher run."""
    ledger = Ledger(store, model="toy", ids=PredictionIds("toy", _KEY))
    rng = np.random.default_rng(1)
    labelled: list[tuple[str, str, str]] = []
    for k in range(18):  # every 10 minutes, 3 hours back
        ts = now - 3 * 3600 + k * 600
        x = rng.random((30, len(features)))
        if k >= 12:
            x = x * 0.3 + 0.7  # the last hour: squeezed to the top of the range
        predicted = [classes[i % len(classes)] for i in range(30)]
        pids = ledger.predict(x, predicted, ts=ts)
        truth = [p if i % 3 else classes[(i + 1) % len(classes)] for i, p in enumerate(predicted)]
        ledger.label(pids[:5], truth[:5], predicted[:5], ts=ts + 30)
        labelled += list(zip(pids[:5], truth[:5], predicted[:5], strict=True))
    result = harvest(store, "toy", reason=HARVEST_REASON, until=now)
    assert result.created, result.message
    state = WatchState(store, "toy")
    trigger = Trigger("accuracy", "accuracy:toy:v1:1", RUN_REASON)
    claim = state.claim(trigger, now=now - 600, cooldown_s=0, run_id="run-1", extra={})
    assert claim.run is not None
    state.finish("run-1", "succeeded", now=now - 300)
