"""serve_bench process harness: run one server, measure it with wrk, account its CPU.

:func:`bench_server` is one server in one round: start it in its own process group
(pinned to CPU 0 with ``--pin split``), wait for ``/v2/health/ready``, check that its
answers match ``model.ts``, then for each concurrency level a wrk warm-up and a measured
wrk run (on CPU 1), with the CPU the server's process group, wrk and everything else on
the machine used meanwhile; finally SIGTERM the group (SIGKILL what is left). Its result
is a :class:`ServerRun` holding one :class:`Point` per level.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks.serve_setup import BENCH, Workload, console, copy_model
else:  # run as a script: benchmarks/ is sys.path[0]
    from serve_setup import BENCH, Workload, console, copy_model

__all__ = [
    "Point",
    "ServerRun",
    "bench_server",
    "check_answers",
    "datawheel_serve_help",
    "parse_wrk",
    "run_wrk",
    "running",
]


@dataclass
class Point:
    """One wrk measurement of one server at one concurrency level."""

    server: str
    concurrency: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int]
    server_cpu_percent: float | None
    wrk_cpu_percent: float | None = None
    other_cpu_percent: float | None = None  # everything else on the machine: noise

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


@dataclass
class ServerRun:
    """What happened to one server in one round: start-up, answer check, its points."""

    server: str
    round: int
    command: list[str]
    ready_seconds: float | None = None
    rss_mib: float | None = None
    check: str = ""
    error: str | None = None
    log: str = ""
    points: list[Point] = field(default_factory=list)


BASELINE = "datawheel-baseline"  # datawheel serve from another checkout (--baseline-path)
DATAWHEEL_SERVERS = ("datawheel", BASELINE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def datawheel_serve_help(datawheel: Path) -> str | None:
    """``datawheel serve --help``, or None when the command does not exist (yet)."""
    try:
        proc = subprocess.run(
            [str(datawheel), "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def server_command(
    server: str, args: argparse.Namespace, work: Workload, port: int, rundir: Path
) -> list[str]:
    if server in DATAWHEEL_SERVERS:
        # A fresh copy of the model per run: datawheel serve appends every prediction to a
        # ledger in its store, and a store that kept the earlier rounds' ledger would make
        # later rounds start slower and bigger, and serve slower.
        store = copy_model(work.store, work.model_name, rundir / "store")
        cmd = [
            str(args.datawheel_bin),
            *("serve", "--model", f"{work.model_name}@champion"),
            *("--store", f"file://{store}", "--host", "127.0.0.1", "--port", str(port)),
        ]
        if args.max_batch_size is not None:
            cmd += ["--max-batch-size", str(args.max_batch_size)]
        if args.max_latency_ms is not None:
            cmd += ["--max-latency-ms", str(args.max_latency_ms)]
        cmd += list(args.datawheel_arg or [])
        if "--spool-dir" in (args.datawheel_help or ""):
            cmd += ["--spool-dir", str(rundir / "spool")]  # keep the ledger out of the repo
        return cmd
    script = BENCH / f"_{server}_server.py"
    cmd = [
        str(args.pythons[server]),  # the server's own venv (serve_setup.VENVS)
        str(script),
        *("--model-file", str(work.model_file), "--name", work.model_name, "--port", str(port)),
    ]
    if server == "kserve" and not args.kserve_logging:
        cmd.append("--quiet")
    if server == "litserve" and args.litserve_batching:  # datawheel's own batch settings
        cmd += ["--max-batch-size", str(args.max_batch_size or 64)]
        cmd += ["--batch-timeout-ms", str(args.max_latency_ms or 2.0)]
    return cmd


def server_env(
    torch_threads: int, server: str = "", baseline: Path | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    if server == BASELINE and baseline is not None:
        # the same venv and CLI, but the datawheel package of another checkout comes first
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(baseline), env.get("PYTHONPATH", "")) if p
        )
    env.pop("DATAWHEEL_SERVE_TOKEN", None)  # no auth on the benchmark's requests
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(torch_threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _group_pids(pgid: int) -> list[int]:
    """The live processes of the server's group, and their descendants in other sessions.

    BentoML's circus arbiter starts its worker in a session of its own, so the worker is
    found through its parent rather than its process group.
    """
    parents: dict[int, int] = {}
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])  # fields after the name: state ppid pgrp ...
        if int(fields[2]) == pgid:
            members.add(pid)
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in members} - members
        members |= children
        grew = bool(children)
    return sorted(members)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in the group (the server and any workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy (not idle, not iowait) since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished, waited-for children (here: wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def group_rss_mib(pgid: int) -> float:
    total_kib = 0
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


@contextlib.contextmanager
def running(
    cmd: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in its own process group; on exit SIGTERM the group, then SIGKILL it."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    # found before the leader exits: a worker outside the group is orphaned when it does
    tree = [pid for pid in _group_pids(proc.pid) if pid != proc.pid]
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # the group may outlive its leader (a worker process): make sure it is gone
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in tree:  # what lived outside the group (BentoML's worker)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout:.0f} s ({url})")


def predicted_label(doc: Any) -> str | None:
    """The class name in a v2 response: the ``label`` output, else argmax of ``probabilities``."""
    outputs = {o.get("name"): o for o in doc.get("outputs", []) if isinstance(o, dict)}
    label = outputs.get("label")
    if label and label.get("data"):
        return str(label["data"][0])
    probs = outputs.get("probabilities")
    if probs and probs.get("data"):
        values = [float(v) for v in probs["data"]]
        return str(values.index(max(values)))
    return None


def check_answers(url: str, work: Workload) -> str:
    """POST every body once; 'ok' when each answer names the class model.ts predicts."""
    wrong = 0
    for body, expected in zip(work.bodies, work.expected, strict=True):
        req = urllib.request.Request(
            url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
        if predicted_label(doc) != expected:
            wrong += 1
    if wrong:
        return f"{wrong}/{len(work.bodies)} answers differ from model.ts"
    return "ok"


# --------------------------------------------------------------------------- wrk

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/sec, p50/p99 (ms), request count, duration, non-2xx and socket errors."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text, re.M)
    pct = {
        m.group(1): _ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    }
    if not rps or not total or "50" not in pct or "99" not in pct:
        raise RuntimeError(f"could not parse wrk output:\n{text}")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    names = ("connect", "read", "write", "timeout")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "requests": int(total.group(1)),
        "seconds": _ms(total.group(2), total.group(3)) / 1e3,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": {n: int(sock.group(i + 1)) if sock else 0 for i, n in enumerate(names)},
    }


def run_wrk(
    url: str, connections: int, seconds: float, lua: Path, cpu: str | None
) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


def bench_server(
    server: str,
    rnd: int,
    args: argparse.Namespace,
    work: Workload,
    lua: Path,
    workdir: Path,
) -> ServerRun:
    port = free_port()
    rundir = workdir / f"{server}-round{rnd}"  # its log (and datawheel's store and spool)
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    cmd = server_command(server, args, work, port, rundir)
    if args.pin == "split":
        cmd = ["taskset", "-c", "0", *cmd]
    run = ServerRun(server=server, round=rnd, command=cmd)
    base = f"http://127.0.0.1:{port}"
    infer_url = f"{base}/v2/models/{work.model_name}/infer"
    log_path = rundir / "server.log"
    run.log = str(log_path)
    wrk_cpu = "1" if args.pin == "split" else None
    console.print(f"[bold]{server}[/] (round {rnd}): starting on port {port} ...")
    try:
        with running(
            cmd, server_env(args.torch_threads, server, args.baseline_path), log_path
        ) as proc:
            run.ready_seconds = wait_ready(proc, f"{base}/v2/health/ready", args.ready_timeout)
            run.check = check_answers(infer_url, work)
            console.print(f"  ready in {run.ready_seconds:.1f} s; answers: {run.check}")
            for conns in args.concurrency:
                if args.warmup > 0:
                    run_wrk(infer_url, conns, args.warmup, lua, wrk_cpu)
                cpu0, wrk0, busy0 = (
                    group_cpu_seconds(proc.pid),
                    children_cpu_seconds(),
                    machine_busy_seconds(),
                )
                t0 = time.perf_counter()
                res = run_wrk(infer_url, conns, args.duration, lua, wrk_cpu)
                wall = time.perf_counter() - t0
                cpu = group_cpu_seconds(proc.pid) - cpu0
                wrk = children_cpu_seconds() - wrk0
                busy = machine_busy_seconds() - busy0
                point = Point(
                    server=server,
                    concurrency=conns,
                    round=rnd,
                    server_cpu_percent=100.0 * cpu / wall,
                    wrk_cpu_percent=100.0 * wrk / wall,
                    other_cpu_percent=max(0.0, 100.0 * (busy - cpu - wrk) / wall),
                    **res,
                )
                run.points.append(point)
                console.print(
                    f"  c={conns:<4} {point.rps:9.1f} req/s  p50 {point.p50_ms:8.2f} ms  "
                    f"p99 {point.p99_ms:8.2f} ms  cpu {point.server_cpu_percent:4.0f}%  "
                    f"wrk {point.wrk_cpu_percent:4.0f}%  other {point.other_cpu_percent:4.0f}%  "
                    f"errors {point.errors}"
                )
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with code {proc.returncode} during the run")
            run.rss_mib = group_rss_mib(proc.pid)
    except RuntimeError as exc:
        run.error = str(exc)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        console.print(f"  [red]{server} failed:[/] {exc}\n{tail}")
    return run
