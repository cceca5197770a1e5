"""A recording stand-in for the KFP REST API (v2beta1) on 127.0.0.1.

No KFP server can run here, so this small HTTP server answers what the real kfp.Client
asks (experiments, runs, recurring runs, a run's state) and records every request with its
JSON body, for tests to check what was sent. tests/test_submit.py has the first version.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["KfpApi", "kfp_api"]


@dataclass
class KfpApi:
    url: str
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    run_state: str = "RUNNING"  # what GET /runs/ID answers
    fail_runs: bool = False  # answer POST /runs with a 500

    def posts(self, prefix: str) -> list[Any]:
        return [
            body
            for method, path, body in self.calls
            if method == "POST" and path.split("?")[0] == prefix
        ]


def _handler(api: KfpApi) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, obj: dict[str, Any], code: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            with lock:
                api.calls.append(("GET", self.path, None))
            path = self.path.split("?")[0]
            if path.startswith("/apis/v2beta1/runs/"):
                run_id = path.rsplit("/", 1)[1]
                self._reply({"run_id": run_id, "display_name": run_id, "state": api.run_state})
            else:
                self._reply({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            path = self.path.split("?")[0]
            with lock:
                api.calls.append(("POST", self.path, body))
                n = sum(1 for m, p, _ in api.calls if m == "POST" and p.split("?")[0] == path)
            if path == "/apis/v2beta1/experiments":
                self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
            elif path == "/apis/v2beta1/runs":
                if api.fail_runs:
                    self._reply({"error": "boom", "code": 13}, 500)
                else:
                    self._reply({"run_id": f"run-{n}", "display_name": body["display_name"]})
            elif path == "/apis/v2beta1/recurringruns":
                self._reply({"recurring_run_id": f"rr-{n}", "display_name": body["display_name"]})
            else:
                self._reply({})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def kfp_api() -> Iterator[KfpApi]:
    api = KfpApi("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
