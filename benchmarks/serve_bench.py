"""Serving throughput: ``datawheel serve`` vs KServe, a bare FastAPI endpoint, LitServe, BentoML.

All of them serve the SAME TorchScript export (``model.ts`` of a registered model) on the Open
Inference Protocol v2 REST API (``POST /v2/models/NAME/infer``), on this machine, in the same
run, one server each:

* datawheel: ``datawheel serve --model NAME@champion --store file://STORE`` (main venv);
* kserve:    ``kserve.ModelServer(workers=1)`` with a minimal ``kserve.Model`` subclass
  (``benchmarks/_kserve_server.py``), in its own venv ``benchmarks/.venv-kserve``
  (created on first use: torch 2.13.0 CPU, then ``kserve`` 0.21.x; 1-2 minutes);
* fastapi:   a hand-written FastAPI + uvicorn endpoint (``benchmarks/_fastapi_server.py``),
  same venv as kserve;
* litserve:  ``litserve.LitServer`` with one inference worker and one API server, batching
  off, its ZeroMQ ``fast_queue`` on (``benchmarks/_litserve_server.py``), in its own venv
  ``benchmarks/.venv-litserve`` (torch 2.13.0 CPU first, then ``litserve`` 0.2.x);
* bentoml:   ``bentoml serve`` of a ``@bentoml.service(workers=1)`` with an ``async``
  ``@bentoml.api``, adaptive batching off (``benchmarks/_bentoml_server.py``), in its own
  venv ``benchmarks/.venv-bentoml`` (torch 2.13.0 CPU first, then ``bentoml`` 1.4.x).

Every non-datawheel server does one model call per request (batching off: kserve and fastapi
have none, LitServe's ``max_batch_size=1`` and BentoML's ``batchable=False`` are their
defaults; ``--litserve-batching`` gives LitServe datawheel's batch size and wait);
``datawheel serve`` keeps its dynamic batching (``--max-batch-size``, ``--max-latency-ms``)
unless told otherwise. Each runs one worker process and one torch
thread; LitServe and BentoML add a front process of their own (LitServe's uvicorn process
before its inference worker; BentoML's circus arbiter), pinned to the same CPU and counted in
the server's CPU.

The servers run one after another (start, wait for ``/v2/health/ready``, check that their
answers match the model's own predictions, warm up, measure every concurrency level, stop),
so they never share the CPU. The load is closed-loop ``wrk`` (N connections, each sending
the next request when the previous answer arrives), cycling over real digits rows (the
``load_digits`` pixels / 16, as datawheel ingests them) as request bodies. By default the
server is pinned to CPU 0 and wrk to CPU 1 (``--pin split``) and each server's torch uses
one thread (``--torch-threads``).

Prints req/s, p50 and p99 latency, server CPU and errors (non-2xx answers, socket errors)
per server and concurrency level, then datawheel's ratio to each other server and to the
best of the non-datawheel ones (most req/s at that level among those without errors).
A server with errors or wrong answers is flagged with "!"; the "other" column is the CPU
that other processes took during the point (noise: the machine has two CPUs). Timings only;
nothing is asserted; the exit code is 1 only when a server failed to start or to answer.
Needs ``wrk`` (``apt-get install wrk``) and ``taskset``. ``datawheel serve`` is skipped with a
message when this checkout has no such command.

This script parses the arguments and runs the rounds; the work is in its siblings:
``serve_setup.py`` (server venvs, model, workload, wrk script), ``serve_harness.py`` (one
server process under wrk, CPU accounting) and ``serve_report.py`` (medians, ratios,
tables, JSON).

    .venv/bin/python benchmarks/serve_bench.py                       # 1 and 64 clients, 10 s
    .venv/bin/python benchmarks/serve_bench.py --concurrency 1,16,64 --duration 20 \\
        --json-out serve_bench.json
    git worktree add /tmp/before HEAD~5   # then: before/after in one run
    .venv/bin/python benchmarks/serve_bench.py --servers datawheel --baseline-path /tmp/before
    .venv/bin/python benchmarks/serve_bench.py --servers kserve,fastapi --store file://STORE
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks import serve_harness as harness
    from benchmarks import serve_report as report
    from benchmarks import serve_setup as setup
else:  # run as a script: benchmarks/ is sys.path[0]
    import serve_harness as harness
    import serve_report as report
    import serve_setup as setup

SERVERS = ("datawheel", "kserve", "fastapi", "litserve", "bentoml")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return levels


def _servers(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = sorted(set(names) - set(SERVERS))
    if bad or not names:
        raise argparse.ArgumentTypeError(f"servers are {', '.join(SERVERS)}; got {text!r}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0] if __doc__ else None,
    )
    add = parser.add_argument
    add("--concurrency", type=_levels, default="1,64", help="client counts (default 1,64)")
    add("--duration", type=float, default=10.0, help="seconds per point (default 10)")
    add("--warmup", type=float, default=2.0, help="warm-up seconds before each point (default 2)")
    add("--rounds", type=int, default=1, help="repeat all servers; report medians (default 1)")
    add(
        "--servers",
        type=_servers,
        default=",".join(SERVERS),
        help=f"which, in this order (default {','.join(SERVERS)})",
    )
    add(
        "--store",
        default=None,
        help="file:// store with MODEL registered; its champion is "
        "copied into the work dir (default: train digits into the work dir)",
    )
    add("--model", default="digits", help="registered model name (default digits)")
    add("--epochs", type=int, default=5, help="training epochs without --store (default 5)")
    add("--rows", type=int, default=64, help="distinct digits rows sent (default 64)")
    add(
        "--pin",
        choices=("split", "none"),
        default="split",
        help="split (default): server on CPU 0, wrk on CPU 1 (taskset); none: no pinning",
    )
    add(
        "--torch-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS and MKL_NUM_THREADS of every server (default 1)",
    )
    add(
        "--max-batch-size",
        type=int,
        default=None,
        help="datawheel serve --max-batch-size (default: the server's own)",
    )
    add(
        "--max-latency-ms",
        type=float,
        default=None,
        help="datawheel serve --max-latency-ms (default: the server's own)",
    )
    add(
        "--datawheel-arg",
        action="append",
        metavar="ARG",
        help="extra argument for datawheel serve (repeatable), e.g. "
        "--datawheel-arg=--ledger-flush-seconds --datawheel-arg=10",
    )
    add(
        "--kserve-logging",
        action="store_true",
        help="keep kserve's default per-request log "
        "lines (uvicorn access log, latency log); off by default",
    )
    add(
        "--kserve-venv",
        type=Path,
        default=setup.BENCH / ".venv-kserve",
        help="venv with kserve (default benchmarks/.venv-kserve, created on first use)",
    )
    add(
        "--litserve-batching",
        action="store_true",
        help="turn LitServe's dynamic batching on, with datawheel's --max-batch-size and "
        "--max-latency-ms (64 rows, 2 ms unless given); off by default",
    )
    add(
        "--litserve-venv",
        type=Path,
        default=setup.BENCH / ".venv-litserve",
        help="venv with litserve (default benchmarks/.venv-litserve, created on first use)",
    )
    add(
        "--bentoml-venv",
        type=Path,
        default=setup.BENCH / ".venv-bentoml",
        help="venv with bentoml (default benchmarks/.venv-bentoml, created on first use)",
    )
    add("--no-install", action="store_true", help="fail instead of creating a missing venv")
    add(
        "--datawheel-bin",
        type=Path,
        default=Path(sys.executable).parent / "datawheel",
        help="datawheel CLI (default: beside this Python)",
    )
    add(
        "--baseline-path",
        type=Path,
        default=None,
        help="a checkout of datawheel (e.g. a git worktree of an older commit) to measure as "
        f"'{harness.BASELINE}' in the same run, beside this tree's datawheel",
    )
    add(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for a server's /v2/health/ready (default 180)",
    )
    add(
        "--workdir",
        type=Path,
        default=None,
        help="server logs, wrk script and served store "
        "(default: a temporary dir, removed after a run without failures unless --keep)",
    )
    add("--keep", action="store_true", help="keep the temporary work dir")
    add("--json-out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.rows < 1 or args.torch_threads < 1:
        parser.error("--rounds, --duration, --rows and --torch-threads must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if args.pin == "split" and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        setup.console.print("[yellow]taskset or a 2nd CPU missing: --pin none[/]")
        args.pin = "none"
    servers: list[str] = list(args.servers)
    if args.baseline_path is not None:
        if not (args.baseline_path / "datawheel" / "__init__.py").is_file():
            raise SystemExit(f"--baseline-path {args.baseline_path} has no datawheel package")
        args.baseline_path = args.baseline_path.resolve()
        if "datawheel" in servers and harness.BASELINE not in servers:
            servers.insert(servers.index("datawheel") + 1, harness.BASELINE)

    args.datawheel_help = None
    if "datawheel" in servers:
        args.datawheel_help = harness.datawheel_serve_help(args.datawheel_bin)
        if args.datawheel_help is None:
            setup.console.print(
                f"[yellow]'{args.datawheel_bin} serve' is not available: skipping datawheel[/]"
            )
            servers.remove("datawheel")
    args.pythons = {}  # server -> the python of its venv
    for server in servers:
        if server in harness.DATAWHEEL_SERVERS:
            continue
        venv_name = setup.VENVS[server]
        venv: Path = getattr(args, f"{venv_name}_venv").resolve()
        args.pythons[server] = setup.ensure_venv(
            venv, setup.REQUIREMENTS[venv_name], not args.no_install
        )
    if not servers:
        raise SystemExit("no server to measure")

    temporary = args.workdir is None
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="serve-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    clean = False
    try:
        clean = bench(args, servers, workdir)
    finally:
        if temporary and clean and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            setup.console.print(f"work dir (server logs, wrk script, store) kept: {workdir}")
    return 0 if clean else 1


def bench(args: argparse.Namespace, servers: list[str], workdir: Path) -> bool:
    """Measure ``servers`` and print (and maybe write) the results; True if none failed."""
    if args.store:
        store = setup.copy_model(setup.store_path(args.store), args.model, workdir / "store")
    else:
        store = setup.train_model(args.datawheel_bin, workdir, args.epochs)
    work = setup.make_workload(args.model, store, args.rows)
    lua = setup.write_lua(work.bodies, workdir / "post.lua")
    versions = report.tool_versions(args.pythons)
    setup.console.print(
        f"model {work.model_file}; {len(work.bodies)} digits rows; concurrency "
        f"{args.concurrency}; {args.duration:g} s per point after {args.warmup:g} s warm-up; "
        f"{args.rounds} round(s); pin={args.pin}; torch threads={args.torch_threads}; "
        f"{report.cpu_model()}, {os.cpu_count()} CPUs; logs in {workdir}"
    )

    runs: list[harness.ServerRun] = []
    for rnd in range(1, args.rounds + 1):
        for server in servers:
            runs.append(harness.bench_server(server, rnd, args, work, lua, workdir))

    rows = report.summarize(runs, servers, args.concurrency)
    rats = report.ratios(rows, args.concurrency)
    report.print_results(rows, rats, runs, args.concurrency)
    if args.json_out is not None:
        doc = report.json_report(args, work, versions, rows, rats, runs)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
        setup.console.print(f"wrote {args.json_out}")
    return not any(r.error for r in runs)


if __name__ == "__main__":
    raise SystemExit(main())
