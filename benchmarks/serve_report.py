"""serve_bench report: medians over rounds, datawheel's ratios against each other server
and against the best of them, the tables printed at the end, and the JSON document of
``--json-out``.

Timings only: nothing here passes or fails on a figure. A point is flagged when its
server failed, gave wrong answers or had errors (non-2xx answers, socket errors).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks.serve_harness import ServerRun
    from benchmarks.serve_setup import Workload, console
else:  # run as a script: benchmarks/ is sys.path[0]
    from serve_harness import ServerRun
    from serve_setup import Workload, console

__all__ = ["cpu_model", "json_report", "print_results", "ratios", "summarize", "tool_versions"]

NOISY_OTHER_CPU = 25.0  # % of one CPU used by other processes during a point: warn


def summarize(
    runs: list[ServerRun], servers: Sequence[str], levels: Sequence[int]
) -> list[dict[str, Any]]:
    """Per server and level: the median over rounds of req/s, p50, p99, cpu; errors summed."""
    rows = []
    for conns in levels:
        for server in servers:
            pts = [
                p for r in runs if r.server == server for p in r.points if p.concurrency == conns
            ]
            failed = sorted({r.error for r in runs if r.server == server and r.error})
            checks = {r.check for r in runs if r.server == server and r.check}
            row: dict[str, Any] = {"server": server, "concurrency": conns, "rounds": len(pts)}
            if pts:
                cpus = [p.server_cpu_percent for p in pts if p.server_cpu_percent is not None]
                others = [p.other_cpu_percent for p in pts if p.other_cpu_percent is not None]
                row |= {
                    "rps": statistics.median(p.rps for p in pts),
                    "p50_ms": statistics.median(p.p50_ms for p in pts),
                    "p99_ms": statistics.median(p.p99_ms for p in pts),
                    "server_cpu_percent": statistics.median(cpus) if cpus else None,
                    "other_cpu_percent": max(others) if others else None,
                    "requests": sum(p.requests for p in pts),
                    "errors": sum(p.errors for p in pts),
                    "non_2xx": sum(p.non_2xx for p in pts),
                    "socket_errors": sum(sum(p.socket_errors.values()) for p in pts),
                }
            row["check"] = "; ".join(sorted(checks)) if checks else None
            row["failed"] = "; ".join(failed) if failed else None
            row["flagged"] = bool(
                not pts or row.get("errors") or row["failed"] or row["check"] not in (None, "ok")
            )
            rows.append(row)
    return rows


OTHERS = ("kserve", "fastapi", "litserve", "bentoml")  # the servers users pick instead


def _ratio(conns: int, name: str, dw: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "concurrency": conns,
        "ratio": name,
        "rps": dw["rps"] / ref["rps"] if ref["rps"] else None,
        "p50": dw["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] else None,
        "p99": dw["p99_ms"] / ref["p99_ms"] if ref["p99_ms"] else None,
        "flagged": bool(dw["flagged"] or ref["flagged"]),
    }


def ratios(rows: list[dict[str, Any]], levels: Sequence[int]) -> list[dict[str, Any]]:
    """datawheel against each other server, then against the best of the non-datawheel ones.

    The best is the one with the most req/s at that level among those without errors or
    wrong answers (among all of them when every one is flagged).
    """
    out = []
    for conns in levels:
        by = {r["server"]: r for r in rows if r["concurrency"] == conns and "rps" in r}
        dw = by.get("datawheel")
        if dw is None:
            continue
        for other in ("datawheel-baseline", *OTHERS):
            ref = by.get(other)
            if ref is not None:
                out.append(_ratio(conns, f"datawheel/{other}", dw, ref))
        others = [by[o] for o in OTHERS if o in by]
        clean = [r for r in others if not r["flagged"]] or others
        if len(others) > 1:
            best = max(clean, key=lambda r: float(r["rps"]))
            out.append(
                _ratio(conns, f"datawheel/best ({best['server']})", dw, best)
                | {"best": best["server"], "best_rps": best["rps"]}
            )
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def print_results(
    rows: list[dict[str, Any]],
    rats: list[dict[str, Any]],
    runs: list[ServerRun],
    levels: Sequence[int],
) -> None:
    for conns in levels:
        table = Table(title=f"{conns} concurrent client{'s' if conns != 1 else ''}")
        cols = ("server", "req/s", "p50 ms", "p99 ms", "cpu", "other", "errors", "note")
        for col in cols:
            left = col in ("server", "note")
            table.add_column(col, justify="left" if left else "right", no_wrap=col != "note")
        for r in (r for r in rows if r["concurrency"] == conns):
            notes = []
            if r["failed"]:
                notes.append("failed")
            if r["check"] not in (None, "ok"):
                notes.append("wrong answers")
            if r.get("errors"):
                notes.append(f"{r['non_2xx']} non-2xx, {r['socket_errors']} socket errors")
            table.add_row(
                r["server"] + (" [red]![/]" if r["flagged"] else ""),
                _fmt(r.get("rps"), ",.0f"),
                _fmt(r.get("p50_ms"), ".2f"),
                _fmt(r.get("p99_ms"), ".2f"),
                _pct(r.get("server_cpu_percent")),
                _pct(r.get("other_cpu_percent")),
                str(r.get("errors", "-")),
                "; ".join(notes),
            )
        console.print(table)
        console.print(
            "  cpu: the server's CPU use (100% = one CPU); other: other processes on the machine"
        )
        noise = max(
            (r.get("other_cpu_percent") or 0.0 for r in rows if r["concurrency"] == conns),
            default=0.0,
        )
        if noise > NOISY_OTHER_CPU:
            console.print(
                f"  [yellow]other processes used up to {noise:.0f}% of a CPU during these "
                "points: the figures are noisy (rerun on a quiet machine, or use --rounds)[/]"
            )
        for q in (q for q in rats if q["concurrency"] == conns):
            flag = (
                "  [red](flagged: a server had errors or wrong answers)[/]" if q["flagged"] else ""
            )
            console.print(
                f"  {q['ratio']:<26} req/s x{_fmt(q['rps'], '.2f')}   "
                f"p50 x{_fmt(q['p50'], '.2f')}   p99 x{_fmt(q['p99'], '.2f')}{flag}"
            )
    starts = Table(title="servers")
    for col in ("server", "round", "ready after s", "rss MiB", "answers"):
        starts.add_column(col, justify="left" if col in ("server", "answers") else "right")
    for run in runs:
        starts.add_row(
            run.server,
            str(run.round),
            _fmt(run.ready_seconds, ".1f"),
            _fmt(run.rss_mib, ".0f"),
            run.error or run.check,
        )
    console.print(starts)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


_PACKAGES = {  # what each venv's version line names
    "kserve": ("kserve", "fastapi", "uvicorn", "torch"),
    "fastapi": ("fastapi", "uvicorn", "torch"),
    "litserve": ("litserve", "fastapi", "uvicorn", "torch"),
    "bentoml": ("bentoml", "torch"),
}


def tool_versions(pythons: dict[str, Path]) -> dict[str, str]:
    """wrk's version and, per server venv, the versions of its server and torch."""
    out: dict[str, str] = {}
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    out["wrk"] = (wrk.stdout + wrk.stderr).split("[", 1)[0].strip()
    for server, python in pythons.items():
        venv = python.parent.parent.name  # .venv-kserve, ...
        code = (
            "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            f"{_PACKAGES[server]!r}}}))"
        )
        proc = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            out |= {f"{venv.lstrip('.')} {k}": v for k, v in json.loads(proc.stdout).items()}
    return out


def json_report(
    args: argparse.Namespace,
    work: Workload,
    versions: dict[str, str],
    rows: list[dict[str, Any]],
    rats: list[dict[str, Any]],
    runs: list[ServerRun],
) -> dict[str, Any]:
    """What ``--json-out`` writes: the settings and machine, the summary, every run."""
    meta = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "model_file": str(work.model_file),
        "rows": len(work.bodies),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "pin": args.pin,
        "torch_threads": args.torch_threads,
        "kserve_logging": args.kserve_logging,
        "max_batch_size": args.max_batch_size,
        "max_latency_ms": args.max_latency_ms,
        "litserve_batching": args.litserve_batching,
        "load": "wrk -t1 closed loop",
    }
    return {
        "meta": meta,
        "results": rows,
        "ratios": rats,
        "runs": [asdict(r) for r in runs],
    }
