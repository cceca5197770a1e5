"""The Store contract, run on LocalStore and on S3Store against a real SeaweedFS server."""

from __future__ import annotations

import http.server
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from datawheel.storage import (
    KeyNotFoundError,
    LocalStore,
    Store,
    StoreError,
    get_json,
    open_store,
    put_json,
)
from datawheel.storage.s3 import S3Store
from datawheel.storage.settings import S3Settings

BIG = random.Random(1234).randbytes(6 * 1024 * 1024 + 123)  # > 5 MiB: S3 multipart upload
S3_ENV_VARS = (
    "DATAWHEEL_S3_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "MINIO_ENDPOINT",
    "DATAWHEEL_S3_SECURE",
    "AWS_ACCESS_KEY_ID",
    "MINIO_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "AWS_REGION",
)


class S3Server(Protocol):
    """What the ``seaweedfs``/``s3_env`` fixtures (tests/conftest.py) provide."""

    endpoint: str
    bucket: str


BAD_KEYS = ["../x", "/abs", "a/../b", "", "a//b", "a/", "./x", "a/./b", "a/.", "a\\b", "a\x00b"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in S3_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# ---------------------------------------------------------------- contract, both stores


def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.uri.startswith(("file://", "s3://"))


@pytest.mark.parametrize(
    "data", [b"", b"hello", bytes(range(256)), BIG], ids=["empty", "small", "binary", "6MiB"]
)
def test_put_get_roundtrip(store: Store, data: bytes) -> None:
    store.put_bytes("dir/sub/obj.bin", data)
    got = store.get_bytes("dir/sub/obj.bin")
    assert len(got) == len(data)
    assert got == data


def test_overwrite_replaces_whole_object(store: Store) -> None:
    store.put_bytes("k", b"x" * 1000)
    store.put_bytes("k", b"short")
    assert store.get_bytes("k") == b"short"
    store.put_bytes("k", BIG)
    assert store.get_bytes("k") == BIG
    assert store.list() == ["k"]


def test_get_missing_raises_key_not_found(store: Store) -> None:
    with pytest.raises(KeyNotFoundError, match="nope/missing"):
        store.get_bytes("nope/missing")
    store.put_bytes("a/b", b"1")
    with pytest.raises(KeyNotFoundError):  # a "folder" is not an object
        store.get_bytes("a")
    assert issubclass(KeyNotFoundError, StoreError)


def test_exists(store: Store) -> None:
    assert not store.exists("a/b")
    store.put_bytes("a/b", b"")
    assert store.exists("a/b")
    assert not store.exists("a")  # only a prefix of a key
    assert not store.exists("a/b/c")
    store.delete("a/b")
    assert not store.exists("a/b")


def test_list_is_recursive_sorted_relative_and_prefix_exact(store: Store) -> None:
    keys = ["z", "a/c", "a/bc/x", "a/b/2/deep", "a/b/1", "ab"]
    for k in keys:
        store.put_bytes(k, k.encode())
    assert store.list() == sorted(keys)
    assert store.list("") == sorted(keys)
    expected_ab = ["a/b/1", "a/b/2/deep"]
    assert store.list("a/b") == expected_ab  # not "a/bc/x"
    assert store.list("a/b/") == expected_ab
    assert store.list("a") == ["a/b/1", "a/b/2/deep", "a/bc/x", "a/c"]  # not "ab"
    assert store.list("a/b/2") == ["a/b/2/deep"]
    assert store.list("a/c") == []  # a key is not a prefix of itself
    assert store.list("nothing/here") == []


def test_list_of_empty_store(store: Store) -> None:
    assert store.list() == []


def test_list_rejects_climbing_prefix(store: Store) -> None:
    with pytest.raises(StoreError):
        store.list("../other")


def test_delete(store: Store) -> None:
    store.put_bytes("d/one", b"1")
    store.put_bytes("d/two", b"2")
    store.delete("d/one")
    assert not store.exists("d/one")
    with pytest.raises(KeyNotFoundError):
        store.get_bytes("d/one")
    assert store.list() == ["d/two"]
    store.delete("d/one")  # missing: fine
    store.delete("never/was")
    assert store.get_bytes("d/two") == b"2"


def test_delete_of_a_prefix_is_a_noop(store: Store) -> None:
    store.put_bytes("p/q/r", b"keep")
    store.delete("p/q")  # no object named p/q; must not touch p/q/r
    store.delete("p")
    assert store.get_bytes("p/q/r") == b"keep"
    assert store.list() == ["p/q/r"]


def test_put_file_get_file(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(BIG)
    store.put_file("files/big.bin", src)
    assert store.get_bytes("files/big.bin") == BIG
    dst = tmp_path / "out" / "nested" / "big.bin"  # parent folders do not exist yet
    store.get_file("files/big.bin", dst)
    assert dst.read_bytes() == BIG
    store.put_bytes("files/small", b"v2")
    store.get_file("files/small", dst)  # overwrites
    assert dst.read_bytes() == b"v2"
    missing = tmp_path / "missing.bin"
    with pytest.raises(KeyNotFoundError):
        store.get_file("files/missing", missing)
    assert not missing.exists()
    assert [p.name for p in dst.parent.iterdir()] == ["big.bin"]  # no temp files left


def test_put_json_get_json(store: Store) -> None:
    obj = {"b": [1, 2.5, None, True], "a": {"nested": "ü"}, "n": 0}
    put_json(store, "meta/obj.json", obj)
    assert get_json(store, "meta/obj.json") == obj
    raw = store.get_bytes("meta/obj.json")
    assert json.loads(raw) == obj
    assert raw.index(b'"a"') < raw.index(b'"b"')  # sorted keys


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: Store, key: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for op in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.put_file(key, src),
        lambda: store.get_file(key, tmp_path / "out"),
    ):
        with pytest.raises(StoreError) as info:
            op()
        assert not isinstance(info.value, KeyNotFoundError)
        assert "\n" not in str(info.value)
    assert store.list() == []
    assert not (tmp_path / "x").exists()  # "../x" did not escape the LocalStore root


# ---------------------------------------------------------------- LocalStore specifics


def test_local_put_is_atomic_under_concurrent_reads(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    payload_a = b"A" * (3 << 20)
    payload_b = b"B" * ((2 << 20) + 7)  # different length too: a torn read cannot match
    store.put_bytes("obj", payload_a)
    stop = threading.Event()
    seen: list[dict[str, int]] = []
    failures: list[str] = []

    def reader() -> None:
        counts = {"a": 0, "b": 0}
        seen.append(counts)
        while not stop.is_set():
            try:
                data = store.get_bytes("obj")
            except Exception as exc:
                failures.append(repr(exc))
                continue
            if data == payload_a:
                counts["a"] += 1
            elif data == payload_b:
                counts["b"] += 1
            else:
                failures.append(f"torn read of {len(data)} bytes")

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        deadline = time.monotonic() + 1.5
        i = 0
        while i < 20 or time.monotonic() < deadline:
            store.put_bytes("obj", payload_b if i % 2 == 0 else payload_a)
            i += 1
            time.sleep(0.002)
            if i >= 400:
                break
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not failures, f"{len(failures)} bad reads, e.g. {failures[:3]}"
    assert sum(c["a"] for c in seen) > 0
    assert sum(c["b"] for c in seen) > 0
    assert store.list() == ["obj"]
    assert [p.name for p in tmp_path.iterdir()] == ["obj"]  # no temp files left behind


def test_open_store_file_and_bare_path(tmp_path: Path) -> None:
    s1 = open_store(f"file://{tmp_path / 's'}")
    s1.put_bytes("k", b"v")
    s2 = open_store(str(tmp_path / "s"))
    assert isinstance(s2, LocalStore)
    assert s2.get_bytes("k") == b"v"


def test_open_store_unknown_scheme() -> None:
    with pytest.raises(StoreError, match="gs") as info:
        open_store("gs://x")
    assert "s3://" in str(info.value)  # the fix names what is supported


# ---------------------------------------------------------------- S3Store specifics


def test_open_store_s3_uses_env_and_prefix(s3_env: S3Server) -> None:
    prefix = f"env-{uuid.uuid4().hex[:8]}/deep"
    store = open_store(f"s3://{s3_env.bucket}/{prefix}/")
    assert isinstance(store, S3Store)
    assert store.uri == f"s3://{s3_env.bucket}/{prefix}"
    store.put_bytes("x/y", b"1")
    root = open_store(f"s3://{s3_env.bucket}")
    assert f"{prefix}/x/y" in root.list()
    assert root.get_bytes(f"{prefix}/x/y") == b"1"
    other = open_store(f"s3://{s3_env.bucket}/{prefix}-sibling")
    assert other.list() == []  # stores with sibling prefixes do not leak into each other


def test_s3_creates_missing_bucket(s3_env: S3Server) -> None:
    bucket = f"dw-new-{uuid.uuid4().hex[:10]}"
    store = open_store(f"s3://{bucket}")
    assert isinstance(store, S3Store)
    assert store.client.bucket_exists(bucket)
    store.put_bytes("k", b"v")
    assert store.list() == ["k"]
    assert open_store(f"s3://{bucket}").get_bytes("k") == b"v"  # reopening is fine


@pytest.mark.parametrize(
    "uri",
    ["s3://", "s3:///p", "s3://Bad_Bucket/p", "s3://ab/p", "s3://b-ok/../x", "s3://b-ok/a//b"],
)
def test_s3_bad_uri(clean_env: pytest.MonkeyPatch, uri: str) -> None:
    with pytest.raises(StoreError):
        open_store(uri)


def test_s3_unreachable_endpoint_fails_fast(
    clean_env: pytest.MonkeyPatch, closed_port: int
) -> None:
    endpoint = f"127.0.0.1:{closed_port}"
    clean_env.setenv("DATAWHEEL_S3_ENDPOINT", endpoint)
    clean_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        open_store("s3://b-ok/p")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert f"cannot reach S3 endpoint {endpoint}" in message
    assert "DATAWHEEL_S3_ENDPOINT" in message
    assert "\n" not in message


@pytest.mark.parametrize("which", ["secret", "access"])
def test_s3_wrong_credentials(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    name = "AWS_SECRET_ACCESS_KEY" if which == "secret" else "AWS_ACCESS_KEY_ID"
    monkeypatch.setenv(name, "wrong-" + uuid.uuid4().hex)
    with pytest.raises(StoreError) as info:
        open_store(f"s3://{s3_env.bucket}/p")
    message = str(info.value)
    assert "rejected the credentials" in message
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert s3_env.endpoint in message
    assert not isinstance(info.value, KeyNotFoundError)


def test_s3_endpoint_that_is_not_s3(clean_env: pytest.MonkeyPatch) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self) -> None:
            body = b"<html>not s3</html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = _reply

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"127.0.0.1:{server.server_address[1]}"
        clean_env.setenv("DATAWHEEL_S3_ENDPOINT", endpoint)
        clean_env.setenv("AWS_ACCESS_KEY_ID", "k")
        clean_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
        with pytest.raises(StoreError) as info:
            open_store("s3://b-ok/p")
    finally:
        server.shutdown()
        server.server_close()
    message = str(info.value)
    assert endpoint in message and "unexpected answer" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "DATAWHEEL_S3_ENDPOINT"),
        ({"DATAWHEEL_S3_ENDPOINT": "h:1"}, "AWS_ACCESS_KEY_ID"),
        ({"DATAWHEEL_S3_ENDPOINT": "h:1", "AWS_ACCESS_KEY_ID": "k"}, "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}, "DATAWHEEL_S3_ENDPOINT"),
    ],
)
def test_s3_missing_env_names_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], missing: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(StoreError) as info:
        open_store("s3://b-ok/p")
    assert missing in str(info.value)


# ---------------------------------------------------------------- S3Settings


def test_settings_plain_endpoint() -> None:
    env = {"DATAWHEEL_S3_ENDPOINT": "minio:9000", "AWS_ACCESS_KEY_ID": "k"}
    s = S3Settings.from_env({**env, "AWS_SECRET_ACCESS_KEY": "topsecret"})
    assert (s.endpoint, s.access_key, s.secret_key) == ("minio:9000", "k", "topsecret")
    assert (s.secure, s.region) == (False, None)
    assert "topsecret" not in repr(s)  # the secret stays out of logs and tracebacks


@pytest.mark.parametrize(
    ("endpoint", "secure_env", "expected"),
    [
        ("https://s3.example.com", None, ("s3.example.com", True)),
        ("https://s3.example.com:443/", None, ("s3.example.com:443", True)),
        ("http://minio:9000", None, ("minio:9000", False)),
        ("minio:9000", "true", ("minio:9000", True)),
        ("https://minio:9000", "0", ("minio:9000", False)),
        ("minio:9000", "", ("minio:9000", False)),
    ],
)
def test_settings_scheme_and_secure(
    endpoint: str, secure_env: str | None, expected: tuple[str, bool]
) -> None:
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    if secure_env is not None:
        env["DATAWHEEL_S3_SECURE"] = secure_env
    s = S3Settings.from_env(env)
    assert (s.endpoint, s.secure) == expected


def test_settings_fallbacks_and_precedence() -> None:
    s = S3Settings.from_env(
        {
            "DATAWHEEL_S3_ENDPOINT": "first:1",
            "AWS_ENDPOINT_URL": "http://second:2",
            "MINIO_ACCESS_KEY": "mk",
            "MINIO_SECRET_KEY": "ms",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert (s.endpoint, s.access_key, s.secret_key, s.region) == (
        "first:1",
        "mk",
        "ms",
        "eu-west-1",
    )
    env = {"MINIO_ENDPOINT": "m:9", "AWS_ACCESS_KEY_ID": "a", "MINIO_ACCESS_KEY": "b"}
    s = S3Settings.from_env({**env, "AWS_SECRET_ACCESS_KEY": "c"})
    assert (s.endpoint, s.access_key, s.secret_key) == ("m:9", "a", "c")


def test_settings_keys_from_files_as_kubernetes_mounts_a_secret(tmp_path: Path) -> None:
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("from-file\n")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("secret-from-file\n")
    s = S3Settings.from_env(
        {
            "DATAWHEEL_S3_ENDPOINT": "minio:9000",
            "AWS_ACCESS_KEY_ID_FILE": str(tmp_path / "AWS_ACCESS_KEY_ID"),
            "AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "AWS_SECRET_ACCESS_KEY"),
        }
    )
    assert (s.access_key, s.secret_key) == ("from-file", "secret-from-file")
    with pytest.raises(StoreError, match=r"AWS_SECRET_ACCESS_KEY_FILE=.* cannot be read") as info:
        S3Settings.from_env(
            {
                "DATAWHEEL_S3_ENDPOINT": "minio:9000",
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "missing"),
            }
        )
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DATAWHEEL_S3_ENDPOINT": "ftp://h:1"}, "DATAWHEEL_S3_ENDPOINT"),
        ({"DATAWHEEL_S3_ENDPOINT": "http://h:1/path"}, "DATAWHEEL_S3_ENDPOINT"),
        ({"DATAWHEEL_S3_ENDPOINT": "h:1", "DATAWHEEL_S3_SECURE": "maybe"}, "DATAWHEEL_S3_SECURE"),
    ],
)
def test_settings_invalid(env: dict[str, str], needle: str) -> None:
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", **env}
    with pytest.raises(StoreError, match=needle):
        S3Settings.from_env(env)
