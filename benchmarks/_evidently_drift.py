"""Evidently's DataDriftPreset on one reference/current pair, timed: drift_bench's other side.

Run by ``benchmarks/drift_bench.py`` with the python of ``benchmarks/.venv-evidently``
(Evidently 0.7.x, pandas < 3), never by the main venv, which does not have evidently:

    python _evidently_drift.py REFERENCE.parquet CURRENT.parquet [--repeat N]

Reads both files (not timed), runs a small warm-up report (imports, registries and plotly's
first figure are paid there, not in the timing), then times ``Report([DataDriftPreset()])
.run(current, reference)`` (Evidently 0.7 takes the current data first) with every default:
per column Wasserstein distance (normed) at 0.1 for numeric columns with more than 1,000
reference rows, KS below that; the dataset drifts when half the columns do. Prints one JSON
object on stdout: the seconds of each run, the drifted column count and share, and the
method each column was tested with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry: off

import pandas as pd
from evidently import Report  # type: ignore[import-not-found]
from evidently.presets import DataDriftPreset  # type: ignore[import-not-found]


def _summary(snapshot: Any) -> dict[str, Any]:
    """The drifted-columns count and share, the drifted columns, and the method per column.

    A column drifts as Evidently decides it: a p-value test (its method name says p_value)
    when the value is below the threshold, a distance (Wasserstein, PSI, ...) when the value
    is at or above it."""
    count = share = None
    methods: Counter[str] = Counter()
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount"):
            count, share = int(metric["value"]["count"]), float(metric["value"]["share"])
        elif kind.endswith("ValueDrift"):
            method, threshold = str(config.get("method")), float(config.get("threshold"))
            methods[f"{method} (threshold {threshold:g})"] += 1
            value = float(metric["value"])
            if (value < threshold) if "p_value" in method else (value >= threshold):
                drifted.append(str(config.get("column")))
    return {
        "drifted_columns": count,
        "drifted_share": share,
        "drifted": drifted,
        "methods": dict(methods),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("current")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    reference = pd.read_parquet(args.reference)
    current = pd.read_parquet(args.current)
    small = min(1000, len(reference), len(current))
    Report([DataDriftPreset()]).run(current.head(small), reference.head(small))  # warm-up
    seconds = []
    snapshot = None
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current, reference)
        seconds.append(time.perf_counter() - start)
    out = {
        "evidently": sys.modules["evidently"].__version__,
        "pandas": pd.__version__,
        "rows": [len(reference), len(current)],
        "seconds": seconds,
        **_summary(snapshot),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
