"""The Runner seam: run a compiled pipeline locally (kfp.local) or submit it to a KFP API.

:class:`LocalRunner` drives kfp.local's ``SubprocessRunner(use_venv=False)`` and
taps its output: each line goes to a log file, task starts and ends become
progress events, and ``[datawheel]`` lines from step bodies (per-epoch progress,
body timings, errors) are passed on. :func:`submit` uploads the compiled
package through ``kfp.Client``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from datawheel.errors import DatawheelError
from datawheel.steps import ERROR_FILE_ENV

__all__ = ["LocalRunner", "RunEvent", "RunResult", "StepTiming", "submit"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_BODY = re.compile(r"\[datawheel\] step=(\S+) body_seconds=([0-9.]+)")


@dataclass
class StepTiming:
    task: str
    wall_seconds: float
    status: str
    body_seconds: float | None = None


@dataclass
class RunResult:
    status: str
    wall_seconds: float
    steps: list[StepTiming]
    log_path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def body_seconds(self) -> float:
        return sum(s.body_seconds or 0.0 for s in self.steps)

    @property
    def overhead_seconds(self) -> float:
        """Wall time not spent inside step bodies: KFP's orchestration and process start-up."""
        return self.wall_seconds - self.body_seconds


@dataclass(frozen=True)
class RunEvent:
    kind: str  # "start", "end" or "message"
    task: str = ""
    text: str = ""


class _Tap(io.TextIOBase):
    """A text stream that logs every line and turns some into :class:`RunEvent`s."""

    def __init__(self, log: io.TextIOBase, on_event: Callable[[RunEvent], None]) -> None:
        self._log = log
        self._on_event = on_event
        self._buf = ""
        self._started: dict[str, float] = {}
        self._body: float | None = None
        self.steps: list[StepTiming] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._log.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(_ANSI.sub("", line).strip())
        return len(s)

    def flush(self) -> None:
        self._log.flush()

    def _line(self, line: str) -> None:
        if m := _START.search(line):
            self._started[m[1]] = time.perf_counter()
            self._body = None
            self._on_event(RunEvent("start", m[1]))
        elif m := _END.search(line):
            began = self._started.pop(m[1], time.perf_counter())
            self.steps.append(StepTiming(m[1], time.perf_counter() - began, m[2], self._body))
            self._body = None
            self._on_event(RunEvent("end", m[1], m[2]))
        elif m := _BODY.search(line):
            # A step prints its body time just before kfp.local reports the task finished.
            self._body = float(m[2])
        elif "[datawheel]" in line:
            self._on_event(RunEvent("message", text=line.split("[datawheel]", 1)[1].strip()))


class _Pipeline(Protocol):
    def __call__(self, **kwargs: Any) -> Any: ...


class LocalRunner:
    """Run pipelines in this Python environment through kfp.local."""

    def __init__(
        self, pipeline_root: str | Path, *, on_event: Callable[[RunEvent], None] = lambda e: None
    ) -> None:
        self.pipeline_root = Path(pipeline_root).resolve()
        self.on_event = on_event

    def run(self, pipeline: _Pipeline, arguments: Mapping[str, Any]) -> RunResult:
        from kfp import local

        self.pipeline_root.mkdir(parents=True, exist_ok=True)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(self.pipeline_root),
            raise_on_error=True,
        )
        fd, log_name = tempfile.mkstemp(prefix="run-", suffix=".log", dir=self.pipeline_root)
        os.close(fd)
        errors = Path(log_name).with_suffix(".errors")
        old_error_env = os.environ.get(ERROR_FILE_ENV)
        os.environ[ERROR_FILE_ENV] = str(errors)
        start = time.perf_counter()
        status, error = "SUCCEEDED", None
        summary: dict[str, Any] = {}
        with open(log_name, "w", encoding="utf-8") as log:
            tap = _Tap(log, self.on_event)  # type: ignore[arg-type]
            try:
                with contextlib.redirect_stdout(tap), contextlib.redirect_stderr(tap):
                    task = pipeline(**arguments)
                summary = json.loads(task.output) if isinstance(task.output, str) else {}
            except Exception as exc:  # kfp.local raises RuntimeError for a failed task
                status = "FAILED"
                error = _first_error(errors) or f"{type(exc).__name__}: {exc}"
            finally:
                if old_error_env is None:
                    os.environ.pop(ERROR_FILE_ENV, None)
                else:
                    os.environ[ERROR_FILE_ENV] = old_error_env
        errors.unlink(missing_ok=True)
        return RunResult(
            status, time.perf_counter() - start, tap.steps, Path(log_name), summary, error
        )


def _first_error(path: Path) -> str | None:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    return lines[0] if lines else None


class _Client(Protocol):
    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Any: ...


def submit(
    package: str | Path,
    *,
    host: str,
    arguments: Mapping[str, Any],
    experiment: str,
    run_name: str,
    client_factory: Callable[..., _Client] | None = None,
    token: str | None = None,
) -> str:
    """Upload a compiled pipeline to the KFP API at ``host`` and start a run; returns its id."""
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    try:
        client = client_factory(host=host, existing_token=token)
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=dict(arguments),
            run_name=run_name,
            experiment_name=experiment,
            enable_caching=False,
        )
    except DatawheelError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatawheelError(
            f"KFP API at {host} refused or failed the submission: {first[:200]}",
            "check --host (the KFP API URL, e.g. http://localhost:8080) and your credentials",
        ) from exc
    return str(getattr(result, "run_id", result))
