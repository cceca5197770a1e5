"""Harvest speed and memory: datawheel's segment-by-segment join vs a naive pandas one, same run.

Setup (not timed): a ``file://`` store in the work dir with a committed dataset ``bench``
(``--parent-rows`` rows x 64 features, 10 classes), model ``bench`` v1 registered with
its transform (a stand-in ``model.ts``: a harvest never loads the network), and a ledger
written with the ledger's own ``write_segments``, as the server writes it: ``--predictions``
rows (64 float64 inputs, ids issued by :class:`PredictionIds`, 10 probabilities) in
segments of ``--segment-rows``, spread over two UTC days, and ``--labels`` feedback labels
for distinct random predictions (30% corrections, 1% of ids labelled twice) in segments of
10k.

Each measurement runs in its own child process, so the setup's memory does not count;
the child reports its wall time and its peak RSS (``VmHWM`` in ``/proc/self/status``):

* naive: ``read_ledger`` of every prediction and every label into pandas, the latest
  label per id (sort + drop_duplicates), then ``pandas.merge`` on id: the join alone;
* datawheel join: :func:`read_labels` + :func:`join_predictions` (the same join);
* datawheel harvest: :func:`datawheel.flywheel.harvest.harvest` end to end: the join, the
  mapping onto the dataset's features, the content dedupe against the parent, writing the
  new version and validating and committing it.

Timings only: nothing is asserted. The CPUs may be shared; rerun when something else was
busy. The ledger is kept in the work dir (``--work-dir``, default in the system's temp
folder; ``--fresh`` rewrites it); the harvest commits a
version, so each run starts from a copy of the store.

    .venv/bin/python benchmarks/harvest_bench.py                 # 1M predictions, 100k labels
    .venv/bin/python benchmarks/harvest_bench.py --predictions 100000 --labels 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks.bench_store import list_column, stand_in_champion
else:  # run as a script: benchmarks/ is sys.path[0]
    from bench_store import list_column, stand_in_champion

REPO = Path(__file__).resolve().parent.parent
N_FEATURES = 64
CLASSES = [str(i) for i in range(10)]
_KEY = b"harvest-bench-key-0123456789abcdef"
DAY = 1_780_000_000.0


def _peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Digit-like rows: values k/16, mostly zero, as float32."""
    k = rng.integers(0, 17, size=(n, N_FEATURES)) * (rng.random((n, N_FEATURES)) < 0.6)
    return (k / 16.0).astype(np.float32)


def _setup(store_dir: Path, args: argparse.Namespace) -> None:
    from datawheel.serving.ids import PredictionIds
    from datawheel.serving.ledger.records import SCHEMAS
    from datawheel.serving.ledger.segments import write_segments
    from datawheel.storage import LocalStore

    rng = np.random.default_rng(0)
    store = LocalStore(store_dir)
    features = [f"px_{i}" for i in range(N_FEATURES)]
    frame = pd.DataFrame(_rows(rng, args.parent_rows), columns=features)
    frame["label"] = [CLASSES[i % 10] for i in range(args.parent_rows)]
    stand_in_champion(store, store_dir.parent, frame, CLASSES, "a harvest never loads the network")
    ids = PredictionIds("bench", _KEY)
    all_ids: list[str] = []
    predicted_all: list[str] = []
    n, seg = args.predictions, args.segment_rows
    for start in range(0, n, seg):
        m = min(seg, n - start)
        ts = DAY + 86400.0 * start / n  # spread over two UTC days
        index = rng.integers(0, 10, m)
        pids = ids.issue("v1", ts, index.tolist())
        predicted = [CLASSES[i] for i in index]
        probs = np.full((m, 10), 0.1)
        table = pa.table(
            {
                "id": pids,
                "ts": np.full(m, ts),
                "model": ["bench"] * m,
                "version": ["v1"] * m,
                "inputs": list_column(_rows(rng, m)),
                "label": predicted,
                "probabilities": list_column(probs),
                "latency_ms": np.full(m, 1.5),
                "variant": ["torchscript"] * m,
            },
            schema=SCHEMAS["predictions"],
        )
        write_segments(store, "predictions", [table], f"{int(ts * 1e9)}-{start:08x}")
        all_ids += pids
        predicted_all += predicted
    chosen = rng.choice(n, size=args.labels, replace=False)
    chosen = np.concatenate([chosen, chosen[: args.labels // 100]])  # 1% relabelled later
    ts0 = DAY + 2 * 86400.0
    for k, start in enumerate(range(0, len(chosen), 10_000)):
        part = chosen[start : start + 10_000]
        predicted = [predicted_all[i] for i in part]
        correct = rng.random(len(part)) >= 0.3
        labels = [
            p if ok else CLASSES[(int(p) + 1) % 10]
            for p, ok in zip(predicted, correct, strict=True)
        ]
        ts = ts0 + k * 60.0
        table = pa.table(
            {
                "id": [all_ids[i] for i in part],
                "ts": ts + np.arange(len(part)) * 1e-3,
                "model": ["bench"] * len(part),
                "version": ["v1"] * len(part),
                "label": labels,
                "predicted": predicted,
            },
            schema=SCHEMAS["feedback"],
        )
        write_segments(store, "feedback", [table], f"{int(ts * 1e9)}-{k:08x}")


def _child(mode: str, store_dir: str) -> dict[str, Any]:
    from datawheel.storage import LocalStore

    store = LocalStore(store_dir)
    start = time.perf_counter()
    if mode == "naive":
        from datawheel.serving.ledger import read_ledger

        preds = read_ledger(store, model="bench")
        fb = read_ledger(store, model="bench", kind="feedback")
        latest = fb.sort_values("ts", kind="stable").drop_duplicates("id", keep="last")
        joined = preds.merge(latest[["id", "label"]], on="id", suffixes=("_pred", ""))
        rows, seen = len(joined), len(preds)
    elif mode == "join":
        from datawheel.flywheel.ledger_join import join_predictions, read_labels

        until = time.time()
        labels = read_labels(store, "bench", None, until)
        got = join_predictions(store, "bench", labels, until)
        rows, seen = sum(len(m) for m, _ in got.blocks.values()), got.predictions_seen
    else:
        from datawheel.flywheel.harvest import harvest

        result = harvest(store, "bench", reason="benchmark")
        assert result.created, result.message
        rows, seen = result.labeled_rows, int(result.lineage["predictions_seen"])
    seconds = time.perf_counter() - start
    return {"mode": mode, "seconds": seconds, "rows": rows, "seen": seen, "rss": _peak_rss_mib()}


def _measure(mode: str, store_dir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--store", str(store_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--predictions", type=int, default=1_000_000)
    p.add_argument("--labels", type=int, default=100_000)
    p.add_argument("--segment-rows", type=int, default=50_000)
    p.add_argument("--parent-rows", type=int, default=5_000)
    p.add_argument(
        "--work-dir", default=str(Path(tempfile.gettempdir()) / "datawheel-harvest-bench")
    )
    p.add_argument("--fresh", action="store_true", help="rewrite the ledger")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--store", default="", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.store)))
        return
    work = Path(args.work_dir) / f"p{args.predictions}-l{args.labels}-s{args.segment_rows}"
    template = work / "store"
    if args.fresh and work.exists():
        shutil.rmtree(work)
    if not (work / "ready").exists():
        work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(template, ignore_errors=True)
        started = time.perf_counter()
        _setup(template, args)
        (work / "ready").write_text("")
        print(f"setup: ledger written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(template, run)
    print(
        f"{args.predictions:,} predictions ({args.segment_rows:,}-row segments), "
        f"{args.labels:,} labels (+1% relabelled), parent {args.parent_rows:,} rows; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'':<20}{'seconds':>9}{'pred rows/s':>14}{'joined':>9}{'peak RSS MiB':>14}")
    modes = (("naive", "naive pandas join"), ("join", "datawheel join"))
    for mode, name in (*modes, ("harvest", "datawheel harvest")):
        r = _measure(mode, run)
        rate = r["seen"] / r["seconds"]
        print(f"{name:<20}{r['seconds']:>9.2f}{rate:>14,.0f}{r['rows']:>9,}{r['rss']:>14,.0f}")
    print("harvest: join + dedupe against the parent + write + validate + commit")


if __name__ == "__main__":
    main()
