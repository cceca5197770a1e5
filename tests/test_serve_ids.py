"""Prediction ids: what an id says is verified with the key, and every replica finds the key."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from datawheel.errors import DatawheelError
from datawheel.serving.ids import (
    KEY_ENV,
    IssuedId,
    PredictionIds,
    id_key_path,
    is_legacy_id,
    load_id_key,
)
from datawheel.storage import LocalStore

KEY = b"k" * 32


def test_an_issued_id_says_its_version_time_and_class() -> None:
    ids = PredictionIds("digits", KEY)
    now = time.time()
    issued = ids.issue("v12", now, [3, 0, 9, 3])
    assert len(set(issued)) == 4  # the nonce tells apart rows of one batch predicting alike
    for pid, index in zip(issued, [3, 0, 9, 3], strict=True):
        found = ids.verify(pid)
        assert isinstance(found, IssuedId)
        assert (found.version, found.class_index) == ("v12", index)
        assert abs(found.issued_at - now) < 0.002  # milliseconds
        assert not is_legacy_id(pid)
    # another process with the same key (another replica) verifies them too
    assert PredictionIds("digits", KEY).verify(issued[0]) == ids.verify(issued[0])


def _swap(pid: str, at: int, char: str) -> str:
    return pid[:at] + char + pid[at + 1 :]


def test_altered_forged_or_foreign_ids_do_not_verify() -> None:
    ids = PredictionIds("digits", KEY)
    (pid,) = ids.issue("v1", time.time(), [4])
    version, ms, index, nonce, tag = pid.split(".")
    altered = [
        f"v2.{ms}.{index}.{nonce}.{tag}",  # another version
        f"{version}.{ms}.5.{nonce}.{tag}",  # another class
        f"{version}.{int(ms, 16) + 1:x}.{index}.{nonce}.{tag}",  # another time
        f"{version}.{ms}.{index}.{_swap(nonce, 0, 'f' if nonce[0] != 'f' else 'e')}.{tag}",
        f"{version}.{ms}.{index}.{nonce}.{_swap(tag, 31, '0' if tag[31] != '0' else '1')}",
        f"{version}.{ms}.{index}.{nonce}.{tag.upper()}",
        f"{version}.{ms}.{index}.{nonce}.{tag[:16]}",  # a shorter tag is no tag
        pid + "\n",
        pid + ".",
        " " + pid,
        "",
        "nope",
        "0" * 32,
    ]
    assert [ids.verify(p) for p in altered] == [None] * len(altered)
    assert PredictionIds("digits", b"another key of 32 bytes........").verify(pid) is None
    assert PredictionIds("iris", KEY).verify(pid) is None  # the model name is signed too
    assert ids.verify(pid) is not None


def test_legacy_ids_are_32_lowercase_hex() -> None:
    assert is_legacy_id("0123456789abcdef" * 2)
    assert not is_legacy_id("0123456789ABCDEF" * 2)
    assert not is_legacy_id("0123456789abcdef" * 2 + "\n")
    assert not is_legacy_id("0123456789abcdef")


def test_a_short_key_is_refused_with_the_fix() -> None:
    with pytest.raises(DatawheelError, match="openssl rand"):
        PredictionIds("digits", b"short")


def test_the_key_comes_from_the_environment_or_a_mounted_secret(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key, source = load_id_key(store, "digits", {KEY_ENV: " " + "a" * 40 + "\n"})
    assert key == b"a" * 40 and source == f"${KEY_ENV}"
    secret = tmp_path / "secret"
    secret.write_text("b" * 40 + "\n")
    key, source = load_id_key(store, "digits", {f"{KEY_ENV}_FILE": str(secret)})
    assert key == b"b" * 40 and str(secret) in source
    assert not store.exists(id_key_path("digits"))  # a configured key writes nothing
    assert (
        load_id_key(store, "digits", {KEY_ENV: "c" * 40, f"{KEY_ENV}_FILE": str(secret)})[0]
        == b"c" * 40
    )  # the value wins over the file
    with pytest.raises(DatawheelError, match=f"{KEY_ENV}_FILE=.*cannot be read"):
        load_id_key(store, "digits", {f"{KEY_ENV}_FILE": str(tmp_path)})  # a folder
    # an optional Secret that was not created mounts no file: the store's key is used
    key, source = load_id_key(store, "digits", {f"{KEY_ENV}_FILE": str(tmp_path / "missing")})
    assert key == store.get_bytes(id_key_path("digits")) and "does not exist" in source
    store.delete(id_key_path("digits"))
    secret.write_text("\n")
    with pytest.raises(DatawheelError, match="is empty"):
        load_id_key(store, "digits", {f"{KEY_ENV}_FILE": str(secret)})


def test_without_configuration_replicas_share_one_key_kept_in_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    found: list[bytes] = []

    def replica() -> None:  # each with its own store object, all starting at once
        found.append(load_id_key(LocalStore(root), "digits", {})[0])

    threads = [threading.Thread(target=replica) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1 and len(found[0]) == 64
    assert LocalStore(root).get_bytes(id_key_path("digits")) == found[0]
    assert load_id_key(LocalStore(root), "iris", {})[0] != found[0]  # one key per model
    LocalStore(root).put_bytes(id_key_path("digits"), b"tiny")
    with pytest.raises(DatawheelError, match="delete it"):
        load_id_key(LocalStore(root), "digits", {})
