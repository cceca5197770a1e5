"""Content-addressed dataset versions, on LocalStore and on S3Store (SeaweedFS)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from failing_store import FailingStore

from datawheel.data import versions as datasets
from datawheel.data.sources import Loaded, load_source
from datawheel.errors import DatawheelError
from datawheel.storage import Store


@pytest.fixture(scope="module")
def digits() -> Loaded:
    return load_source("digits")


def test_ingest_digits_version_and_manifest(store: Store) -> None:
    v = datasets.ingest(store, "digits")
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
        assert set(s) == {"min", "max", "mean", "std", "missing"}
        assert 0.0 <= s["min"] <= s["mean"] <= s["max"] <= 1.0
        assert s["std"] >= 0.0
        assert s["missing"] == 0
    assert m["stats"]["px_0"]["max"] == 0.0  # digits' corner pixel is always blank
    assert sum(m["label_distribution"].values()) == 1797
    assert m["classes"] == [str(i) for i in range(10)]
    assert sorted(m["label_distribution"]) == m["classes"]
    # The manifest in the store is the one returned.
    assert datasets.get_version(store, "digits", v.version).manifest == m
    assert v.features == [f"px_{i}" for i in range(64)]
    assert v.label == "label"


def test_describe_stats_with_missing() -> None:
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 5.0], "label": ["a", "b", "a", "a"]})
    d = datasets.describe(frame, "label")
    expected = {"min": 1.0, "max": 5.0, "mean": 3.0, "std": np.std([1.0, 3.0, 5.0]), "missing": 1}
    assert d["stats"]["x"] == pytest.approx(expected)
    assert d["label_distribution"] == {"a": 3, "b": 1}
    assert d["rows"] == 4


def test_same_content_same_version(store: Store, digits: Loaded) -> None:
    first = datasets.ingest_frame(store, digits, name="d")
    keys = store.list("datasets/d")
    again = datasets.ingest_frame(store, load_source("digits"), name="d")
    assert again.version == first.version
    assert again.manifest == first.manifest
    assert [v.version for v in datasets.list_versions(store, "d")] == [first.version]
    assert store.list("datasets/d") == keys


def test_changed_content_new_version_with_parent(
    store: Store, digits: Loaded, tmp_path: Path
) -> None:
    csv = tmp_path / "digits.csv"
    digits.frame.to_csv(csv, index=False)
    first = datasets.ingest(store, str(csv), name="d")
    assert first.manifest["rows"] == 1797
    digits.frame.iloc[:-7].to_csv(csv, index=False)
    second = datasets.ingest(store, str(csv), name="d")
    assert second.version != first.version
    assert second.manifest["parent"] == first.version
    assert second.manifest["rows"] == 1790
    digits.frame.iloc[:-20].to_csv(csv, index=False)
    third = datasets.ingest(store, str(csv), name="d")
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


def test_read_frame_roundtrip(store: Store, digits: Loaded) -> None:
    v = datasets.ingest_frame(store, digits, name="d")
    frame = datasets.read_frame(store, v)
    pd.testing.assert_frame_equal(frame, digits.frame)


def test_read_frame_detects_corruption(store: Store, digits: Loaded) -> None:
    v = datasets.ingest_frame(store, digits, name="d")
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
    v = datasets.ingest_frame(store, digits, name="d")
    assert store.list(f"datasets/d/versions/{v.version}") == [
        f"datasets/d/versions/{v.version}/data.parquet",
        f"datasets/d/versions/{v.version}/manifest.json",
    ]


def test_quarantine(store: Store, digits: Loaded) -> None:
    good = datasets.ingest_frame(store, digits, name="d")
    bad_loaded = Loaded(digits.frame.iloc[:100], "label", "bad")
    bad = datasets.ingest_frame(store, bad_loaded, name="d")
    assert len(datasets.list_versions(store, "d")) == 2
    key = datasets.quarantine(store, bad, "# Data validation: FAILED\n")
    assert key == f"datasets/d/rejected/{bad.version}/report.md"
    assert store.get_bytes(key) == b"# Data validation: FAILED\n"
    assert [v.version for v in datasets.list_versions(store, "d")] == [good.version]
    assert store.list(f"datasets/d/versions/{bad.version}") == []
    assert store.exists(f"datasets/d/rejected/{bad.version}/manifest.json")
    with pytest.raises(DatawheelError, match="not in the store"):
        datasets.get_version(store, "d", bad.version)


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
