"""The one error type users see: a problem and how to fix it, on one line."""

from __future__ import annotations

__all__ = ["DatawheelError"]


class DatawheelError(Exception):
    """An error caused by input or environment, with the fix spelled out.

    The CLI prints ``str(error)`` as a single line and exits non-zero; it never
    shows a traceback for this type.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.problem)

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}." if self.fix else f"{self.problem}."
