"""A recording stand-in for the KFP REST API (v2beta1) on 127.0.0.1.

No KFP server can run here, so this small HTTP server answers what the real kfp.Client (and
so kfp's own CLI) asks: health, experiments, pipeline upload and versions, runs, recurring
runs, a run's state. It keeps what was created, like the real API, and records every
request with its JSON body (an uploaded package as its parsed YAML), for tests to check
what was sent. It refuses what the real API server refuses, with the same 4xx: a run or
recurring run whose pipeline is neither a spec nor a known pipeline *and* version, an
unknown experiment, a parameter the pipeline does not declare, a recurring run with no
trigger, an upload that is not a pipeline spec. Refusals are in ``refused``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

__all__ = ["KfpApi", "kfp_api"]

_CREATED = "2026-12-01T00:00:00Z"


@dataclass
class KfpApi:
    url: str
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    run_state: str = "RUNNING"  # what GET /runs/ID answers
    fail_runs: bool = False  # answer POST /runs with a 500
    multi_user: bool = False  # multi-user Kubeflow: experiments need a profile namespace
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of each 4xx
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> version (+spec)

    def posts(self, prefix: str) -> list[Any]:
        return [
            body
            for method, path, body in self.calls
            if method == "POST" and path.split("?")[0] == prefix
        ]


class _Refused(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


def _declared(spec: dict[str, Any]) -> set[str]:
    root = spec.get("root", {})
    return set(root.get("inputDefinitions", {}).get("parameters", {}))


def _check_parameters(spec: dict[str, Any] | None, body: dict[str, Any]) -> None:
    given = set((body.get("runtime_config") or {}).get("parameters") or {})
    if spec is not None and (unknown := given - _declared(spec)):
        raise _Refused(400, f"parameters not in the pipeline: {sorted(unknown)}")


def _multipart_file(content_type: str, raw: bytes) -> bytes:
    match = re.search(r"boundary=(\"?)([^\";]+)\1", content_type)
    if not match:
        raise _Refused(400, "upload is not multipart/form-data")
    for part in raw.split(b"--" + match.group(2).encode()):
        head, sep, payload = part.partition(b"\r\n\r\n")
        if sep and b"filename=" in head:
            return payload.rsplit(b"\r\n", 1)[0]
    raise _Refused(400, "upload carries no file")


def _handler(api: KfpApi) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    def count(path: str) -> int:
        return sum(1 for m, p, _ in api.calls if m == "POST" and p.split("?")[0] == path)

    def spec_of(body: dict[str, Any]) -> dict[str, Any] | None:
        """The run's pipeline spec: inline, or the known version it references."""
        if body.get("pipeline_spec"):
            spec: dict[str, Any] = body["pipeline_spec"]
            if "pipeline_spec" in spec:  # a package with a platform spec: both, wrapped
                spec = spec["pipeline_spec"]
            if "pipelineInfo" not in spec or "root" not in spec:
                raise _Refused(400, "pipeline_spec is not a compiled pipeline")
            return spec
        ref = body.get("pipeline_version_reference") or {}
        pid, vid = ref.get("pipeline_id"), ref.get("pipeline_version_id")
        if not pid or not vid:
            raise _Refused(400, "needs pipeline_spec, or pipeline_id and pipeline_version_id")
        if pid not in api.pipelines or vid not in api.versions:
            raise _Refused(404, f"no pipeline {pid} version {vid}")
        found: dict[str, Any] = api.versions[vid]["spec"]
        return found

    def check_experiment(body: dict[str, Any]) -> None:
        exp = body.get("experiment_id")
        if exp and exp not in api.experiments:
            raise _Refused(404, f"no experiment {exp}")

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
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            if path == "/apis/v2beta1/healthz":
                self._reply(
                    {"commit_sha": "recorder", "tag_name": "2.5.0", "multi_user": api.multi_user}
                )
            elif path.startswith("/apis/v2beta1/runs/"):
                run_id = path.rsplit("/", 1)[1]
                self._reply(
                    {
                        "run_id": run_id,
                        "display_name": run_id,
                        "state": api.run_state,
                        "created_at": _CREATED,
                    }
                )
            elif path == "/apis/v2beta1/experiments":
                self._reply({"experiments": _named(api.experiments, query)})
            elif path == "/apis/v2beta1/pipelines":
                self._reply({"pipelines": _named(api.pipelines, query)})
            elif m := re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", path):
                found = [
                    {k: v for k, v in ver.items() if k != "spec"}
                    for ver in api.versions.values()
                    if ver["pipeline_id"] == m.group(1)
                ]
                self._reply({"pipeline_versions": found, "total_size": len(found)})
            else:
                self._reply({})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            url = urlsplit(self.path)
            path, query = url.path, parse_qs(url.query)
            try:
                with lock:
                    if path == "/apis/v2beta1/pipelines/upload":
                        docs = list(
                            yaml.safe_load_all(
                                _multipart_file(self.headers.get("Content-Type", ""), raw)
                            )
                        )  # a compiled package: the pipeline spec, then its platform spec
                        body: Any = docs[0] if docs else None
                    else:
                        body = json.loads(raw or b"{}")
                    api.calls.append(("POST", self.path, body))
                    code, answer = self._create(path, query, body)
            except _Refused as exc:
                api.refused.append((path, exc.why))
                code, answer = exc.code, {"error_message": exc.why, "code": 3}
            self._reply(answer, code)

        def _create(
            self, path: str, query: dict[str, list[str]], body: Any
        ) -> tuple[int, dict[str, Any]]:
            n = count(path)
            if path == "/apis/v2beta1/experiments":
                if api.multi_user and not body.get("namespace"):
                    raise _Refused(400, "in multi-user mode an experiment needs a namespace")
                exp = {
                    "experiment_id": f"exp-{n}",
                    "display_name": body["display_name"],
                    "namespace": body.get("namespace", ""),
                    "created_at": _CREATED,
                    "storage_state": "AVAILABLE",
                }
                api.experiments[exp["experiment_id"]] = exp
                return 200, exp
            if path == "/apis/v2beta1/pipelines/upload":
                if not isinstance(body, dict) or "pipelineInfo" not in body:
                    raise _Refused(400, "the uploaded file is not a compiled pipeline")
                name = (query.get("name") or [body["pipelineInfo"]["name"]])[0]
                if any(p["display_name"] == name for p in api.pipelines.values()):
                    raise _Refused(409, f"a pipeline named {name!r} exists")
                pid = f"pl-{n}"
                pipeline = {"pipeline_id": pid, "display_name": name, "created_at": _CREATED}
                api.pipelines[pid] = pipeline
                vid = f"pv-{len(api.versions) + 1}"
                api.versions[vid] = {
                    "pipeline_id": pid,
                    "pipeline_version_id": vid,
                    "display_name": name,
                    "created_at": _CREATED,
                    "spec": body,
                }
                return 200, pipeline
            if path == "/apis/v2beta1/runs":
                if api.fail_runs:
                    return 500, {"error": "boom", "code": 13}
                check_experiment(body)
                _check_parameters(spec_of(body), body)
                return 200, {
                    "run_id": f"run-{n}",
                    "display_name": body["display_name"],
                    "experiment_id": body.get("experiment_id", ""),
                    "state": "PENDING",
                    "created_at": _CREATED,
                    "storage_state": "AVAILABLE",
                }
            if path == "/apis/v2beta1/recurringruns":
                check_experiment(body)
                _check_parameters(spec_of(body), body)
                trigger = body.get("trigger") or {}
                if not (trigger.get("cron_schedule") or trigger.get("periodic_schedule")):
                    raise _Refused(400, "a recurring run needs a cron or periodic trigger")
                if cron := (trigger.get("cron_schedule") or {}).get("cron"):
                    fields = cron.split()
                    if len(fields) != 6:  # KFP's cron has a seconds field first
                        raise _Refused(400, f"cron {cron!r} needs 6 fields (seconds first)")
                return 200, {
                    "recurring_run_id": f"rr-{n}",
                    "display_name": body["display_name"],
                    "status": body.get("status") or "ENABLED",
                    "created_at": _CREATED,
                    "trigger": trigger,
                }
            return 200, {}

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _named(items: dict[str, dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``items`` filtered as the API filters by display_name (the predicate kfp.Client sends)."""
    namespace = (query.get("namespace") or [""])[0]
    if namespace:  # multi-user: a profile's own experiments only
        items = {k: v for k, v in items.items() if v.get("namespace") == namespace}
    raw = (query.get("filter") or [""])[0]
    if not raw:
        return list(items.values())
    wanted = [
        p.get("string_value", p.get("stringValue"))
        for p in json.loads(raw).get("predicates", [])
        if p.get("key") in ("display_name", "name")
    ]
    return [i for i in items.values() if not wanted or i["display_name"] in wanted]


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
