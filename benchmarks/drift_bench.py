"""Drift detection speed: datawheel's ``compare`` vs Evidently 0.7's DataDriftPreset, same run.

The same seeded synthetic data for both: a reference and a current sample of N rows x 64
numeric features (normal, each feature its own mean and scale; float32 by default, the dtype
datawheel datasets hold, ``--dtype float64`` for doubles), where the current sample has
a few features shifted (mean +0.5 sd, std x2, mean +0.1 sd, a 5% tail pushed out) and the
rest drawn from the reference distribution. For each size (``--sizes``, 100k and 1M rows
by default):

* datawheel: ``datawheel.monitoring.engine.compare(reference_frame, current_frame)`` with
  its default config, timed in this process (the frames are already in memory; the best of
  ``--repeat`` runs): cold, the reference sorted and gridded inside the timing, and warm,
  ``compare(prepare_reference(reference_frame), current_frame)`` with the reference
  prepared once beforehand;
* Evidently: ``Report([DataDriftPreset()]).run(current, reference)`` with every default, in
  its own venv ``benchmarks/.venv-evidently`` (created on first use: ``evidently>=0.7,<0.8``
  with ``pandas<3``, since evidently 0.7.23 does not import on pandas 3; 2-3 minutes), run
  by ``benchmarks/_evidently_drift.py`` in a subprocess that reads the same rows from
  Parquet files (not timed) and times ``run`` after a small warm-up report.

Both times, their ratio and what each flagged are printed side by side. Then the bounded
memory check: ``--stream-rows`` (10M) current rows are written once as a Parquet file with
row groups of 256k rows (float32, ~2.5 GB, kept in the work dir for later runs), and a child
process compares them, streaming the row groups, against the 1M-row reference saved as a
``drift_reference.json``; it reports its own peak RSS (``VmHWM`` in ``/proc/self/status``)
before and after streaming, next to what the rows would take in memory.

Timings only: nothing is asserted. The CPUs may be shared (this machine has two), so read
the ratio, not the absolute times, and rerun when something else was busy.

    .venv/bin/python benchmarks/drift_bench.py                        # 100k and 1M, 10M RSS
    .venv/bin/python benchmarks/drift_bench.py --sizes 100000 --skip-evidently --stream-rows 0
    .venv/bin/python benchmarks/drift_bench.py --json-out drift_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks.serve_setup import _run_checked
else:  # run as a script: benchmarks/ is sys.path[0]
    from serve_setup import _run_checked

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
EVIDENTLY_REQUIREMENTS = ("evidently>=0.7,<0.8", "pandas<3", "numpy", "scipy", "pyarrow")
_STAMP = ".drift-bench-installed"
ROW_GROUP = 256 * 1024
SHIFTS = {  # feature index -> what the current sample does to it
    0: "mean +0.5 sd",
    1: "std x2",
    2: "mean +0.1 sd",
    3: "5% tail at +4 sd",
}


def _print(text: str = "") -> None:
    print(text, flush=True)  # plain lines: whole when piped


def ensure_evidently_venv(venv: Path, install: bool) -> Path:
    """The venv's python, creating the venv (evidently 0.7.x, pandas < 3) if needed."""
    python = venv / "bin" / "python"
    stamp = venv / _STAMP
    if python.exists() and stamp.exists():
        return python
    if not install:
        raise SystemExit(f"{venv} is missing; run without --no-install to create it")
    _print(f"creating {venv} ({' '.join(EVIDENTLY_REQUIREMENTS)}) ...")
    start = time.perf_counter()
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        _run_checked([base, "-m", "venv", str(venv)], "creating the evidently venv")
    _run_checked(
        [str(python), "-m", "pip", "install", "-q", *EVIDENTLY_REQUIREMENTS],
        "pip install evidently",
    )
    stamp.write_text(" ".join(EVIDENTLY_REQUIREMENTS) + "\n")
    _print(f"  installed in {time.perf_counter() - start:.0f} s")
    return python


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    features: int
    seed: int

    @property
    def names(self) -> list[str]:
        return [f"f{i:02d}" for i in range(self.features)]

    def params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return rng.uniform(-5, 5, self.features), rng.uniform(0.5, 3.0, self.features)


def reference_block(spec: Spec, rows: int, seed: int, dtype: type = np.float64) -> np.ndarray:
    mean, scale = spec.params()
    z = np.random.default_rng(seed).standard_normal((rows, spec.features), dtype=np.float64)
    out: np.ndarray = (z * scale + mean).astype(dtype, copy=False)
    return out


def current_block(spec: Spec, rows: int, seed: int, dtype: type = np.float64) -> np.ndarray:
    """Reference-distributed rows with the SHIFTS applied (seeded: same rows every run)."""
    mean, scale = spec.params()
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, spec.features), dtype=np.float64)
    k = spec.features
    if k > 0:
        z[:, 0] += 0.5
    if k > 1:
        z[:, 1] *= 2.0
    if k > 2:
        z[:, 2] += 0.1
    if k > 3:
        tail = rng.random(rows) < 0.05
        z[tail, 3] = 4.0 + np.abs(z[tail, 3])
    out: np.ndarray = (z * scale + mean).astype(dtype, copy=False)
    return out


def frames(spec: Spec, rows: int, dtype: type = np.float32) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = reference_block(spec, rows, spec.seed + 1 + rows, dtype)
    cur = current_block(spec, rows, spec.seed + 2 + rows, dtype)
    return pd.DataFrame(ref, columns=spec.names), pd.DataFrame(cur, columns=spec.names)


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False, row_group_size=ROW_GROUP)
        tmp.rename(path)
    return path


def write_stream_file(spec: Spec, rows: int, path: Path) -> Path:
    """``rows`` current rows (float32) as Parquet, written one row group at a time."""
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    _print(f"writing {rows:,} current rows to {path} (once; reused by later runs) ...")
    start = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([(n, pa.float32()) for n in spec.names])
    with pq.ParquetWriter(tmp, schema) as writer:
        for i, lo in enumerate(range(0, rows, ROW_GROUP)):
            block = current_block(spec, min(ROW_GROUP, rows - lo), spec.seed + 1000 + i, np.float32)
            arrays = [pa.array(block[:, j]) for j in range(spec.features)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), ROW_GROUP)
    tmp.rename(path)
    _print(
        f"  written in {time.perf_counter() - start:.0f} s, {path.stat().st_size / 2**30:.2f} GiB"
    )
    return path


# --- the two sides -------------------------------------------------------------------------


def datawheel_compare(ref: pd.DataFrame, cur: pd.DataFrame, repeat: int) -> dict[str, Any]:
    """Cold: ``compare(reference_frame, current_frame)``, the reference sorted and gridded
    in the timing, as Evidently does. Warm: ``compare(prepare_reference(ref), current)``
    with the reference prepared once, outside the timing, as a process comparing window
    after window against one model's training split keeps it."""
    from datawheel.monitoring.engine import compare, prepare_reference

    seconds, warm = [], []
    report = None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        report = compare(ref, cur)
        seconds.append(time.perf_counter() - start)
    prepared = prepare_reference(ref)
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        compare(prepared, cur)
        warm.append(time.perf_counter() - start)
    assert report is not None
    out = report.to_json_dict()
    return {
        "seconds": seconds,
        "warm_seconds": warm,
        "drifted_features": list(out["drifted_features"]),
        "dataset_drift": bool(out["dataset_drift"]),
        "tests": sorted({str(f["test"]) for f in out["features"]}),
    }


def evidently_compare(
    python: Path, ref_path: Path, cur_path: Path, repeat: int, timeout: float
) -> dict[str, Any]:
    script = BENCH / "_evidently_drift.py"
    cmd = [str(python), str(script), str(ref_path), str(cur_path), "--repeat", str(repeat)]
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- bounded memory: a child process streams the big file ---------------------------------


def _peak_mib() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    an exec from the forked parent, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(reference_json: Path, current_parquet: Path) -> None:
    """Child mode: stream ``current_parquet`` against a saved reference; print JSON."""
    from datawheel.monitoring.baseline import DriftReference
    from datawheel.monitoring.engine import compare

    reference = DriftReference.load(reference_json)
    before = _peak_mib()
    start = time.perf_counter()
    report = compare(reference, current_parquet)  # a Parquet path: streamed by row group
    seconds = time.perf_counter() - start
    out = report.to_json_dict()
    result = {
        "rows": out["current_rows"],
        "seconds": seconds,
        "peak_mib_before": before,
        "peak_mib": _peak_mib(),
        "drifted_features": out["drifted_features"],
    }
    print(json.dumps(result))


def stream_check(spec: Spec, ref: pd.DataFrame, rows: int, workdir: Path) -> dict[str, Any]:
    from datawheel.monitoring.baseline import build_reference

    path = write_stream_file(spec, rows, workdir / f"current-{rows}x{spec.features}.parquet")
    reference_json = workdir / f"reference-{len(ref)}x{spec.features}.json"
    build_reference(ref, spec.names).save(reference_json)
    cmd = [sys.executable, __file__, "--rss-child", str(reference_json), str(path)]
    proc = _run_checked(cmd, "the streaming child")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["in_memory_mib"] = rows * spec.features * 4 / 2**20
    result["file_mib"] = path.stat().st_size / 2**20
    return result


# --- report --------------------------------------------------------------------------------


def _fmt_s(seconds: list[float] | None) -> str:
    return f"{min(seconds):.3f} s" if seconds else "-"


def _names(found: list[str], spec: Spec) -> str:
    shifted = {spec.names[i] for i in SHIFTS if i < spec.features}
    hit = sorted(shifted & set(found))
    extra = sorted(set(found) - shifted)
    return f"{len(hit)}/{len(shifted)} shifted" + (f" +{len(extra)} others" if extra else "")


def print_table(rows: list[dict[str, Any]], spec: Spec) -> None:
    _print()
    header = (
        f"{'rows':>10}  {'datawheel':>11}  {'warm':>9}  {'evidently':>11}  {'ratio':>8}  flagged"
    )
    _print(header)
    _print("-" * len(header))
    for r in rows:
        dw, ev = r["datawheel"], r.get("evidently") or {}
        ratio = "-"
        if ev.get("seconds") and dw["seconds"]:
            ratio = f"{min(ev['seconds']) / min(dw['seconds']):.0f}x"
        flagged = f"datawheel {_names(dw['drifted_features'], spec)}"
        if ev.get("error"):
            flagged += f"; evidently failed ({ev['error']})"
        elif ev:
            flagged += f"; evidently {_names(ev.get('drifted', []), spec)}"
            if ev.get("drifted_columns") != len(ev.get("drifted", [])):
                flagged += f" (it counts {ev.get('drifted_columns')})"
        _print(
            f"{r['rows']:>10,}  {_fmt_s(dw['seconds']):>11}  {_fmt_s(dw.get('warm_seconds')):>9}"
            f"  {_fmt_s(ev.get('seconds')):>11}  {ratio:>8}  {flagged}"
        )
    _print(
        "datawheel: compare() with the reference prepared in the timing (cold); warm: the "
        "reference prepared once beforehand. ratio: Evidently / datawheel cold."
    )


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of row counts: {text!r}") from exc
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("sizes must be at least 2 rows")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--sizes", type=_sizes, default=[100_000, 1_000_000], help="rows per side (100000,1e6)")
    add("--features", type=int, default=64)
    add("--seed", type=int, default=0)
    add(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="feature dtype of both samples (float32: what datawheel datasets hold)",
    )
    add("--repeat", type=int, default=3, help="datawheel runs per size (the best is shown)")
    add("--evidently-repeat", type=int, default=1, help="Evidently runs per size")
    add("--skip-evidently", action="store_true", help="time datawheel only")
    add("--evidently-timeout", type=float, default=3600, help="seconds per Evidently size")
    add("--stream-rows", type=int, default=10_000_000, help="rows streamed for peak RSS (0: skip)")
    add("--workdir", type=Path, default=REPO / ".datawheel" / "drift-bench")
    add("--venv", type=Path, default=BENCH / ".venv-evidently")
    add("--no-install", action="store_true", help="fail instead of creating the evidently venv")
    add("--json-out", type=Path, default=None, help="also write the results as JSON here")
    add(
        "--rss-child",
        nargs=2,
        metavar=("REFERENCE_JSON", "CURRENT_PARQUET"),
        help=argparse.SUPPRESS,
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.rss_child:
        rss_child(Path(args.rss_child[0]), Path(args.rss_child[1]))
        return
    spec = Spec(args.features, args.seed)
    dtype = np.float32 if args.dtype == "float32" else np.float64
    args.workdir.mkdir(parents=True, exist_ok=True)
    python = None if args.skip_evidently else ensure_evidently_venv(args.venv, not args.no_install)
    shifted = ", ".join(
        f"{spec.names[i]} {what}" for i, what in SHIFTS.items() if i < spec.features
    )
    _print(
        f"drift_bench: {spec.features} numeric {args.dtype} features, current shifted on {shifted}"
    )
    _print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"{os.cpu_count()} CPUs; work dir {args.workdir}"
    )
    results: list[dict[str, Any]] = []
    for rows in args.sizes:
        ref, cur = frames(spec, rows, dtype)
        _print(f"{rows:,} rows: datawheel compare() x{args.repeat}, cold and warm ...")
        row: dict[str, Any] = {"rows": rows, "datawheel": datawheel_compare(ref, cur, args.repeat)}
        if python is not None:
            stem = args.workdir / f"{rows}x{spec.features}"  # the same rows, for its process
            ref_path = write_parquet(
                ref, stem.with_name(f"reference-{stem.name}-{args.dtype}.parquet")
            )
            cur_path = write_parquet(
                cur, stem.with_name(f"current-{stem.name}-{args.dtype}.parquet")
            )
            _print(f"{rows:,} rows: Evidently DataDriftPreset x{args.evidently_repeat} ...")
            row["evidently"] = evidently_compare(
                python, ref_path, cur_path, args.evidently_repeat, args.evidently_timeout
            )
        results.append(row)
        del ref, cur
    print_table(results, spec)
    evidently: dict[str, Any] = next(
        (r["evidently"] for r in results if r.get("evidently", {}).get("seconds")), {}
    )
    if evidently:
        _print(
            f"evidently {evidently.get('evidently')} (pandas {evidently.get('pandas')}), "
            f"methods: {evidently.get('methods')}"
        )
    out: dict[str, Any] = {"sizes": results}
    if args.stream_rows:
        ref, _ = frames(spec, max(args.sizes), dtype)
        s = stream_check(spec, ref, args.stream_rows, args.workdir)
        del ref
        out["stream"] = s
        _print()
        _print(
            f"streaming {s['rows']:,} current rows x {spec.features} (row groups of "
            f"{ROW_GROUP:,}) against a saved reference: {s['seconds']:.1f} s, peak RSS "
            f"{s['peak_mib']:.0f} MiB ({s['peak_mib_before']:.0f} MiB before streaming; the "
            f"rows in memory would take {s['in_memory_mib']:,.0f} MiB, the file "
            f"{s['file_mib']:,.0f} MiB)"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
