"""Content-addressed dataset versions, on LocalStore and on S3Store (SeaweedFS).

Ingest writes a candidate; only the gate (validation) commits it. ``_commit`` does both.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from failing_store import FailingStore

from datawheel.data import versions as datasets
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded, load_source
from datawheel.errors import DatawheelError
from datawheel.storage import Store


@pytest.fixture(scope="module")
def digits() -> Loaded:
    return load_source("digits")


def _admit(store: Store, candidate: datasets.DatasetVersion) -> datasets.DatasetVersion:
    admission = admit(store, candidate.name, candidate.version)
    assert admission.outcome in ("committed", "found"), admission.report.markdown()
    return admission.version


def _head(digits: Loaded, rows: int) -> Loaded:
    """The first ``rows`` rows (all but the last ``-rows`` if negative), as images still."""
    return Loaded(digits.frame.iloc[:rows], "label", f"head{rows}", digits.image_shape)


def _commit(store: Store, loaded: Loaded, name: str) -> datasets.DatasetVersion:
    return _admit(store, datasets.ingest_frame(store, loaded, name=name))


def test_ingest_digits_version_and_manifest(store: Store) -> None:
    candidate = datasets.ingest(store, "digits")
    assert datasets.list_versions(store, "digits") == []  # a candidate is invisible
    v = _admit(store, candidate)
    assert v.version == candidate.version
    assert v.name == "digits"
    assert re.fullmatch(r"[0-9a-f]{16}", v.version)
    data = store.get_bytes(f"datasets/digits/versions/{v.version}/data.parquet")
    digest = hashlib.sha256(data).hexdigest()
    assert v.version == digest[:16]
    m = v.manifest
    assert m["sha256"] == digest
    assert m["rows"] == 1797
    assert m["source"] == "builtin:digits"
    assert m["parent"] is None
    assert m["image_shape"] == [1, 8, 8]
    assert datetime.fromisoformat(m["created_at"]).tzinfo is not None
    assert m["schema"]["label"]["name"] == "label"
    assert [f["name"] for f in m["schema"]["features"]] == [f"px_{i}" for i in range(64)]
    assert {f["dtype"] for f in m["schema"]["features"]} == {"float32"}
    assert set(m["stats"]) == {f"px_{i}" for i in range(64)}
    for s in m["stats"].values():
        assert set(s) == {"min", "max", "mean", "std", "missing", "infinite"}
        assert s["infinite"] == 0
        assert 0.0 <= s["min"] <= s["mean"] <= s["max"] <= 1.0
        assert s["std"] >= 0.0
        assert s["missing"] == 0
    assert m["stats"]["px_0"]["max"] == 0.0  # digits' corner pixel is always blank
    assert sum(m["label_distribution"].values()) == 1797
    assert m["classes"] == [str(i) for i in range(10)]
    assert sorted(m["label_distribution"]) == m["classes"]
    assert m["missing_labels"] == 0
    assert m["validated_against"] is None  # the first version: absolute checks only
    assert datetime.fromisoformat(m["committed_at"]) >= datetime.fromisoformat(m["created_at"])
    # The manifest in the store is the one returned.
    assert datasets.get_version(store, "digits", v.version).manifest == m
    assert v.features == [f"px_{i}" for i in range(64)]
    assert v.label == "label"


def test_describe_stats_with_missing() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 5.0], "label": ["a", "b", "a", "a"]})
    d = datasets.describe(frame, "label")
    expected = {
        "min": 1.0,
        "max": 5.0,
        "mean": 3.0,
        "std": np.std([1.0, 3.0, 5.0]),
        "missing": 1,
        "infinite": 0,
    }
    assert d["stats"]["x"] == pytest.approx(expected)
    assert d["label_distribution"] == {"a": 3, "b": 1}
    assert d["rows"] == 4
    assert d["missing_labels"] == 0


def test_describe_non_finite_is_null_and_counted() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0, np.inf, -np.inf, 3.0, np.nan],
            "y": [np.nan] * 5,
            "big": [1e300, 2.0, 3.0, 4.0, 5.0],
            "label": ["a", None, "", "nan", "b"],
        }
    )
    d = datasets.describe(frame, "label")
    assert d["stats"]["x"] == pytest.approx(
        {"min": 1.0, "max": 3.0, "mean": 2.0, "std": 1.0, "missing": 1, "infinite": 2}
    )
    assert d["stats"]["y"] == {
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "missing": 5,
        "infinite": 0,
    }
    assert d["stats"]["big"]["max"] == 1e300  # finite in float64: validation refuses it
    assert d["missing_labels"] == 3
    assert d["classes"] == ["a", "b"]
    assert d["label_distribution"] == {"a": 1, "b": 1}
    json.dumps(d, allow_nan=False)  # standard JSON: raises on NaN or Infinity


def test_same_content_same_version(store: Store, digits: Loaded) -> None:
    first = _commit(store, digits, "d")
    keys = store.list("datasets/d")
    again = datasets.ingest_frame(store, load_source("digits"), name="d")
    assert again.version == first.version
    assert again.manifest == first.manifest  # the committed version, found again
    assert [v.version for v in datasets.list_versions(store, "d")] == [first.version]
    assert store.list("datasets/d") == keys  # nothing written: no candidate
    assert admit(store, "d", again.version).outcome == "found"
    assert store.list("datasets/d") == keys


def test_changed_content_new_version_with_parent(
    store: Store, digits: Loaded, tmp_path: Path
) -> None:
    csv = tmp_path / "digits.csv"
    digits.frame.to_csv(csv, index=False)
    first = _admit(store, datasets.ingest(store, str(csv), name="d"))
    assert first.manifest["rows"] == 1797
    digits.frame.iloc[:-7].to_csv(csv, index=False)
    second = _admit(store, datasets.ingest(store, str(csv), name="d"))
    assert second.version != first.version
    assert second.manifest["parent"] == first.version
    assert second.manifest["validated_against"] == first.version
    assert second.manifest["rows"] == 1790
    digits.frame.iloc[:-20].to_csv(csv, index=False)
    third = _admit(store, datasets.ingest(store, str(csv), name="d"))
    assert third.manifest["parent"] == second.version
    assert [v.version for v in datasets.list_versions(store, "d")] == [
        first.version,
        second.version,
        third.version,
    ]
    assert datasets.latest_version(store, "d") == third
    assert datasets.get_version(store, "d").version == third.version
    assert datasets.list_datasets(store) == ["d"]
    assert datasets.default_name(str(csv)) == "digits"


def test_parent_is_always_committed(store: Store, digits: Loaded) -> None:
    first = _commit(store, digits, "d")
    # A candidate waiting for validation is nobody's parent...
    waiting = datasets.ingest_frame(store, _head(digits, -3), name="d")
    later = datasets.ingest_frame(store, _head(digits, -5), name="d")
    assert waiting.manifest["parent"] == later.manifest["parent"] == first.version
    # ...and a rejected one never becomes one.
    bad = datasets.ingest_frame(store, _head(digits, 50), name="d")
    assert admit(store, "d", bad.version).outcome == "rejected"
    committed = _admit(store, later)
    assert committed.manifest["parent"] == first.version
    # The parent is fixed at commit: the version committed last.
    assert _admit(store, waiting).manifest["parent"] == later.version


def test_read_frame_roundtrip(store: Store, digits: Loaded) -> None:
    v = _commit(store, digits, "d")
    frame = datasets.read_frame(store, v)
    pd.testing.assert_frame_equal(frame, digits.frame)


def test_read_frame_detects_corruption(store: Store, digits: Loaded) -> None:
    v = _commit(store, digits, "d")
    key = f"datasets/d/versions/{v.version}/data.parquet"
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    with pytest.raises(DatawheelError, match="does not match its checksum"):
        datasets.read_frame(store, v)


def test_failed_ingest_leaves_nothing(store: Store, digits: Loaded) -> None:
    failing = FailingStore(store, "manifest.json")
    with pytest.raises(OSError, match="injected"):
        datasets.ingest_frame(failing, digits, name="d")
    assert store.list("datasets/d") == []
    assert datasets.list_versions(store, "d") == []
    # A later, healthy ingest of the same content works.
    v = _commit(store, digits, "d")
    assert store.list("datasets/d") == [
        "datasets/d/reference.json",
        f"datasets/d/versions/{v.version}/data.parquet",
        f"datasets/d/versions/{v.version}/manifest.json",
        f"datasets/d/versions/{v.version}/report.md",
    ]


def test_failed_commit_is_invisible_and_can_be_retried(store: Store, digits: Loaded) -> None:
    candidate = datasets.ingest_frame(store, digits, name="d")
    with pytest.raises(OSError, match="injected"):
        failing = FailingStore(store, f"versions/{candidate.version}/manifest.json")
        admit(failing, "d", candidate.version)
    assert datasets.list_versions(store, "d") == []
    assert datasets.list_datasets(store) == []
    assert not store.exists("datasets/d/reference.json")
    assert datasets.get_candidate(store, "d", candidate.version) is not None
    v = _admit(store, candidate)  # a retried validate step commits it
    assert [x.version for x in datasets.list_versions(store, "d")] == [v.version]
    assert store.list("datasets/d/candidates") == []


def test_rejected_candidate(store: Store, digits: Loaded) -> None:
    good = _commit(store, digits, "d")
    bad = datasets.ingest_frame(store, Loaded(digits.frame.iloc[:100], "label", "bad"), name="d")
    assert [v.version for v in datasets.list_versions(store, "d")] == [good.version]
    admission = admit(store, "d", bad.version)
    assert admission.outcome == "rejected"
    key = admission.report_key
    assert key == f"datasets/d/rejected/{bad.version}/report.md"
    assert store.get_bytes(key).startswith(b"# Data validation: FAILED\n")
    assert "100 rows outside bounds [179, 179700]" in store.get_bytes(key).decode()
    assert [v.version for v in datasets.list_versions(store, "d")] == [good.version]
    assert datasets.latest_version(store, "d") == good
    assert store.list(f"datasets/d/versions/{bad.version}") == []
    assert store.list("datasets/d/candidates") == []
    assert store.exists(f"datasets/d/rejected/{bad.version}/manifest.json")
    with pytest.raises(DatawheelError, match="not in the store") as info:
        datasets.get_version(store, "d", bad.version)
    assert "failed validation" in str(info.value)


def test_candidate_is_invisible(store: Store, digits: Loaded) -> None:
    candidate = datasets.ingest_frame(store, digits, name="d")
    assert datasets.list_datasets(store) == []
    assert datasets.list_versions(store, "d") == []
    assert datasets.latest_version(store, "d") is None
    with pytest.raises(DatawheelError, match="not passed validation yet"):
        datasets.get_version(store, "d", candidate.version)


def test_get_version_missing(store: Store) -> None:
    with pytest.raises(DatawheelError, match="not in the store"):
        datasets.get_version(store, "nothing")
    assert datasets.latest_version(store, "nothing") is None


@pytest.mark.parametrize("name", ["Digits", "-x", "a/b", "a b", "x" * 64, "../x", ".hidden"])
def test_invalid_names(tmp_path: Path, digits: Loaded, name: str) -> None:
    from datawheel.storage import LocalStore

    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatawheelError, match="not valid"):
        datasets.ingest_frame(store, digits, name=name)
    assert store.list() == []


def test_empty_frame_rejected(tmp_path: Path) -> None:
    from datawheel.storage import LocalStore

    frame = pd.DataFrame({"x": np.array([], np.float32), "label": np.array([], str)})
    with pytest.raises(DatawheelError, match="no rows"):
        datasets.ingest_frame(LocalStore(tmp_path), Loaded(frame, "label", "e"), name="e")
