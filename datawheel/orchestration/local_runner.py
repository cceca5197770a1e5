"""The local half of the Runner seam: run a pipeline on this machine through kfp.local.

:class:`LocalRunner` drives kfp.local's ``SubprocessRunner(use_venv=False)`` and
taps its output: each line goes to a log file, task starts and ends become
progress events, and ``[datawheel]`` lines from step bodies (per-epoch progress,
body timings, errors) are passed on. The remote half is :mod:`datawheel.orchestration.remote`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from datawheel.orchestration.step import ERROR_FILE_ENV

__all__ = ["LocalRunner", "LogTap", "RunEvent", "RunResult", "StepTiming"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_BODY = re.compile(r"\[datawheel\] step=(\S+) body_seconds=([0-9.]+)")
_TASK_SUFFIX = re.compile(r"-\d+$")


@dataclass
class StepTiming:
    task: str
    wall_seconds: float | None  # None: kfp.local never reported the task's end
    status: str
    body_seconds: float | None = None
    started: float = field(default=0.0, repr=False)


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


class LogTap(io.TextIOBase):
    """A text stream that logs every line and turns some into :class:`RunEvent`s."""

    def __init__(self, log: io.TextIOBase, on_event: Callable[[RunEvent], None]) -> None:
        self._log = log
        self._on_event = on_event
        self._buf = ""
        self._lock = threading.Lock()  # kfp.local runs ParallelFor iterations on threads
        self.steps: list[StepTiming] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
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
            self.steps.append(StepTiming(m[1], None, "RUNNING", started=time.perf_counter()))
            self._on_event(RunEvent("start", m[1]))
        elif m := _END.search(line):
            task = m[1]
            step = self._first(lambda s: s.task == task and s.status == "RUNNING")
            if step is not None:
                step.wall_seconds = time.perf_counter() - step.started
                step.status = m[2]
            self._on_event(RunEvent("end", m[1], m[2]))
        elif m := _BODY.search(line):
            # Tasks of one step (the sweep's trains, register/register-2) may run at once:
            # give each body time to the earliest started task of that step still without one.
            name = m[1]
            step = self._first(
                lambda s: _TASK_SUFFIX.sub("", s.task) == name and s.body_seconds is None
            )
            if step is not None:
                step.body_seconds = float(m[2])
        elif "[datawheel]" in line:
            self._on_event(RunEvent("message", text=line.split("[datawheel]", 1)[1].strip()))

    def _first(self, match: Callable[[StepTiming], bool]) -> StepTiming | None:
        return next((s for s in self.steps if match(s)), None)

    def close_run(self, succeeded: bool) -> None:
        """Tasks kfp.local started but never reported finished (it can skip the end line of
        concurrent loop iterations) take the run's outcome."""
        for step in self.steps:
            if step.status == "RUNNING":
                step.status = "SUCCESS" if succeeded else "UNKNOWN"


class _Pipeline(Protocol):
    def __call__(self, **kwargs: Any) -> Any: ...


class LocalRunner:
    """Run pipelines in this Python environment through kfp.local.

    ``concurrent_steps`` is how many steps may run at once (a sweep's trains do): the
    cores are divided among them through ``OMP_NUM_THREADS`` unless it is already set,
    because oversubscribed OpenMP threads slow every step down several times over.
    """

    def __init__(
        self,
        pipeline_root: str | Path,
        *,
        on_event: Callable[[RunEvent], None] = lambda e: None,
        concurrent_steps: int = 1,
    ) -> None:
        self.pipeline_root = Path(pipeline_root).resolve()
        self.on_event = on_event
        self.threads_per_step = max(1, (os.cpu_count() or 1) // max(1, concurrent_steps))

    def run(self, pipeline: _Pipeline, arguments: Mapping[str, Any]) -> RunResult:
        from kfp import local

        from datawheel.orchestration.kfp_local_fix import install
        from datawheel.orchestration.retry_policy import without_retries

        install()  # arguments that contain "python3" reach the steps intact
        self.pipeline_root.mkdir(parents=True, exist_ok=True)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(self.pipeline_root),
            raise_on_error=True,
        )
        fd, log_name = tempfile.mkstemp(prefix="run-", suffix=".log", dir=self.pipeline_root)
        os.close(fd)
        errors = Path(log_name).with_suffix(".errors")
        env = {
            ERROR_FILE_ENV: str(errors),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(self.threads_per_step)),
        }
        start = time.perf_counter()
        status, error = "SUCCEEDED", None
        summary: dict[str, Any] = {}
        with open(log_name, "w", encoding="utf-8") as log, _environ(env):
            tap = LogTap(log, self.on_event)  # type: ignore[arg-type]
            try:
                with contextlib.redirect_stdout(tap), contextlib.redirect_stderr(tap):
                    # kfp.local honours the pods' retry policy (30/60/120 s backoff): locally a
                    # failed step fails the run at once, as a user at a terminal expects
                    task = without_retries(pipeline)(**arguments)
                summary = json.loads(task.output) if isinstance(task.output, str) else {}
            except Exception as exc:  # kfp.local raises RuntimeError for a failed task
                status = "FAILED"
                error = _first_error(errors) or f"{type(exc).__name__}: {exc}"
        tap.close_run(status == "SUCCEEDED")
        errors.unlink(missing_ok=True)
        return RunResult(
            status, time.perf_counter() - start, tap.steps, Path(log_name), summary, error
        )


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the step processes) for a block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _first_error(path: Path) -> str | None:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    return lines[0] if lines else None
