"""Run the installed ``datawheel`` command as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

DATAWHEEL = str(Path(sys.executable).with_name("datawheel"))


def datawheel(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "DATAWHEEL_CHECKPOINT_DIR": str(cwd / "ckpt"), **(env or {})}
    return subprocess.run(
        [DATAWHEEL, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run the training pipeline with --json; the parsed summary, plus the progress on stderr."""
    proc = datawheel("run", "training", "--local", "--json", *args, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    result["progress"] = proc.stderr
    return result


def main_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """``datawheel ARGS`` through ``main()`` in this process, stdout captured by pytest (not
    a terminal, as in a pipe): the exit status, stdout and stderr."""
    from datawheel.cli.main import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
