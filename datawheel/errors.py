"""The one error type users see: a problem and how to fix it, on one line."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DatawheelError", "name_list"]


class DatawheelError(Exception):
    """An error caused by input or environment, with the fix spelled out.

    The CLI prints ``str(error)`` as a single line and exits non-zero; it never
    shows a traceback for this type.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(".")
        fix = fix.rstrip(".")
        if fix.lower().startswith("fix:"):  # a fix wrapped twice would read "Fix: Fix: ..."
            fix = fix[len("fix:") :].lstrip()
        self.fix = fix
        super().__init__(self.problem)

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}." if self.fix else f"{self.problem}."


def name_list(names: Iterable[object], limit: int = 8) -> str:
    """``a, b, c`` for an error message; past ``limit`` names: ``a, b, ... and 5 more``."""
    items = [str(n) for n in names]
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} and {len(items) - limit} more"
