"""``datawheel datasets``: ingest validates, list and show name the reference, pin-reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from cli_helpers import datawheel


def _csv(path: Path, rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, size=(rows, 2))
    values[0], values[1] = 0.0, 1.0
    frame = pd.DataFrame(values, columns=["a", "b"])
    frame["label"] = np.where(np.arange(rows) % 2 == 0, "yes", "no")
    frame.to_csv(path, index=False)
    return str(path)


def _ok(*args: str, cwd: Path) -> str:
    proc = datawheel(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_ingest_list_show_and_pin_reference(tmp_path: Path) -> None:
    store = ["--store", f"file://{tmp_path / 'store'}"]
    first = _ok("datasets", "ingest", _csv(tmp_path / "a.csv", 60, 0), "--name", "t", *store,
                cwd=tmp_path)  # fmt: skip
    v1 = first.split("@", 1)[1].split(":", 1)[0]
    assert first.strip().endswith("60 rows (committed)")
    second = _ok("datasets", "ingest", _csv(tmp_path / "b.csv", 90, 1), "--name", "t", *store,
                 cwd=tmp_path)  # fmt: skip
    v2 = second.split("@", 1)[1].split(":", 1)[0]
    rows = json.loads(_ok("datasets", "list", "--json", *store, cwd=tmp_path))
    assert [(r["version"], r["reference"], r["parent"]) for r in rows] == [
        (v1, True, None),
        (v2, False, v1),
    ]
    shown = json.loads(_ok("datasets", "show", "t", *store, cwd=tmp_path))
    assert shown["manifest"]["version"] == v2
    assert shown["reference"]["version"] == v1
    out = _ok("datasets", "pin-reference", "t", v2, "--reason", "more rows", *store, cwd=tmp_path)
    assert out.strip() == f"t reference: {v1} -> {v2} (more rows)"
    shown = json.loads(_ok("datasets", "show", f"t@{v1}", *store, cwd=tmp_path))
    assert shown["manifest"]["version"] == v1
    assert shown["reference"]["version"] == v2
    assert shown["reference"]["history"] == [v1]
    rows = json.loads(_ok("datasets", "list", "--json", *store, cwd=tmp_path))
    assert [r["reference"] for r in rows] == [False, True]
    proc = datawheel("datasets", "list", *store, cwd=tmp_path)  # a pipe: plain lines
    (line,) = [ln for ln in proc.stdout.splitlines() if v2 in ln]
    assert line.split()[2] == "*"  # the ref column
