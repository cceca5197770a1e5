"""Serving throughput: ``datawheel serve`` vs KServe's ModelServer vs a bare FastAPI endpoint.

All three serve the SAME TorchScript export (``model.ts`` of a registered model) on the Open
Inference Protocol v2 REST API (``POST /v2/models/NAME/infer``), on this machine, in the same
run, one server process each:

* datawheel: ``datawheel serve --model NAME@champion --store file://STORE`` (main venv);
* kserve:    ``kserve.ModelServer(workers=1)`` with a minimal ``kserve.Model`` subclass
  (``benchmarks/_kserve_server.py``), in its own venv ``benchmarks/.venv-kserve``
  (created on first use: torch 2.13.0 CPU, then ``kserve`` 0.21.x; 1-2 minutes);
* fastapi:   a hand-written FastAPI + uvicorn endpoint (``benchmarks/_fastapi_server.py``),
  same venv as kserve.

The servers run one after another (start, wait for ``/v2/health/ready``, check that their
answers match the model's own predictions, warm up, measure every concurrency level, stop),
so they never share the CPU. The load is closed-loop ``wrk`` (N connections, each sending
the next request when the previous answer arrives), cycling over real digits rows (the
``load_digits`` pixels / 16, as datawheel ingests them) as request bodies. By default the
server is pinned to CPU 0 and wrk to CPU 1 (``--pin split``) and each server's torch uses
one thread (``--torch-threads``).

Prints req/s, p50 and p99 latency, server CPU and errors (non-2xx answers, socket errors)
per server and concurrency level, then the ratios datawheel/kserve and datawheel/fastapi.
A server with errors or wrong answers is flagged with "!"; the "other" column is the CPU
that other processes took during the point (noise: the machine has two CPUs). Timings only;
nothing is asserted; the exit code is 1 only when a server failed to start or to answer.
Needs ``wrk`` (``apt-get install wrk``) and ``taskset``. ``datawheel serve`` is skipped with a
message when this checkout has no such command.

    .venv/bin/python benchmarks/serve_bench.py                       # 1 and 64 clients, 10 s
    .venv/bin/python benchmarks/serve_bench.py --concurrency 1,16,64 --duration 20 \\
        --json-out serve_bench.json
    .venv/bin/python benchmarks/serve_bench.py --servers kserve,fastapi --store file://STORE
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
SERVERS = ("datawheel", "kserve", "fastapi")
KSERVE_REQUIREMENTS = ("torch==2.13.0", "kserve>=0.21,<0.22")  # in this order: CPU torch first
_STAMP = ".serve-bench-installed"
NOISY_OTHER_CPU = 25.0  # % of one CPU used by other processes during a point: warn

console = Console(soft_wrap=True)  # progress lines stay whole when piped


# --------------------------------------------------------------------------- data classes


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


@dataclass(frozen=True)
class Workload:
    model_name: str
    model_file: Path
    store: Path
    bodies: list[str]
    expected: list[str]  # the class name model.ts predicts for each body


# --------------------------------------------------------------------------- set-up


def _run_checked(cmd: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def ensure_kserve_venv(venv: Path, install: bool) -> Path:
    """The venv's python, creating the venv (torch CPU first, then kserve) if needed."""
    python = venv / "bin" / "python"
    stamp = venv / _STAMP
    if python.exists() and stamp.exists():
        return python
    if not install:
        raise SystemExit(f"{venv} is missing; run without --no-install to create it")
    console.print(f"[bold]creating {venv}[/] ({', then '.join(KSERVE_REQUIREMENTS)}) ...")
    start = time.perf_counter()
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        _run_checked([base, "-m", "venv", str(venv)], "creating the kserve venv")
    for requirement in KSERVE_REQUIREMENTS:
        # One at a time: torch==2.13.0 resolves to the CPU wheel on local disk; kserve after it
        # then finds torch satisfied instead of pulling a CUDA build.
        _run_checked(
            [str(python), "-m", "pip", "install", "-q", requirement], f"pip install {requirement}"
        )
    stamp.write_text(" ".join(KSERVE_REQUIREMENTS) + "\n")
    console.print(f"  installed in {time.perf_counter() - start:.0f} s")
    return python


def _store_path(store: str) -> Path:
    if store.startswith("file://"):
        return Path(store[len("file://") :]).expanduser().resolve()
    if "://" in store:
        raise SystemExit(f"--store {store!r}: only file:// stores are supported here")
    return Path(store).expanduser().resolve()


def train_model(datawheel: Path, workdir: Path, epochs: int) -> Path:
    """Train and register digits into a fresh store under ``workdir``; the store's path."""
    store = workdir / "store"
    console.print(f"[bold]training[/] digits ({epochs} epochs) into {store} ...")
    start = time.perf_counter()
    _run_checked(
        [
            str(datawheel),
            *("run", "training", "--local", "--store", f"file://{store}"),
            *("--param", f"epochs={epochs}", "--json"),
        ],
        "datawheel run training",
        cwd=workdir,
        env={**os.environ, "DATAWHEEL_CHECKPOINT_DIR": str(workdir / "checkpoints")},
    )
    console.print(f"  trained in {time.perf_counter() - start:.0f} s")
    return store


def champion_file(store: Path, model: str, alias: str = "champion") -> Path:
    alias_file = store / "models" / model / "aliases" / f"{alias}.json"
    if not alias_file.is_file():
        raise SystemExit(f"{alias_file} not found: is {model!r} registered in {store}?")
    version = str(json.loads(alias_file.read_text())["version"])
    path = store / "models" / model / "versions" / version / "model.ts"
    if not path.is_file():
        raise SystemExit(f"{path} not found")
    return path


def copy_model(src: Path, model: str, dest: Path) -> Path:
    """A store at ``dest`` with ``src``'s model: its aliases and champion version only.

    The benchmark never serves from the caller's store: ``datawheel serve`` writes its
    prediction ledger into the store it serves from.
    """
    version_dir = champion_file(src, model).parent
    if dest.exists():
        shutil.rmtree(dest)

    def skip(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == version_dir.parent:
            return [n for n in names if n != version_dir.name]
        return []

    shutil.copytree(src / "models" / model, dest / "models" / model, ignore=skip)
    return dest


def make_workload(model: str, store: Path, rows: int) -> Workload:
    """Request bodies from real digits rows, and the class model.ts predicts for each."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    model_file = champion_file(store, model)
    classes = [
        str(c) for c in json.loads((model_file.parent / "transform.json").read_text())["classes"]
    ]
    data = np.asarray(load_digits().data, dtype=np.float32) / 16.0  # as datawheel ingests digits
    pick = np.linspace(0, len(data) - 1, num=min(rows, len(data))).astype(int)
    x = data[pick]
    module = torch.jit.load(str(model_file), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        predicted = module(torch.from_numpy(x)).argmax(dim=1).tolist()
    bodies = [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, x.shape[1]],
                        "datatype": "FP32",
                        "data": [float(v) for v in row],
                    }
                ]
            },
            separators=(",", ":"),
        )
        for row in x
    ]
    return Workload(model, model_file, store, bodies, [classes[i] for i in predicted])


def write_lua(bodies: Sequence[str], path: Path) -> Path:
    """A wrk script that POSTs the bodies round-robin (requests built once, in init)."""
    for body in bodies:
        if "]==]" in body:
            raise ValueError("body contains the Lua long-bracket terminator")
    items = ",\n".join(f"  [==[{b}]==]" for b in bodies)
    path.write_text(
        f"""-- generated by benchmarks/serve_bench.py
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{items}
}}
local requests = {{}}
local i = 0
function init(args)
  for k, b in ipairs(bodies) do requests[k] = wrk.format(nil, nil, nil, b) end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"""
    )
    return path


# --------------------------------------------------------------------------- servers


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
    if server == "datawheel":
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
        str(args.kserve_python),
        str(script),
        *("--model-file", str(work.model_file), "--name", work.model_name, "--port", str(port)),
    ]
    if server == "kserve" and not args.kserve_logging:
        cmd.append("--quiet")
    return cmd


def server_env(torch_threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATAWHEEL_SERVE_TOKEN", None)  # no auth on the benchmark's requests
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(torch_threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            pids.append(int(entry.name))
    return pids


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
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # the group may outlive its leader (a worker process): make sure it is gone
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
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


# --------------------------------------------------------------------------- benchmark


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
        with running(cmd, server_env(args.torch_threads), log_path) as proc:
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


def ratios(rows: list[dict[str, Any]], levels: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for conns in levels:
        by = {r["server"]: r for r in rows if r["concurrency"] == conns and "rps" in r}
        dw = by.get("datawheel")
        for other in ("kserve", "fastapi"):
            ref = by.get(other)
            if dw is None or ref is None:
                continue
            out.append(
                {
                    "concurrency": conns,
                    "ratio": f"datawheel/{other}",
                    "rps": dw["rps"] / ref["rps"] if ref["rps"] else None,
                    "p50": dw["p50_ms"] / ref["p50_ms"] if ref["p50_ms"] else None,
                    "p99": dw["p99_ms"] / ref["p99_ms"] if ref["p99_ms"] else None,
                    "flagged": bool(dw["flagged"] or ref["flagged"]),
                }
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
                f"  {q['ratio']:<18} req/s x{_fmt(q['rps'], '.2f')}   "
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
        default=BENCH / ".venv-kserve",
        help="venv with kserve (default benchmarks/.venv-kserve, created on first use)",
    )
    add("--no-install", action="store_true", help="fail instead of creating the kserve venv")
    add(
        "--datawheel-bin",
        type=Path,
        default=Path(sys.executable).parent / "datawheel",
        help="datawheel CLI (default: beside this Python)",
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


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _versions(python: Path | None) -> dict[str, str]:
    out: dict[str, str] = {}
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    out["wrk"] = (wrk.stdout + wrk.stderr).split("[", 1)[0].strip()
    if python is not None:
        code = (
            "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('kserve', 'fastapi', 'uvicorn', 'torch')}))"
        )
        proc = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            out |= {f"venv-kserve {k}": v for k, v in json.loads(proc.stdout).items()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if args.pin == "split" and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        console.print("[yellow]taskset or a 2nd CPU missing: --pin none[/]")
        args.pin = "none"
    servers: list[str] = list(args.servers)

    args.datawheel_help = None
    if "datawheel" in servers:
        args.datawheel_help = datawheel_serve_help(args.datawheel_bin)
        if args.datawheel_help is None:
            console.print(
                f"[yellow]'{args.datawheel_bin} serve' is not available: skipping datawheel[/]"
            )
            servers.remove("datawheel")
    args.kserve_python = None
    if {"kserve", "fastapi"} & set(servers):
        args.kserve_python = ensure_kserve_venv(args.kserve_venv.resolve(), not args.no_install)
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
            console.print(f"work dir (server logs, wrk script, store) kept: {workdir}")
    return 0 if clean else 1


def bench(args: argparse.Namespace, servers: list[str], workdir: Path) -> bool:
    """Measure ``servers`` and print (and maybe write) the results; True if none failed."""
    if args.store:
        store = copy_model(_store_path(args.store), args.model, workdir / "store")
    else:
        store = train_model(args.datawheel_bin, workdir, args.epochs)
    work = make_workload(args.model, store, args.rows)
    lua = write_lua(work.bodies, workdir / "post.lua")
    versions = _versions(args.kserve_python)
    console.print(
        f"model {work.model_file}; {len(work.bodies)} digits rows; concurrency "
        f"{args.concurrency}; {args.duration:g} s per point after {args.warmup:g} s warm-up; "
        f"{args.rounds} round(s); pin={args.pin}; torch threads={args.torch_threads}; "
        f"{_cpu_model()}, {os.cpu_count()} CPUs; logs in {workdir}"
    )

    runs: list[ServerRun] = []
    for rnd in range(1, args.rounds + 1):
        for server in servers:
            runs.append(bench_server(server, rnd, args, work, lua, workdir))

    rows = summarize(runs, servers, args.concurrency)
    rats = ratios(rows, args.concurrency)
    print_results(rows, rats, runs, args.concurrency)
    if args.json_out is not None:
        meta = {
            "cpu": _cpu_model(),
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
            "load": "wrk -t1 closed loop",
        }
        doc = {
            "meta": meta,
            "results": rows,
            "ratios": rats,
            "runs": [asdict(r) for r in runs],
        }
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {args.json_out}")
    return not any(r.error for r in runs)


if __name__ == "__main__":
    raise SystemExit(main())
