"""kfp.local's python3 swap touches only the command word in a step's shell scripts."""

from __future__ import annotations

from kfp.local import subprocess_task_handler

from datawheel.orchestration.kfp_local_fix import install, replace_python_executable

SCRIPT = 'python3 -m pip --version || python3 -m ensurepip\n"$program_path/x.py" "$@"\n'


def test_only_command_words_in_scripts_change() -> None:
    args = "--source=/usr/lib/python3/dist-packages/p.csv --venv=/opt/python3.11/bin/python3"
    command = ["sh", "-c", SCRIPT, "sh", "-ec", "exec python3 -m kfp.dsl.executor_main", args]
    got = replace_python_executable(command, "/venv/bin/python")
    assert got[2] == SCRIPT.replace("python3 -m", "/venv/bin/python -m")
    assert got[5] == "exec /venv/bin/python -m kfp.dsl.executor_main"
    assert got[6] == args  # parameters travel intact
    assert got[:2] == ["sh", "-c"] and got[3:5] == ["sh", "-ec"]


def test_install_replaces_kfps_function() -> None:
    install()
    assert subprocess_task_handler.replace_python_executable is replace_python_executable
