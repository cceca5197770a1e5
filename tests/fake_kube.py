"""A fake Kubernetes API server, limited to apps/v1 Deployments, that records every request.

A real HTTP server on 127.0.0.1 with an in-memory store: the ``kubernetes`` client talks to
it exactly as to a cluster, and tests assert on the requests it sent. Pods become ready at
once (``status.readyReplicas = spec.replicas``), except for Deployments named in
``never_ready``. Patches are applied as JSON merge patches, which for the fields a canary
touches (replicas, annotations) is what a strategic-merge patch does.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_PATH = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$")


NAME_LABEL = "app.kubernetes.io/name"


def stable_deployment(replicas: int = 4, model_args: list[str] | None = None) -> dict[str, Any]:
    """The serving Deployment as manifests/base declares it (see the shared conventions)."""
    pod_labels = {
        NAME_LABEL: "datawheel-serve",
        "app.kubernetes.io/part-of": "datawheel",
        "app.kubernetes.io/component": "serving",
        "datawheel.dev/track": "stable",
    }
    args = model_args or ["serve", "--model", "$(DATAWHEEL_MODEL)@champion"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "datawheel-serve",
            "namespace": "datawheel",
            "labels": {NAME_LABEL: "datawheel-serve", "app.kubernetes.io/part-of": "datawheel"},
            "resourceVersion": "12345",
            "uid": "0b1c",
            "generation": 3,
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": {NAME_LABEL: "datawheel-serve", "datawheel.dev/track": "stable"}
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": "datawheel-serve",
                    "containers": [
                        {
                            "name": "serve",
                            "image": "ghcr.io/datawheel/datawheel:0.1.0",
                            "args": [
                                *args,
                                "--store",
                                "$(DATAWHEEL_STORE)",
                                "--host",
                                "0.0.0.0",
                                "--port",
                                "8080",
                            ],
                            "ports": [{"name": "http", "containerPort": 8080}],
                        },
                        {"name": "sidecar", "image": "busybox", "args": ["--model", "x"]},
                    ],
                },
            },
        },
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }


@dataclass(frozen=True)
class Request:
    method: str
    name: str | None  # the Deployment, None for a POST to the collection
    query: dict[str, list[str]]
    content_type: str
    body: Any


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class FakeKube:
    namespace: str = "datawheel"
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    never_ready: set[str] = field(default_factory=set)
    # called after each request, under the lock: stand-ins for controllers (an HPA, say)
    hooks: list[Callable[[FakeKube, Request], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKube:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, doc = fake.handle(
                    self.command,
                    url.path,
                    parse_qs(url.query),
                    self.headers.get("Content-Type", ""),
                    json.loads(raw) if raw else None,
                )
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file whose current context points at this server."""
        path.write_text(
            json.dumps(  # JSON is YAML
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "tester"}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    # --- the API ---------------------------------------------------------------------------

    def settle(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with the status its controller would report once the pods are up."""
        replicas = int(doc["spec"].get("replicas", 1))
        ready = 0 if doc["metadata"]["name"] in self.never_ready else replicas
        return {**doc, "status": {"replicas": replicas, "readyReplicas": ready}}

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        match = _PATH.match(path)
        if not match or match.group(1) != self.namespace:
            return 404, _not_found(path)
        name = match.group(2)
        with self._lock:
            request = Request(method, name, query, content_type, body)
            self.requests.append(request)
            try:
                return self._apply(method, name, body)
            finally:
                for hook in self.hooks:
                    hook(self, request)

    def _apply(self, method: str, name: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "POST" and name is None:
            created = body["metadata"]["name"]
            if created in self.deployments:
                return 409, {"kind": "Status", "code": 409, "message": "already exists"}
            meta = {**body["metadata"], "uid": str(uuid.uuid4()), "resourceVersion": "1"}
            self.deployments[created] = self.settle({**body, "metadata": meta})
            return 201, self.deployments[created]
        if name is None or name not in self.deployments:
            return 404, _not_found(f"deployments.apps {name!r}")
        if method == "GET":
            return 200, self.deployments[name]
        if method == "PATCH":
            self.deployments[name] = self.settle(merge_patch(self.deployments[name], body))
            return 200, self.deployments[name]
        if method == "DELETE":
            del self.deployments[name]
            return 200, {"kind": "Status", "status": "Success"}
        return 405, {"kind": "Status", "code": 405, "message": f"{method} not supported"}

    def sent(self, method: str | None = None) -> list[Request]:
        """Requests received (of one method), oldest first."""
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]


def _not_found(what: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f"{what} not found",
        "reason": "NotFound",
        "code": 404,
    }
