"""``datawheel flywheel harvest``, run as a user runs it: the --json shape, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import datawheel
from harvest_support import DAY, Ledger, new_rows, toy_store

from datawheel.data import versions as ds
from datawheel.storage import LocalStore


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "Fix:" in lines[0]
    return lines[0]


def test_harvest_json_and_a_second_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    parent = toy_store(store, tmp_path)
    ledger = Ledger(store)
    pids = ledger.predict(new_rows(6), ["a"] * 6)
    ledger.label(pids, ["a", "a", "b", "b", "c", "c"], ["a"] * 6)
    uri = f"file://{tmp_path / 'store'}"
    args = ("flywheel", "harvest", "--model", "toy", "--store", uri, "--json")
    proc = datawheel(*args, "--since", "2026-05-28T00:00:00Z", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    version = ds.get_version(store, "toy").version
    assert doc == {
        "dataset": "toy",
        "version": version,
        "parent": parent.version,
        "labeled_rows": 6,
        "corrections": 4,
        "confirmations": 2,
        "conflicts": 0,
        "created": True,
    }
    assert f"toy@{version} committed" in proc.stderr
    # the same window again, with the store from $DATAWHEEL_STORE: nothing new
    again = datawheel(
        "flywheel", "harvest", "--model", "toy", "--json", cwd=tmp_path,
        env={"DATAWHEEL_STORE": uri},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) | {"labeled_rows": 6} == {
        **doc,
        "parent": version,
        "created": False,
    }
    plain = datawheel(*args[:-1], "--until", str(DAY), cwd=tmp_path)  # before any label
    assert plain.returncode == 0 and "no new labels for model toy" in plain.stdout


def test_harvest_errors_are_one_line(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    toy_store(store, tmp_path)
    uri = f"file://{tmp_path / 'store'}"
    base = ("flywheel", "harvest", "--store", uri)
    unknown = datawheel(*base, "--model", "nosuch", cwd=tmp_path)
    assert unknown.returncode == 2 and "not in the registry" in _one_line_error(unknown.stderr)
    bad_time = datawheel(*base, "--model", "toy", "--since", "last tuesday", cwd=tmp_path)
    assert bad_time.returncode == 2 and "not ISO-8601" in _one_line_error(bad_time.stderr)
    ledger = Ledger(store)
    pids = ledger.predict(new_rows(4) * 50.0, ["a"] * 4)  # outside the reference's ranges
    ledger.label(pids, ["b"] * 4, ["a"] * 4)
    rejected = datawheel(*base, "--model", "toy", "--json", cwd=tmp_path)
    assert rejected.returncode == 2
    line = _one_line_error(rejected.stderr)
    assert "rejected, not committed" in line
    error = json.loads(rejected.stdout)  # --json: the error is a JSON document on stdout too
    assert line == f"error: {error['error']}. Fix: {error['fix']}."
