"""A real Prometheus (the Debian package) started on 127.0.0.1 for a test, and its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=promql)["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"no result for {promql} within {timeout}s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def launch_prometheus(config: Path, workdir: Path, timeout: float = 30) -> Prometheus:
    """Start Prometheus on ``config`` (TSDB and log in ``workdir``); return once it answers."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make test` installs the Debian package"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = workdir / "prometheus.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + timeout
    while True:
        try:
            prom.query("up")
            return prom
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                prom.stop()
                raise AssertionError(log.read_text()[-2000:]) from None
            time.sleep(0.2)
