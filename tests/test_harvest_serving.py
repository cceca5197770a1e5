"""Harvest what a real server wrote: `datawheel serve`, real predictions, the feedback API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from serving_support import ServerProcess, copy_store, digits_rows, infer_body

from datawheel.data import versions as ds
from datawheel.flywheel.harvest import harvest
from datawheel.storage import open_store


def test_harvest_the_ledger_of_a_running_server(model_store: str, tmp_path: Path) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    x, y = digits_rows(48, offset=500)
    x = x * np.float32(0.75)  # fainter strokes: rows the dataset does not have, in its ranges
    srv = ServerProcess(uri, tmp_path / "spool", args=["--ledger-flush-seconds", "0.2"]).start()
    try:
        status, doc = srv.post("/v2/models/digits/infer", infer_body(x))
        assert status == 200, doc
        pids, predicted = doc["parameters"]["prediction_ids"], doc["outputs"][0]["data"]
        for pid, label in zip(pids[:40], y[:40], strict=True):  # users label 40 of 48
            status, fb = srv.post("/v2/models/digits/feedback", {"id": pid, "label": str(label)})
            assert status == 200, fb
        # a label changed later: the latest one wins
        status, _ = srv.post("/v2/models/digits/feedback", {"id": pids[0], "label": "9"})
        assert status == 200
    finally:
        srv.stop()  # SIGTERM: the ledger is flushed to the store first
    store = open_store(uri)
    parent = ds.get_version(store, "digits")
    truth = [str(v) for v in y[:40]]
    truth[0] = "9"
    result = harvest(store, "digits", reason="test")
    assert result.created and result.labeled_rows == 40
    wrong = sum(p != t for p, t in zip(predicted[:40], truth, strict=True))
    assert (result.corrections, result.confirmations) == (wrong, 40 - wrong)
    dv = ds.get_version(store, "digits")
    distinct = len(np.unique(x[:40], axis=0))
    assert dv.manifest["rows"] == parent.manifest["rows"] + distinct
    assert dv.manifest["lineage"]["model_versions"] == {"v1": 40}
    assert dv.manifest["lineage"]["predictions_seen"] == 48
    frame = ds.read_frame(store, dv)
    first = frame.iloc[parent.manifest["rows"] :]
    match = (first[dv.features].to_numpy(np.float32) == x[0]).all(axis=1)
    assert list(first["label"][match]) == ["9"]
    assert harvest(store, "digits").created is False
