"""A fix for kfp.local 2.17: it rewrites ``python3`` inside every argument of a step.

kfp.local's ``SubprocessRunner`` swaps ``python3`` for this interpreter's path with a plain
``str.replace`` on each element of the task's command line, arguments included, so a
parameter such as ``--param source=/usr/lib/python3/dist-packages/x.csv`` reached the step as
``/usr/lib//venv/bin/python/dist-packages/x.csv``. :func:`install` makes the swap touch only
the shell scripts (the element after ``sh -c`` / ``sh -ec``) and only ``python3`` as a
command word, never a path or a value; the executor input, where parameters travel, is
left as it is.
"""

from __future__ import annotations

import re

__all__ = ["install", "replace_python_executable"]

# ``python3`` as a command word: not part of a longer name or path (``/python3/``, ``python3.11``).
_COMMAND = re.compile(r"(?<![\w./-])python3(?![\w./-])")
_SCRIPT_FLAGS = frozenset({"-c", "-ec"})


def replace_python_executable(full_command: list[str], new_executable: str) -> list[str]:
    """``full_command`` with ``python3`` run as a command in its shell scripts replaced."""
    out = []
    for i, element in enumerate(full_command):
        if i and full_command[i - 1] in _SCRIPT_FLAGS:
            element = _COMMAND.sub(lambda _: new_executable, element)
        out.append(element)
    return out


def install() -> None:
    """Put :func:`replace_python_executable` in kfp.local's place (idempotent)."""
    from kfp.local import subprocess_task_handler

    subprocess_task_handler.replace_python_executable = replace_python_executable  # type: ignore[assignment]
