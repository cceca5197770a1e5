"""Harvest: the ledger's labelled predictions become the next version of the dataset.

Real file:// stores, a dataset committed by the real gate, a model in the real registry,
and ledger segments written by the ledger's own writer functions.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from harvest_support import (
    CLASSES,
    DAY,
    FEATURES,
    Ledger,
    new_rows,
    register_version,
    toy_frame,
    toy_store,
)

from datawheel.data import versions as ds
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded
from datawheel.data.validation import ValidationError
from datawheel.errors import DatawheelError
from datawheel.flywheel.harvest import JSON_KEYS, harvest, parse_time
from datawheel.storage import LocalStore

Toy = tuple[LocalStore, ds.DatasetVersion, Ledger]


@pytest.fixture
def toy(tmp_path: Path) -> tuple[LocalStore, ds.DatasetVersion, Ledger]:
    store = LocalStore(tmp_path / "store")
    return store, toy_store(store, tmp_path), Ledger(store)


def _other(label: str) -> str:
    return CLASSES[(CLASSES.index(label) + 1) % len(CLASSES)]


def test_join_latest_label_wins_counts_and_lineage(toy: Toy) -> None:
    store, parent, ledger = toy
    x = new_rows(30)
    predicted = [CLASSES[i % 3] for i in range(30)]
    pids = ledger.predict(x[:20], predicted[:20])
    pids += ledger.predict(x[20:], predicted[20:], ts=DAY + 86400)  # the next day's partition
    # 12 labelled: 5 confirm the prediction, 7 correct it; id 0 is first corrected, then
    # confirmed a minute later: the latest label wins.
    chosen = [0, 1, 2, 3, 4, 20, 21, 22, 23, 24, 25, 26]
    truth = {i: predicted[i] if k < 5 else _other(predicted[i]) for k, i in enumerate(chosen)}
    ledger.label([pids[0]], [_other(predicted[0])], [predicted[0]], ts=DAY + 30)
    ledger.label(
        [pids[i] for i in chosen],
        [truth[i] for i in chosen],
        [predicted[i] for i in chosen],
        ts=DAY + 2 * 86400,
    )
    result = harvest(store, "toy", reason="test run")
    assert result.created and result.outcome == "committed"
    assert (result.labeled_rows, result.confirmations, result.corrections) == (12, 5, 7)
    assert result.conflicts == 0 and result.parent == parent.version
    dv = ds.get_version(store, "toy")  # committed and now the latest
    assert dv.version == result.version and dv.manifest["parent"] == parent.version
    frame = ds.read_frame(store, dv)
    assert len(frame) == 72 and dv.manifest["production_rows"] == [[60, 72]]
    assert frame.iloc[:60].equals(ds.read_frame(store, parent))
    # the appended rows are the labelled inputs, in the dataset's order, oldest label first
    got = {tuple(r[FEATURES]): r["label"] for _, r in frame.iloc[60:].iterrows()}
    assert got == {tuple(x[i]): truth[i] for i in chosen}
    mask = ds.production_mask(dv.manifest, len(frame))
    assert mask.sum() == 12 and mask[60:].all()
    lin = dv.manifest["lineage"]
    assert lin["kind"] == "harvest" and lin["parent"] == parent.version and lin["model"] == "toy"
    assert lin["window"]["since"] is None and lin["window"]["until"].startswith("20")
    assert lin["labels"] == 12 and lin["predictions_seen"] == 30
    assert lin["labels_received"] == 13  # the changed label counts as received twice
    assert lin["model_versions"] == {"v1": 12}
    assert (lin["corrections"], lin["confirmations"], lin["reason"]) == (7, 5, "test run")
    assert len(lin["segments"]) == 4 and lin["skipped_segments"] == []
    assert result.to_json() == {
        "dataset": "toy",
        "version": dv.version,
        "parent": parent.version,
        "labeled_rows": 12,
        "corrections": 7,
        "confirmations": 5,
        "conflicts": 0,
        "created": True,
    }


def test_dedupe_and_conflicts_newest_label_wins(toy: Toy) -> None:
    store, parent, ledger = toy
    base = ds.read_frame(store, parent)
    old = base[FEATURES].to_numpy(np.float32)
    fresh = new_rows(2)
    # rows: parent row 0 with its own label (duplicate), parent row 1 with another label
    # (conflict with the reference data), a new row labelled twice the same (one row), a
    # new row labelled differently by two ids (conflict inside the window)
    x = np.stack([old[0], old[1], fresh[0], fresh[0], fresh[1], fresh[1]])
    predicted = ["a"] * 6
    pids = ledger.predict(x, predicted)
    labels = [base["label"][0], _other(base["label"][1]), "b", "b", "b", "c"]
    ledger.label(pids, labels, predicted)
    result = harvest(store, "toy")
    assert result.created and result.conflicts == 2 and result.labeled_rows == 6
    dv = ds.get_version(store, "toy")
    frame = ds.read_frame(store, dv)
    assert len(frame) == 62  # +1 for fresh[0], +1 for fresh[1]; parent rows relabelled in place
    assert frame["label"][1] == _other(base["label"][1])  # the newest label replaced it
    assert frame["label"][0] == base["label"][0]
    tail = {tuple(r[FEATURES]): r["label"] for _, r in frame.iloc[60:].iterrows()}
    assert tail == {tuple(fresh[0]): "b", tuple(fresh[1]): "c"}  # newest wins in the window
    assert dv.manifest["production_rows"] == [[1, 2], [60, 62]]
    assert dv.manifest["lineage"]["conflicts"] == 2
    assert dv.manifest["lineage"]["duplicates"] == 2  # parent row 0, and fresh[0]'s repeat


def test_the_same_window_twice_creates_nothing(toy: Toy) -> None:
    store, parent, ledger = toy
    x = new_rows(8)
    pids = ledger.predict(x, ["a"] * 8)
    ledger.label(pids, ["a", "b"] * 4, ["a"] * 8)
    first = harvest(store, "toy", since=DAY - 10, until=DAY + 3600)
    again = harvest(store, "toy", since=DAY - 10, until=DAY + 3600)
    assert first.created and first.version and not again.created and again.version is None
    assert again.to_json()["version"] == first.version == again.parent
    assert "nothing new" in again.message and again.labeled_rows == 8
    assert [v.version for v in ds.list_versions(store, "toy")] == [parent.version, first.version]
    # a wider window with no further labels, and validate=False, create nothing either
    wider = harvest(store, "toy", validate=False)
    assert not wider.created and ds.get_candidate(store, "toy", first.version) is None


def test_validate_false_leaves_a_candidate_that_the_gate_commits(toy: Toy) -> None:
    store, parent, ledger = toy
    pids = ledger.predict(new_rows(6), ["a"] * 6)
    ledger.label(pids, ["a", "b", "c"] * 2, ["a"] * 6)
    result = harvest(store, "toy", validate=False)
    assert result.created and result.outcome == "candidate" and result.version
    assert not ds.is_committed(store, "toy", result.version)
    # another version is committed meanwhile: the harvest's parent is still the one it read
    other = ds.ingest_frame(store, Loaded(toy_frame(61), "label", "test:more"), name="toy")
    assert admit(store, "toy", other.version).outcome == "committed"
    admission = admit(store, "toy", result.version)
    assert admission.outcome == "committed"
    assert admission.version.manifest["parent"] == parent.version


def test_an_empty_window_creates_no_version_and_says_so(toy: Toy) -> None:
    store, parent, ledger = toy
    nothing = harvest(store, "toy")  # no ledger at all
    assert not nothing.created and "no new labels" in nothing.message
    pids = ledger.predict(new_rows(4), ["a"] * 4)
    ledger.label(pids, ["b"] * 4, ["a"] * 4, ts=DAY + 60)
    before = harvest(store, "toy", since=DAY - 100, until=DAY + 59)  # labels come later
    assert not before.created and before.labeled_rows == 0 and before.version is None
    assert before.to_json()["version"] == parent.version and "no new labels" in before.message
    assert [v.version for v in ds.list_versions(store, "toy")] == [parent.version]
    with pytest.raises(DatawheelError, match=r"window .* is empty"):
        harvest(store, "toy", since=DAY + 10, until=DAY)


def test_a_corrupt_segment_is_skipped_and_named(toy: Toy) -> None:
    store, _, ledger = toy
    x = new_rows(10)
    good = ledger.predict(x[:6], ["a"] * 6)
    lost = ledger.predict(x[6:], ["a"] * 4, ts=DAY + 5)
    keys = sorted(store.list("ledger/predictions"))
    assert len(keys) == 2
    broken = keys[1]  # the later segment: ``lost``'s rows
    store.put_bytes(broken, store.get_bytes(broken)[:200])  # a truncated upload
    garbage = "ledger/feedback/model=toy/date=2026-05-28/0-deadbeef.parquet"
    store.put_bytes(garbage, b"this is not parquet")
    ledger.label(good + lost, ["b"] * 10, ["a"] * 10)
    result = harvest(store, "toy")
    assert result.created and result.labeled_rows == 6
    skipped = {s["key"] for s in result.skipped_segments}
    assert skipped == {broken, garbage}
    assert broken in result.message and garbage in result.message
    lin = ds.get_version(store, "toy").manifest["lineage"]
    assert lin["unmatched_labels"] == 4 and {s["key"] for s in lin["skipped_segments"]} == skipped


def test_labels_outside_the_classes_are_skipped_and_counted(toy: Toy) -> None:
    store, _, ledger = toy
    pids = ledger.predict(new_rows(6), ["a"] * 6)
    ledger.label(pids, ["b", "zebra", "c", "", "a", "b"], ["a"] * 6)
    result = harvest(store, "toy")
    assert result.created and result.labeled_rows == 4
    lin = ds.get_version(store, "toy").manifest["lineage"]
    assert lin["labels_outside_classes"] == 2 and lin["labels"] == 4
    assert "2 labels outside the model's classes" in result.message and "zebra" in result.message
    assert set(ds.read_frame(store, ds.get_version(store, "toy"))["label"]) == set(CLASSES)


def test_a_version_no_longer_in_the_registry(toy: Toy) -> None:
    store, _, ledger = toy
    x = new_rows(5)
    kept = ledger.predict(x, ["a"] * 5, version="v7")  # v7 was deleted from the registry
    narrow = ledger.predict(new_rows(3, seed=9)[:, :3], ["a"] * 3, version="v8")
    ledger.label(kept, ["b"] * 5, ["a"] * 5, version="v7")
    ledger.label(narrow, ["b"] * 3, ["a"] * 3, version="v8")
    result = harvest(store, "toy")
    assert result.created and result.labeled_rows == 5
    lin = ds.get_version(store, "toy").manifest["lineage"]
    assert lin["unregistered_versions"] == {"v7": 5} and lin["model_versions"] == {"v7": 5}
    assert lin["feature_mismatch"] == 3
    assert "v7 used although that version is no longer in the registry" in result.message
    assert "toy:v8 skipped" in result.message


def test_inputs_are_mapped_by_feature_name(toy: Toy, tmp_path: Path) -> None:
    store, _, ledger = toy
    reordered = register_version(store, tmp_path, FEATURES[::-1])
    x = new_rows(3)
    pids = ledger.predict(x[:, ::-1], ["a"] * 3, version=reordered)  # inputs in v2's order
    ledger.label(pids, ["c"] * 3, ["a"] * 3, version=reordered)
    harvest(store, "toy")
    frame = ds.read_frame(store, ds.get_version(store, "toy"))
    np.testing.assert_array_equal(frame[FEATURES].to_numpy()[60:], x)


def test_a_version_that_fails_validation_is_rejected_not_committed(toy: Toy) -> None:
    store, parent, ledger = toy
    x = new_rows(4) * 50.0  # far outside the reference's ranges
    pids = ledger.predict(x, ["a"] * 4)
    ledger.label(pids, ["b"] * 4, ["a"] * 4)
    with pytest.raises(ValidationError, match="rejected, not committed") as err:
        harvest(store, "toy")
    assert "\n" not in str(err.value) and "range" in str(err.value)
    assert [v.version for v in ds.list_versions(store, "toy")] == [parent.version]
    assert any(k.startswith("datasets/toy/rejected/") for k in store.list("datasets/toy"))


def test_parse_time() -> None:
    assert parse_time("2026-05-28T00:00:00Z") == parse_time("2026-05-28T00:00:00") == 1779926400
    assert parse_time("2026-05-28T02:00:00+02:00") == 1779926400.0
    assert parse_time("1780000000.5") == 1780000000.5
    before = time.time()
    ago = parse_time("2h")
    assert before - 7200 <= ago <= time.time() - 7200
    for bad in ("yesterday", "", "nan", "-5"):
        with pytest.raises(DatawheelError, match="not ISO-8601"):
            parse_time(bad)


def test_the_model_must_be_in_the_registry(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(DatawheelError, match="not in the registry"):
        harvest(store, "nosuch")


def test_json_keys_are_the_issues() -> None:
    assert set(JSON_KEYS) == {
        "dataset", "version", "parent", "labeled_rows", "corrections", "confirmations",
        "conflicts", "created",
    }  # fmt: skip


def test_production_mask_and_ranges_round_trip() -> None:
    mask = np.zeros(10, bool)
    mask[[0, 1, 4, 9]] = True
    ranges = ds.production_ranges(mask)
    assert ranges == [[0, 2], [4, 5], [9, 10]]
    np.testing.assert_array_equal(ds.production_mask({"production_rows": ranges}, 10), mask)
    assert not ds.production_mask({}, 3).any() and ds.production_ranges(np.zeros(0, bool)) == []
    for bad in ([[4, 2]], [[0, 5], [3, 6]], [[8, 11]], [["0", "1"]]):
        with pytest.raises(DatawheelError, match="production_rows entry"):
            ds.production_mask({"production_rows": bad}, 10)
