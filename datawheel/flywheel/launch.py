"""Starting the flywheel pipeline: here through kfp.local, or on a cluster through kfp.Client.

A :class:`Launcher` has two calls: ``start(arguments, run_name)`` returns a handle (a small
JSON-able dict the watcher keeps in its durable state) as soon as the run has started, and
``status(handle)`` says RUNNING, SUCCEEDED, FAILED or UNKNOWN (a handle this launcher cannot
follow: a local run started by another process).

* :class:`LocalLauncher` runs ``run(arguments)`` on a background thread. The default run
  function starts a child process (``python -m datawheel.flywheel.launch``) that runs the
  ``flywheel`` pipeline through :class:`datawheel.orchestration.local_runner.LocalRunner`:
  kfp.local redirects the process's stdout and stderr while a run lasts, which must not
  swallow the watcher's own output. On Linux the child dies with the watcher.
* :class:`KfpLauncher` uploads the compiled ``flywheel`` pipeline and starts a run through
  :func:`datawheel.orchestration.remote.submit`, and follows it with ``get_run``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from datawheel.errors import DatawheelError

__all__ = [
    "FAILED",
    "RUNNING",
    "SUCCEEDED",
    "UNKNOWN",
    "KfpLauncher",
    "Launcher",
    "LocalLauncher",
    "flywheel_package",
    "run_flywheel_subprocess",
]

RUNNING, SUCCEEDED, FAILED, UNKNOWN = "running", "succeeded", "failed", "unknown"
RunFunction = Callable[[dict[str, Any]], dict[str, Any]]
_KFP_DONE = {"SUCCEEDED": SUCCEEDED, "FAILED": FAILED, "CANCELED": FAILED, "SKIPPED": FAILED}


class Launcher(Protocol):
    name: str

    def start(self, arguments: Mapping[str, Any], run_name: str) -> dict[str, Any]: ...

    def status(self, handle: Mapping[str, Any]) -> str: ...


# --- local ---------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when the watcher dies (Linux); looked
    up here, in the parent: nothing may import or take a lock between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    kill = int(signal.SIGKILL)
    return lambda: prctl(1, kill)  # PR_SET_PDEATHSIG


def run_flywheel_subprocess(
    arguments: dict[str, Any], *, pipeline_root: str = ".datawheel/runs"
) -> dict[str, Any]:
    """Run the ``flywheel`` pipeline in a child process; its summary, or DatawheelError."""
    # -P: the working directory is not put on sys.path, so a folder there named like a
    # module kfp imports (this repository's docker/, say) cannot shadow it
    cmd = [sys.executable, "-P", "-m", "datawheel.flywheel.launch", pipeline_root]
    cmd.append(json.dumps(arguments))
    preexec = _die_with_parent()
    # stdout carries the result line; the child's progress (one line per step) goes to
    # this process's stderr as it happens
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=preexec, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if done.returncode != 0 or result.get("status") != "SUCCEEDED":
        first = result.get("error") or f"the child exited {done.returncode}"
        # a step's error is already "problem. Fix: fix.": one Fix, then where the log is
        problem, _, fix = str(first).partition(". Fix: ")
        log = f"see the run's log {result.get('log', 'under ' + pipeline_root)}"
        raise DatawheelError(
            f"the flywheel pipeline failed: {problem[:300]}",
            f"{fix.rstrip('.')}; {log}" if fix else log,
        )
    return result


class LocalLauncher:
    """Runs ``run(arguments)`` (by default the pipeline in a child process) on a thread."""

    name = "local"

    def __init__(
        self,
        run: RunFunction = run_flywheel_subprocess,
        *,
        on_finish: Callable[[str, str, dict[str, Any]], None] = lambda run_id, st, out: None,
    ) -> None:
        self._run = run
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._status: dict[str, str] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, arguments: Mapping[str, Any], run_name: str) -> dict[str, Any]:
        args = dict(arguments)
        with self._lock:
            if self._status.get(run_name) == RUNNING:
                raise DatawheelError(f"run {run_name} is already running", "wait for it")
            self._status[run_name] = RUNNING
        thread = threading.Thread(
            target=self._body, args=(run_name, args), name=f"flywheel-{run_name}", daemon=True
        )
        self._threads[run_name] = thread
        thread.start()
        return {"launcher": self.name, "run_id": run_name, "started": time.time()}

    def _body(self, run_id: str, arguments: dict[str, Any]) -> None:
        try:
            result, status = self._run(arguments), SUCCEEDED
        except Exception as exc:  # a run that fails is a status, never a dead watcher
            result, status = {"error": str(exc) or type(exc).__name__}, FAILED
        with self._lock:
            self._status[run_id] = status
            self._results[run_id] = result
        self._on_finish(run_id, status, result)

    def status(self, handle: Mapping[str, Any]) -> str:
        with self._lock:
            return self._status.get(str(handle.get("run_id")), UNKNOWN)

    def result(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._results.get(run_id, {}))

    def wait(self, run_id: str, timeout: float | None = None) -> str:
        thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)
        return self.status({"run_id": run_id})


# --- Kubeflow Pipelines --------------------------------------------------------------------


def flywheel_package(out_dir: str | Path | None = None) -> Path:
    """The compiled ``flywheel`` pipeline: the checked-in YAML if this is a checkout or it
    was packaged, else compiled now into ``out_dir`` (a temporary folder by default)."""
    from importlib import resources

    with contextlib.suppress(ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        found = resources.files("datawheel.pipelines").joinpath("compiled/flywheel.yaml")
        if found.is_file():
            return Path(str(found))
    from datawheel.orchestration.compiler import compile_pipeline

    folder = out_dir or tempfile.mkdtemp(prefix="datawheel-flywheel-")
    return compile_pipeline("flywheel", folder)


class _Client(Protocol):
    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Any: ...

    def get_run(self, run_id: str) -> Any: ...


class KfpLauncher:
    """Submits the compiled pipeline to the KFP API at ``host`` through kfp.Client."""

    name = "kfp"

    def __init__(
        self,
        host: str,
        *,
        experiment: str = "datawheel-flywheel",
        token: str | None = None,
        package: Callable[[], str | Path] = flywheel_package,
        client_factory: Callable[..., _Client] | None = None,
    ) -> None:
        if not host.startswith(("http://", "https://")):
            raise DatawheelError(
                f"--kfp-host {host!r} is not a URL", "pass e.g. --kfp-host http://localhost:8080"
            )
        self.host = host
        self.experiment = experiment
        self.token = token
        self._package = package
        self._factory = client_factory
        self._path: Path | None = None

    def _client_factory(self) -> Callable[..., _Client]:
        if self._factory is None:
            import kfp

            self._factory = kfp.Client
        return self._factory

    def start(self, arguments: Mapping[str, Any], run_name: str) -> dict[str, Any]:
        from datawheel.orchestration.remote import submit

        if self._path is None:
            self._path = Path(self._package())
        run_id = submit(
            self._path,
            host=self.host,
            arguments=arguments,
            experiment=self.experiment,
            run_name=run_name,
            client_factory=self._client_factory(),
            token=self.token,
        )
        return {"launcher": self.name, "run_id": run_id, "host": self.host, "started": time.time()}

    def status(self, handle: Mapping[str, Any]) -> str:
        try:
            client = self._client_factory()(host=self.host, existing_token=self.token)
            run = client.get_run(str(handle.get("run_id")))
        except Exception:  # the API is down: ask again next cycle, the run stays in flight
            return UNKNOWN
        state = str(getattr(run, "state", "") or "").upper()
        return _KFP_DONE.get(state, RUNNING if state else UNKNOWN)


# --- the child process of run_flywheel_subprocess --------------------------------------


def _progress(event: Any, stream: Any = sys.__stderr__) -> None:
    """One plain stderr line per step start and end, and the steps' own messages. The real
    stderr, bound at import: while the runner runs, ``sys.stderr`` is its own log tap."""
    if event.kind == "start":
        text = f"flywheel: {event.task} ..."
    elif event.kind == "end":
        text = f"flywheel: {event.task} {event.text.lower()}"
    else:
        text = f"flywheel:   {event.text}"
    stream.write(text + "\n")  # not print(): kfp.local swaps builtins.print while it runs
    stream.flush()


def _child(pipeline_root: str, arguments: dict[str, Any]) -> int:
    from datawheel.orchestration.local_runner import LocalRunner
    from datawheel.pipelines import PIPELINES

    if "flywheel" not in PIPELINES:
        print(json.dumps({"status": "FAILED", "error": "no flywheel pipeline in this install"}))
        return 1
    result = LocalRunner(pipeline_root, on_event=_progress).run(PIPELINES["flywheel"], arguments)
    out = {
        "status": result.status,
        "error": result.error,
        "summary": result.summary,
        "log": str(result.log_path),
        "wall_seconds": round(result.wall_seconds, 3),
    }
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0 if result.status == "SUCCEEDED" else 1


if __name__ == "__main__":  # pragma: no cover - exercised through run_flywheel_subprocess
    sys.exit(_child(sys.argv[1], json.loads(sys.argv[2])))
