"""`datawheel submit` against a recording KFP API on 127.0.0.1.

No KFP server can run here, so a small HTTP server stands in for the KFP REST API
and records what the real kfp.Client sends; the tests check those requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from datawheel.cli.main import main


class _KfpApi(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, Any]] = []

    def _reply(self, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        self._reply({})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.calls.append(("POST", self.path, body))
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path.startswith("/apis/v2beta1/runs"):
            self._reply({"run_id": "run-42", "display_name": body["display_name"]})
        else:
            self._reply({})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: list[tuple[str, str, Any]] = []
    handler = type("Handler", (_KfpApi,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()
    server.server_close()


_S3 = ("--store", "s3://wheel/prod")  # a run on a cluster needs a store every pod reaches


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_submit_sends_pipeline_spec_and_typed_parameters(
    kfp_api: tuple[str, list[tuple[str, str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    host, calls = kfp_api
    code = _run(
        [
            "submit",
            "training",
            "--host",
            host,
            "--experiment",
            "flywheel",
            "--run-name",
            "nightly",
            "--param",
            "epochs=7",
            "--param",
            "model_kind=cnn",
            "--param",
            "learning_rate=0.003",
            "--param",
            "store=s3://wheel/prod",
        ]
    )
    assert code == 0
    assert "run-42" in capsys.readouterr().out
    posts = {path.split("?")[0]: body for method, path, body in calls if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "flywheel"
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {
        "epochs": 7,
        "model_kind": "cnn",
        "learning_rate": 0.003,
        "store": "s3://wheel/prod",
    }
    # with a Kubernetes platform spec, kfp.Client sends both documents together
    spec = run["pipeline_spec"]["pipeline_spec"]
    platform = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]
    assert "nodeSelector" in platform["deploymentSpec"]["executors"]["exec-train"]
    assert spec["pipelineInfo"]["name"] == "datawheel-training"
    tasks = spec["root"]["dag"]["tasks"]
    assert {"ingest", "validate", "prep", "evaluate", "for-loop-1"} <= set(tasks)
    assert run.get("pipeline_version_reference") is None  # the spec travels inline


def test_submit_rejects_unknown_parameter_before_any_request(
    kfp_api: tuple[str, list[tuple[str, str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    host, calls = kfp_api
    code = _run(["submit", "training", "--host", host, "--param", "epoch=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: unknown parameter 'epoch'") and "epochs" in err
    assert "\n" not in err
    assert calls == []


def test_submit_to_unreachable_host_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = _run(["submit", "training", "--host", f"http://127.0.0.1:{port}", *_S3])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: KFP API at http://127.0.0.1:") and "Fix:" in err
    assert "Traceback" not in err and "\n" not in err


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        ("model_name=../../x", "--param model_name '../../x' is not valid"),
        ("model_kind=transformer", "unknown model kind 'transformer'"),
        ("sweep_learning_rates=0.1,nan", "positive finite"),
    ],
)
def test_submit_checks_parameters_before_any_request(
    kfp_api: tuple[str, list[tuple[str, str, Any]]],
    capsys: pytest.CaptureFixture[str],
    param: str,
    needle: str,
) -> None:
    """A deterministic mistake fails here, not in a pod that the cluster retries."""
    host, calls = kfp_api
    code = _run(["submit", "training", "--host", host, "--param", param, *_S3])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and needle in err and "Fix:" in err
    assert calls == []


def test_submit_into_a_profile_namespace_on_multi_user_kubeflow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Multi-user Kubeflow refuses an experiment without a namespace; --namespace puts the
    experiment (and so the run and its pods) in the profile's namespace."""
    from kfp_recorder import kfp_api as recording_api

    with recording_api() as api:
        api.multi_user = True
        code = _run(["submit", "training", "--host", api.url, *_S3])
        assert code == 2 and api.posts("/apis/v2beta1/runs") == []
        assert "needs a namespace" in capsys.readouterr().err
        ns = "kubeflow-user-example-com"
        assert _run(["submit", "training", "--host", api.url, "--namespace", ns, *_S3]) == 0
        assert "(namespace kubeflow-user-example-com)" in capsys.readouterr().out
        (experiment,) = api.experiments.values()
        assert experiment["namespace"] == ns
        (run,) = api.posts("/apis/v2beta1/runs")
        assert run["experiment_id"] == experiment["experiment_id"]
        cron = ["--cron", "0 0 3 * * *", "--param", "model_name=digits"]
        args = ["schedule", "flywheel", "--host", api.url, "--namespace", ns, *cron, *_S3]
        assert _run(args) == 0
        (recurring,) = api.posts("/apis/v2beta1/recurringruns")
        assert api.experiments[recurring["experiment_id"]]["namespace"] == ns


def test_a_bad_namespace_is_refused_before_any_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kfp_recorder import kfp_api as recording_api

    with recording_api() as api:
        code = _run(["submit", "training", "--host", api.url, "--namespace", "Team_A", *_S3])
        assert code == 2 and api.calls == []
        assert "not a Kubernetes namespace name" in capsys.readouterr().err
