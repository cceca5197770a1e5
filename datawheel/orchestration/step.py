"""The wrapper every pipeline step runs in, and the progress-line format.

Each step function is wrapped by :func:`pipeline_step`: it prints the seconds spent in the
body (the CLI subtracts them from the wall time to report KFP's overhead), and turns a
:class:`DatawheelError` into a one-line message and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

from datawheel.errors import DatawheelError

__all__ = ["ERROR_FILE_ENV", "MetricsSink", "log", "pipeline_step"]

ERROR_FILE_ENV = "DATAWHEEL_ERROR_FILE"
P = ParamSpec("P")
R = TypeVar("R")


class MetricsSink(Protocol):
    """What a KFP ``Metrics`` artifact offers; tests pass a plain object."""

    def log_metric(self, metric: str, value: float) -> None: ...


def log(message: str) -> None:
    """A progress line; the CLI shows lines with this prefix while a run goes."""
    print(f"[datawheel] {message}", flush=True)


def pipeline_step(fn: Callable[P, R]) -> Callable[P, R]:
    name = fn.__name__.removesuffix("_step")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except DatawheelError as exc:
            message = f"{name}: {exc}"
            print(f"[datawheel] error: {message}", file=sys.stderr, flush=True)
            error_file = os.environ.get(ERROR_FILE_ENV)
            if error_file:
                with open(error_file, "a", encoding="utf-8") as f:
                    f.write(message + "\n")
            raise SystemExit(1) from None
        finally:
            log(f"step={name} body_seconds={time.perf_counter() - start:.3f}")

    return wrapper
