"""Hostile input to the CLI and the stores: one line with a fix, nothing made, no secret shown."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import datawheel
from cli_helpers import main_cli as _cli

from datawheel.redact import redact, redact_netloc
from datawheel.storage import KeyNotFoundError, LocalStore, StoreError
from datawheel.storage.s3 import S3Store
from datawheel.storage.settings import S3Settings

LONG = "a" * 300  # past NAME_MAX (255): ENAMETOOLONG wherever it becomes a path


def _one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    (line,) = err.splitlines()
    assert line.startswith("error: ") and ". Fix: " in line and "Traceback" not in line
    for needle in needles:
        assert needle in line, line
    return line


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


READ_ONLY = [
    ("datasets", "list"),
    ("datasets", "list", "--json"),
    ("datasets", "show", "digits"),
    ("models", "list"),
    ("models", "list", "digits"),
    ("models", "show", "digits"),
    ("deploy", "settings", "--model", "digits"),
]


@pytest.mark.parametrize("store", ["file:", "::::", "file:x", "file://", "ftp://x", " "])
def test_a_malformed_store_is_an_error_and_creates_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATAWHEEL_STORE", raising=False)
    for args in READ_ONLY:
        code, _, err = _cli(capsys, *args, "--store", store)
        if store.strip():
            _one_line_error(code, err, f"store {store!r}", "--store file://PATH")
        else:  # a blank --store is no --store: the default store, which is not there
            assert "Traceback" not in err
    assert _tree(tmp_path) == []


@pytest.mark.parametrize(
    "store", ["file://~/dw-store", "file://not-here", "not-here", "file://{tmp}/a/b"]
)
def test_read_only_commands_never_create_a_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store: str,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    store = store.format(tmp=tmp_path)
    for args in READ_ONLY:
        code, out, err = _cli(capsys, *args, "--store", store)
        assert "Traceback" not in err
        if args[1:] == ("list", "--json"):
            assert code == 0 and out == "[]\n"
        elif args[1:] == ("list",):
            assert code == 0 and out.split()[0] in ("dataset", "model")
        elif args[1] == "settings":
            assert code == 0 and "canaries off" in out
        else:
            _one_line_error(code, err, "does not exist")
    assert _tree(tmp_path) == ["home"]


def test_a_name_too_long_for_the_file_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    frame = pd.DataFrame({"a": np.arange(40.0), "label": ["x", "y"] * 20})
    frame.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(capsys, "datasets", "ingest", str(tmp_path / "t.csv"), "--name", "t",
                        "--store", store)  # fmt: skip
    assert code == 0, err
    for args in (
        ("datasets", "show", LONG),
        ("datasets", "list", LONG),
        ("datasets", "show", f"t@{LONG}"),
        ("datasets", "show", f"{LONG}@v1"),
        ("models", "show", LONG),
        ("models", "list", LONG),
        ("models", "show", f"t:{LONG}"),
    ):
        _one_line_error(*_cli(capsys, *args, "--store", store)[::2])


def test_local_store_keys_too_long(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    key = f"datasets/{LONG}/manifest.json"
    with pytest.raises(KeyNotFoundError):
        store.get_bytes(key)
    assert not store.exists(key) and store.list(f"datasets/{LONG}") == []
    store.delete(key)
    assert not (tmp_path / "s").exists()  # reading made nothing
    with pytest.raises(StoreError, match="use a shorter dataset or model name") as caught:
        store.put_bytes(key, b"{}")
    assert "File name too long" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StoreError, match="cannot write"):
        store.create_bytes(key, b"{}")
    store.put_bytes("datasets/ok/manifest.json", b"{}")  # the first write makes the folder
    assert store.get_bytes("datasets/ok/manifest.json") == b"{}"


def test_a_store_that_is_a_file_or_under_one(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        LocalStore(tmp_path / "f")
    under = LocalStore(tmp_path / "f" / "s")
    assert under.list("") == [] and not under.exists("a")
    with pytest.raises(StoreError, match="cannot write 'a' in local store"):
        under.put_bytes("a", b"1")


def test_redact() -> None:
    assert (
        redact("at http://user:SECRET@host:9000/x: refused") == "at http://***@host:9000/x: refused"
    )
    assert (
        redact("'https://tok@git.example/a', s3://bucket/p")
        == "'https://***@git.example/a', s3://bucket/p"
    )
    assert redact("http://u:p@ss@host/") == "http://***@host/"  # an '@' in the password
    assert redact("mail a@b or http://host/a@b") == "mail a@b or http://host/a@b"
    assert redact_netloc("user:SECRET@host:9000") == "***@host:9000"
    assert redact_netloc("host:9000") == "host:9000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(endpoint: str) -> dict[str, str]:
    return {
        "DATAWHEEL_S3_ENDPOINT": endpoint.format(port=_free_port()),
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }


def _no_secret(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Hunter2pw" not in proc.stdout + proc.stderr
    line = _one_line_error(proc.returncode, proc.stderr.strip().splitlines()[-1] + "\n")
    assert "***@127.0.0.1" in line and "AWS_SECRET_ACCESS_KEY" in line, line


@pytest.mark.parametrize(
    "endpoint", ["http://user:Hunter2pw@127.0.0.1:{port}", "user:Hunter2pw@127.0.0.1:{port}"]
)
def test_an_s3_endpoint_with_credentials_never_prints_them(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    for name, value in _env(endpoint).items():
        monkeypatch.setenv(name, value)
    for args in (("datasets", "list"), ("models", "show", "digits", "--json")):
        code, out, err = _cli(capsys, *args, "--store", "s3://bucket/p")
        assert "Hunter2pw" not in out + err
        line = _one_line_error(code, err, "***@127.0.0.1", "AWS_SECRET_ACCESS_KEY")
        if "--json" in args:
            assert line == f"error: {json.loads(out)['error']}. Fix: {json.loads(out)['fix']}."


def test_run_and_serve_never_print_the_endpoints_credentials(tmp_path: Path) -> None:
    env = _env("http://user:Hunter2pw@127.0.0.1:{port}")
    run = ("run", "training", "--local", "--json", "--param", "store=s3://bucket/p")
    _no_secret(datawheel(*run, cwd=tmp_path, env=env, timeout=120))
    serve = ("serve", "--model", "digits", "--port", "0", "--store", "s3://bucket/p")
    _no_secret(datawheel(*serve, cwd=tmp_path, env=env, timeout=120))


def test_s3_errors_mask_credentials_in_the_endpoint() -> None:
    settings = S3Settings(endpoint="user:Hunter2pw@127.0.0.1:1", access_key="k", secret_key="s")
    with pytest.raises(StoreError) as caught:
        S3Store.from_uri("s3://bucket/p", settings=settings)
    assert "Hunter2pw" not in str(caught.value) and "***@127.0.0.1:1" in str(caught.value)


def test_a_kfp_host_with_credentials_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    host = f"http://admin:Hunter2pw@127.0.0.1:{_free_port()}"
    code, out, err = _cli(capsys, "submit", "training", "--host", host, "--store", "s3://w/p")
    assert "Hunter2pw" not in out + err
    _one_line_error(code, err, "http://***@127.0.0.1:")


def test_datawheel_store_default_is_documented_in_every_store_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = [("run", "training"), ("serve",), ("watch",), ("drift",), ("datasets", "list"),
                ("models", "show"), ("flywheel", "harvest"), ("deploy", "settings"),
                ("deploy", "canary"), ("submit", "training"), ("schedule", "training")]  # fmt: skip
    for args in commands:
        code, out, _ = _cli(capsys, *args, "--help")
        assert code == 0 and "$DATAWHEEL_STORE" in " ".join(out.split()), args
