"""`datawheel serve` pointed at a spool folder it cannot write: one line with a fix, at once.

The folder is made read-only for real: a read-only tmpfs mount (as root, where permission bits
do not stop a write), or mode 0555 for a user that is not root.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import datawheel
from serving_support import copy_store

from datawheel.serving.ledger import Ledger, LedgerUnavailable
from datawheel.storage import LocalStore


def _mount(target: Path, options: str) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write in, holding an existing spool folder ``old`` (with its
    ``.lock`` from an earlier server)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        (folder / "old").mkdir()
        (folder / "old" / ".lock").touch()
        for path in (folder / "old", folder):
            path.chmod(0o555)
        yield folder
        for path in (folder, folder / "old"):
            path.chmod(0o755)
        return
    if not _mount(folder, "size=64k,mode=0755"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        (folder / "old").mkdir()
        (folder / "old" / ".lock").touch()
        remount = subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=False)
        assert remount.returncode == 0
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("spool", ["new/spool", "old"])
def test_serve_refuses_a_read_only_spool_folder_in_one_line(
    model_store: str, tmp_path: Path, read_only: Path, spool: str
) -> None:
    store = copy_store(model_store, tmp_path / "store")
    folder = read_only / spool
    args = ("serve", "--model", "digits", "--store", store, "--port", "0")
    proc = datawheel(*args, "--spool-dir", str(folder), cwd=tmp_path, timeout=120)
    assert proc.returncode != 0, proc.stderr
    (line,) = proc.stderr.strip().splitlines()[-1:]  # the last line is the error...
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert errors == [line], proc.stderr  # ...and the only one
    assert "Traceback" not in proc.stderr
    assert line.startswith("error: the ledger cannot write to its spool folder "), line
    assert str(folder) in line and ("EROFS" in line or "EACCES" in line), line
    assert "Fix: pass --spool-dir (or set DATAWHEEL_SPOOL_DIR) to a folder" in line, line


def test_a_ledger_does_not_start_on_a_read_only_spool(tmp_path: Path, read_only: Path) -> None:
    ledger = Ledger(lambda: LocalStore(tmp_path / "store"), model="m", spool_dir=read_only / "old")
    with pytest.raises(LedgerUnavailable) as info:
        ledger.start()
    assert info.value.spool_dir == read_only / "old"
    assert "--spool-dir" in str(info.value)
    ledger.close()  # never started: closing is harmless
