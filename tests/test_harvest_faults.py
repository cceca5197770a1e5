"""Harvest under faults: a store that fails mid-harvest, and the same harvest on real S3.

Whatever fails, no partial version is ever committed, and running the harvest again
afterwards makes exactly the one version the labels give.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from failing_store import FailingStore
from harvest_support import DAY, Ledger, new_rows, toy_store

from datawheel.data import versions as ds
from datawheel.errors import DatawheelError
from datawheel.flywheel.harvest import harvest
from datawheel.storage import LocalStore, Store


class _FailCommit(FailingStore):
    """Writes the candidate, then fails creating the commit marker under versions/."""

    def create_bytes(self, key: str, data: bytes) -> bool:
        if "/versions/" in key and key.endswith("manifest.json"):
            raise OSError(f"injected failure creating {key}")
        return self.inner.create_bytes(key, data)


class _FailReads(FailingStore):
    """The store goes away after the first prediction segment has been read."""

    reads = 0

    def get_bytes(self, key: str) -> bytes:
        if key.startswith("ledger/predictions/"):
            self.reads += 1
            if self.reads > 1:
                raise ConnectionError("connection refused")
        return self.inner.get_bytes(key)


def _labelled_store(tmp_path: Path) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path / "store")
    parent = toy_store(store, tmp_path)
    ledger = Ledger(store)
    pids = ledger.predict(new_rows(5), ["a"] * 5)
    pids += ledger.predict(new_rows(5, seed=2), ["a"] * 5, ts=DAY + 86400)
    ledger.label(pids, ["b"] * 10, ["a"] * 10, ts=DAY + 2 * 86400)
    return store, parent.version


def _committed(store: Store) -> list[str]:
    return [v.version for v in ds.list_versions(store, "toy")]


@pytest.mark.parametrize("failing", ["candidate", "commit"])
def test_a_store_failing_mid_write_commits_nothing_and_a_retry_commits_once(
    tmp_path: Path, failing: str
) -> None:
    store, parent = _labelled_store(tmp_path)
    broken = (
        FailingStore(store, "manifest.json") if failing == "candidate" else _FailCommit(store, "-")
    )
    with pytest.raises(DatawheelError) as err:
        harvest(broken, "toy")  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and "failed while writing toy's new version" in message
    assert "injected failure" in message and "run the harvest again" in message
    assert _committed(store) == [parent]  # nothing partial is visible
    if failing == "candidate":  # ingest cleaned up after itself
        assert not [k for k in store.list("datasets/toy") if "/candidates/" in k]
    retried = harvest(store, "toy")
    assert retried.created and _committed(store) == [parent, retried.version]
    assert harvest(store, "toy").created is False  # and not a second time


def test_a_store_unreachable_while_reading_the_ledger(tmp_path: Path) -> None:
    store, parent = _labelled_store(tmp_path)
    with pytest.raises(DatawheelError) as err:
        harvest(_FailReads(store, "-"), "toy")  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and "failed while reading ledger/predictions/" in message
    assert "connection refused" in message and "no dataset version was committed" in message
    assert _committed(store) == [parent]
    assert not [k for k in store.list("datasets/toy") if "/candidates/" in k]
    assert harvest(store, "toy").labeled_rows == 10  # the ledger lost nothing


def test_harvest_on_seaweedfs_s3(seaweedfs: Any, tmp_path: Path) -> None:
    from datawheel.storage.s3 import S3Store
    from datawheel.storage.settings import S3Settings

    server = seaweedfs
    settings = S3Settings(server.endpoint, server.access_key, server.secret_key)
    uri = f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}/harvest"
    store = S3Store.from_uri(uri, settings)
    parent = toy_store(store, tmp_path)
    ledger = Ledger(store)
    pids = ledger.predict(new_rows(8), ["a"] * 8)
    bad = "ledger/predictions/model=toy/date=2026-05-28/1-cafef00d.parquet"
    store.put_bytes(bad, b"PAR1 torn upload")
    ledger.label(pids, ["b", "c"] * 4, ["a"] * 8)
    first = harvest(store, "toy")
    assert first.created and first.labeled_rows == 8 and first.corrections == 8
    assert [s["key"] for s in first.skipped_segments] == [bad]
    assert ds.get_version(store, "toy").manifest["production_rows"] == [[60, 68]]
    again = harvest(store, "toy")
    assert not again.created and again.to_json()["version"] == first.version
    assert _committed(store) == [parent.version, first.version]
