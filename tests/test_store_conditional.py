"""Conditional writes on both stores: exclusive create and compare-and-swap, under contention."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SeaweedFS

from datawheel.storage import LocalStore, Store, StoreError, put_json, validate_key
from datawheel.storage.s3 import S3Store, _Headers
from datawheel.storage.settings import S3Settings


def _race(n: int, work: Callable[[int], object]) -> tuple[list[object], list[BaseException]]:
    """Run ``work(i)`` on ``n`` threads released together; results and errors, collected."""
    start = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_create_is_exclusive(store: Store) -> None:
    assert store.create_bytes("a/b", b"first") is True
    assert store.create_bytes("a/b", b"second") is False
    assert store.get_bytes("a/b") == b"first"
    assert store.list("a") == ["a/b"]  # no temp or lock files show


def test_only_one_of_many_concurrent_creates_wins(store: Store) -> None:
    results, errors = _race(8, lambda i: store.create_bytes("race", f"writer {i}".encode()))
    assert errors == []
    assert results.count(True) == 1 and results.count(False) == 7
    assert store.get_bytes("race") == f"writer {results.index(True)}".encode()


def test_compare_and_swap(store: Store) -> None:
    store.put_bytes("k", b"one")
    data, tag = store.get_tagged("k")
    assert data == b"one" and tag
    assert store.replace_bytes("k", b"two", tag) is True
    assert store.replace_bytes("k", b"three", tag) is False  # the tag is stale now
    assert store.get_bytes("k") == b"two"
    _, tag2 = store.get_tagged("k")
    assert tag2 != tag
    assert store.replace_bytes("missing", b"x", tag2) is False
    assert not store.exists("missing")


def test_concurrent_read_modify_write_loses_no_update(store: Store) -> None:
    store.put_bytes("counter", b"0")

    def add(_: int) -> int:
        retries = 0
        for _ in range(5):
            while True:
                data, tag = store.get_tagged("counter")
                if store.replace_bytes("counter", str(int(data) + 1).encode(), tag):
                    break
                retries += 1
        return retries

    _, errors = _race(6, add)
    assert errors == []
    assert int(store.get_bytes("counter")) == 30  # every one of the 30 increments landed


@pytest.mark.parametrize("key", [".hidden", "a/.lock.b", "a/.tmp-x"])
def test_dot_segments_are_reserved_for_the_store(key: str) -> None:
    with pytest.raises(StoreError, match=r"starting with '\.'"):
        validate_key(key)


def test_json_never_holds_nan_or_infinity(store: Store) -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(StoreError, match="non-standard JSON"):
            put_json(store, "m.json", {"std": bad})
    assert not store.exists("m.json")


class _IgnoresConditions(S3Store):
    """An S3 server that ignores If-None-Match / If-Match, as MinIO did before mid-2024: the
    request reaches the real server without the precondition header."""

    def _put_if_raw(self, key: str, data: bytes, headers: _Headers) -> bool:
        return super()._put_if_raw(key, data, {})


def test_a_server_that_ignores_conditional_writes_is_refused(seaweedfs: SeaweedFS) -> None:
    settings = S3Settings(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key)
    store = S3Store.from_uri(f"s3://{seaweedfs.bucket}/t-{uuid.uuid4().hex[:12]}", settings)
    old = _IgnoresConditions(store.client, store.bucket, store.prefix, store.settings)
    with pytest.raises(StoreError, match="ignores conditional writes"):
        old.create_bytes("models/m/versions/v1/claim.json", b"{}")
    assert store.list("") == []  # neither the claim nor the probe was left behind


def test_writes_race_a_delete_that_prunes_their_folder(tmp_path: Path) -> None:
    """LocalStore.delete removes folders left empty; a put or create into the same folder at
    that moment must still land (it once failed with FileNotFoundError)."""
    store = LocalStore(tmp_path / "store")
    stop = threading.Event()

    def pruner(_: int) -> None:
        while not stop.is_set():
            store.delete("d/x/only")

    def writer(i: int) -> None:
        try:
            for n in range(300):
                store.put_bytes(f"d/x/w{i}-{n}", b"data")
                store.delete(f"d/x/w{i}-{n}")
                store.create_bytes(f"d/x/c{i}-{n}", b"data")
                store.delete(f"d/x/c{i}-{n}")
        finally:
            stop.set()

    _, errors = _race(3, lambda i: pruner(i) if i == 0 else writer(i))
    assert errors == []
