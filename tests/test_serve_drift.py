"""Live drift in `datawheel serve`: the reference exported with the model (or rebuilt for an
older export, or off), and the gauges of a real server under unshifted, shifted and
class-changing streams, scraped by a real Prometheus."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import ServerProcess, copy_store, infer_body

from datawheel import registry
from datawheel.data.split import TEST, TRAIN, plan_split
from datawheel.data.versions import get_version, read_frame
from datawheel.monitoring.baseline import REFERENCE_FILE, DriftReference
from datawheel.serving.model import load_served
from datawheel.storage import LocalStore, open_store
from datawheel.storage.files import sha256_file

WINDOW = 1000  # --drift-window-rows for the servers here: PSI from 250 rows on
THRESHOLD = 0.25  # the alert's: DatawheelInputDrift / DatawheelPredictionDrift
DRIFT_METRICS = (
    "datawheel_input_drift_score",
    "datawheel_feature_drift_psi",
    "datawheel_prediction_drift_score",
    "datawheel_drift_window_rows",
)


def _root(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _version_dir(uri: str, version: str = "v1") -> Path:
    return _root(uri) / "models" / "digits" / "versions" / version


def _as_older_export(uri: str, version: str = "v1") -> None:
    """Make ``version`` look exported before drift references: no file, not in the card."""
    folder = _version_dir(uri, version)
    card = json.loads((folder / "card.json").read_text())
    del card["files"][REFERENCE_FILE]
    (folder / "card.json").write_text(json.dumps(card))
    (folder / REFERENCE_FILE).unlink()


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, np.float32) / 16.0, np.asarray(data.target)


def _split(uri: str) -> Any:
    store = open_store(uri)
    dv = get_version(
        store, "digits", registry.resolve(store, "digits", "v1").card["dataset_version"]
    )
    frame = read_frame(store, dv)
    return plan_split(frame, label=dv.label, features=dv.features, classes=dv.classes, seed=0)


# --- the reference carried with the model -----------------------------------------------------


def test_the_export_carries_the_train_split_reference_in_the_card(model_store: str) -> None:
    mv = registry.resolve(open_store(model_store), "digits", "v1")
    path = _version_dir(model_store) / REFERENCE_FILE
    assert mv.card["files"][REFERENCE_FILE] == sha256_file(path)
    reference = DriftReference.load(path)
    plan = _split(model_store)
    train, test = plan.assignment == TRAIN, plan.assignment == TEST
    assert reference.rows == int(train.sum())
    assert reference.names == [f"px_{i}" for i in range(64)]
    assert sum(reference.labels.values()) == int(train.sum())
    assert reference.labels == {
        c: int((plan.y[train] == i).sum())
        for i, c in enumerate(plan.classes)
        if (plan.y[train] == i).any()
    }
    assert sum(reference.predictions.values()) == int(test.sum())  # the model on its test split
    px10 = reference.features[10]
    assert px10.mean == pytest.approx(float(plan.x[train, 10].mean()), rel=1e-6)


def test_an_older_export_gets_its_reference_rebuilt_from_the_dataset(
    model_store: str, tmp_path: Path
) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    exported = DriftReference.load(_version_dir(uri) / REFERENCE_FILE)
    _as_older_export(uri)
    model = load_served(open_store(uri), "digits", "v1")
    assert model.drift_reference is not None
    assert "rebuilt from the train split of dataset digits@" in model.drift_note
    assert model.drift_reference.to_dict() == exported.to_dict()  # the same split, the same model


def test_without_a_reference_or_its_dataset_live_drift_is_off(
    model_store: str, tmp_path: Path
) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    _as_older_export(uri)
    shutil.rmtree(_root(uri) / "datasets")
    model = load_served(open_store(uri), "digits", "v1")
    assert model.drift_reference is None
    assert "no usable reference: dataset digits@" in model.drift_note
    server = ServerProcess(uri, tmp_path / "spool").start()
    try:
        rows, _ = _digits()
        assert server.post("/v2/models/digits/infer", infer_body(rows[:300]))[0] == 200
        text = server.metrics()
        assert not [m for m in DRIFT_METRICS if m + "{" in text]
        assert "live drift is off for digits:v1 (no drift gauges for it): no usable reference" in (
            server.log()
        )
    finally:
        server.stop()


def test_a_transform_the_default_split_does_not_reproduce_turns_drift_off(
    model_store: str, tmp_path: Path
) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    _as_older_export(uri)
    folder = _version_dir(uri)
    transform = json.loads((folder / "transform.json").read_text())
    transform["mean"][10] += 0.1  # as if trained on another split
    (folder / "transform.json").write_text(json.dumps(transform))
    card = json.loads((folder / "card.json").read_text())
    card["files"]["transform.json"] = sha256_file(folder / "transform.json")
    (folder / "card.json").write_text(json.dumps(card))
    model = load_served(open_store(uri), "digits", "v1")
    assert model.drift_reference is None
    assert "does not reproduce the model's transform" in model.drift_note


# --- a real server --------------------------------------------------------------------------


def _gauges(server: ServerProcess) -> dict[tuple[str, str, str], float]:
    """(metric, version, feature or "") -> value, for the drift gauges on /metrics."""
    out = {}
    for family in text_string_to_metric_families(server.metrics()):
        for s in family.samples:
            if s.name in DRIFT_METRICS:
                out[s.name, s.labels["version"], s.labels.get("feature", "")] = s.value
    return out


def _send(server: ServerProcess, rows: np.ndarray, per_request: int = 100) -> None:
    for start in range(0, len(rows), per_request):
        status, doc = server.post(
            "/v2/models/digits/infer", infer_body(rows[start : start + per_request])
        )
        assert status == 200, doc


def _features(g: dict[tuple[str, str, str], float], version: str = "v1") -> dict[str, float]:
    return {
        f: v
        for (m, ver, f), v in g.items()
        if m == "datawheel_feature_drift_psi" and ver == version
    }


def test_gauges_follow_shifted_streams_and_prometheus_scrapes_them(
    model_store: str, tmp_path: Path, prometheus: Callable[[list[str]], Any]
) -> None:
    uri = copy_store(model_store, tmp_path / "store")
    reference = DriftReference.load(_version_dir(uri) / REFERENCE_FILE)
    args = ["--drift-window-rows", str(WINDOW), "--poll-seconds", "0.2"]
    server = ServerProcess(uri, tmp_path / "spool", args=args).start()
    try:
        prom = prometheus([f"127.0.0.1:{server.port}"])
        # before any input: every series is there, NaN (too few rows), 32 by name + _other
        start = _gauges(server)
        features = _features(start)
        assert list(features) == [f"px_{i}" for i in range(32)] + ["_other"]
        assert all(math.isnan(v) for v in features.values())
        assert start["datawheel_drift_window_rows", "v1", ""] == 0
        assert "live drift for digits:v1: 64 features against drift_reference.json" in server.log()

        x, y = _digits()
        rng = np.random.default_rng(0)
        calm = x[rng.integers(0, len(x), WINDOW)]
        _send(server, calm)
        g = _gauges(server)
        assert g["datawheel_drift_window_rows", "v1", ""] == WINDOW
        assert max(_features(g).values()) < 0.1
        assert g["datawheel_input_drift_score", "v1", ""] < 0.1
        assert g["datawheel_prediction_drift_score", "v1", ""] < 0.1

        # px_10 moved 5 sigma, px_20 twice as spread around its mean, px_43 (beyond the cap)
        # moved too: the window is replaced by these rows
        shifted = x[rng.integers(0, len(x), WINDOW)].copy()
        for j, how in ((10, "shift"), (20, "spread"), (43, "shift")):
            f = reference.features[j]
            assert f.mean is not None and f.std is not None
            shifted[:, j] = (
                shifted[:, j] + 5 * f.std
                if how == "shift"
                else (f.mean + 2 * (shifted[:, j] - f.mean))
            )
        _send(server, shifted)
        g = _gauges(server)
        psis = _features(g)
        assert psis["px_10"] > THRESHOLD and psis["px_20"] > THRESHOLD
        assert psis["_other"] > THRESHOLD  # px_43 is among the summarised ones
        calm_ones = {f: v for f, v in psis.items() if f not in ("px_10", "px_20", "_other")}
        assert max(calm_ones.values()) < 0.1
        score = g["datawheel_input_drift_score", "v1", ""]
        assert score == max(psis.values())  # the worst feature's PSI
        prom.wait_for(f'datawheel_feature_drift_psi{{feature="px_10", version="v1"}} > {THRESHOLD}')
        prom.wait_for(f'datawheel_input_drift_score{{model="digits"}} > {THRESHOLD}')
        assert prom.query('datawheel_feature_drift_psi{feature="px_11"} < 0.1')

        # only zeros: the predicted-class mix changes
        zeros = x[y == 0][rng.integers(0, int((y == 0).sum()), WINDOW)]
        _send(server, zeros)
        g = _gauges(server)
        assert g["datawheel_prediction_drift_score", "v1", ""] > 1.0
        prom.wait_for(f"datawheel_prediction_drift_score > {THRESHOLD}")
        prom.wait_for(f"datawheel_drift_window_rows == {WINDOW}")

        # a hot swap drops v1's drift series and starts v2's window empty
        registry.promote(LocalStore(_root(uri)), "digits", "v2", alias="champion")
        deadline = time.monotonic() + 60
        while ("datawheel_drift_window_rows", "v2", "") not in (g := _gauges(server)):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert {ver for _, ver, _ in g} == {"v2"}
        assert g["datawheel_drift_window_rows", "v2", ""] == 0
        assert len(_features(g, "v2")) == 33
    finally:
        server.stop()
