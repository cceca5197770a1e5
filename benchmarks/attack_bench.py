"""Hostile clients against ``datawheel serve``: what a bystander sees, this tree vs a baseline.

One server at a time (this tree's ``datawheel serve``, then, with ``--baseline-path``, the
datawheel package of another checkout, e.g. a git worktree of an older commit) serves the
same model with a soft open-files limit of 1024 (a common default). A bystander sends
one-row infer requests back to back on its own keep-alive connection, connected before
any attack. Each round measures it for ``--duration`` seconds with no attack, then under
each attack:

* heavy: two clients (in a process of their own) each sending a legal 4 MiB body of deeply
  nested one-element lists (what orjson spends about a second building on the event loop),
  one every ``--heavy-interval`` seconds (0.1; 0 sends back to back, a bandwidth flood);
* slow: ``--slow-clients`` connections (1,500, from a process of their own) sending an
  infer request's headers, then its body one byte every 0.3 s.

Per server and phase it prints the bystander's requests, p50 and p99 (median over rounds),
the worst health-probe latency and failed probes (GET /v2/health/ready every 0.1 s), and
what 10 new clients got (200, 503 or an error such as a reset). Timings only; nothing is
asserted.

    git worktree add /tmp/before 3ae5430
    .venv/bin/python benchmarks/attack_bench.py --baseline-path /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks import serve_harness as harness
    from benchmarks import serve_setup as setup
else:  # run as a script: benchmarks/ is sys.path[0]
    import serve_harness as harness
    import serve_setup as setup

INFER = "/infer"
PHASES = ("none", "heavy", "slow")


@dataclass
class Phase:
    """One phase of one round: the bystander's latencies and what probes and new clients got."""

    latencies: list[float] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)  # seconds per successful probe
    probe_failures: int = 0
    new_clients: dict[str, int] = field(default_factory=dict)


def nested_body(features: int, depth: int = 500, size: int = 4 * 1024 * 1024 - 1024) -> bytes:
    unit = b"[" * depth + b"0" + b"]" * depth
    head = b'{"inputs":[{"name":"input","shape":[1,%d],"datatype":"FP32","data":[' % features
    return head + b",".join([unit] * ((size - len(head)) // (len(unit) + 1))) + b"]}]}"


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def _heavy(
    port: int, path: str, arg: tuple[int, float], started: EventType, stop: EventType
) -> None:
    """Two clients in this process (not the bystander's: no GIL shared with it)."""
    features, interval = arg
    body = nested_body(features)
    threads = [
        threading.Thread(target=_heavy_client, args=(port, path, body, interval, stop), daemon=True)
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    started.set()
    for t in threads:
        t.join()


def _heavy_client(port: int, path: str, body: bytes, interval: float, stop: EventType) -> None:
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while not stop.is_set():
                _post(conn, path, body)
                stop.wait(interval)
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
        finally:
            conn.close()


def _slow(port: int, path: str, count: int, started: EventType, stop: EventType) -> None:
    socks: list[socket.socket] = []
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n{"
    ).encode()
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(head)
            socks.append(sock)
        except OSError:
            pass
    started.set()
    while not stop.wait(0.3):
        for sock in list(socks):
            try:
                sock.send(b" ")
            except OSError:
                sock.close()
                socks.remove(sock)
    for sock in socks:
        sock.close()


@contextlib.contextmanager
def attack(
    kind: str, port: int, path: str, features: int, args: argparse.Namespace
) -> Iterator[None]:
    if kind == "none":
        yield
        return
    context = multiprocessing.get_context("fork")
    started, stopped = context.Event(), context.Event()
    if kind == "heavy":
        proc = context.Process(
            target=_heavy, args=(port, path, (features, args.heavy_interval), started, stopped)
        )
    else:
        proc = context.Process(target=_slow, args=(port, path, args.slow_clients, started, stopped))
    proc.start()
    started.wait(60)
    time.sleep(0.3)
    try:
        yield
    finally:
        stopped.set()
        proc.join(timeout=60)


def _prober(port: int, phase: Phase, stop: threading.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/v2/health/ready")
            ok = conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            conn.close()
        if ok:
            phase.probes.append(time.perf_counter() - start)
        else:
            phase.probe_failures += 1
        stop.wait(0.1)


def _new_client(port: int, path: str, body: bytes) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return str(_post(conn, path, body))
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def measure(
    port: int, path: str, body: bytes, kind: str, features: int, args: argparse.Namespace
) -> Phase:
    phase = Phase()
    bystander = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    _post(bystander, path, body)  # connected before the attack
    with attack(kind, port, path, features, args):
        stop = threading.Event()
        prober = threading.Thread(target=_prober, args=(port, phase, stop), daemon=True)
        prober.start()
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                status = _post(bystander, path, body)
            except (OSError, http.client.HTTPException):
                status = 0
                bystander.close()
            if status == 200:
                phase.latencies.append(time.perf_counter() - start)
        for _ in range(10):
            got = _new_client(port, path, body)
            phase.new_clients[got] = phase.new_clients.get(got, 0) + 1
        stop.set()
        prober.join(timeout=15)
    bystander.close()
    return phase


def bench_server(
    name: str, args: argparse.Namespace, work: setup.Workload, rundir: Path
) -> dict[str, list[Phase]]:
    port = harness.free_port()
    store = setup.copy_model(work.store, work.model_name, rundir / "store")
    cmd = [
        str(args.datawheel_bin),
        *("serve", "--model", f"{work.model_name}@champion", "--store", f"file://{store}"),
        *("--host", "127.0.0.1", "--port", str(port), "--spool-dir", str(rundir / "spool")),
    ]
    if name == "datawheel":
        cmd += list(args.server_arg or [])
    env = harness.server_env(1, name, args.baseline_path)
    log = rundir / "server.log"
    path = f"/v2/models/{work.model_name}{INFER}"
    body = work.bodies[0].encode()
    features = len(json.loads(work.bodies[0])["inputs"][0]["data"])
    results: dict[str, list[Phase]] = {kind: [] for kind in PHASES}
    limited = ["sh", "-c", 'ulimit -Sn 1024 && exec "$@"', "sh", *cmd]  # a common default
    with harness.running(limited, env, log) as proc:
        harness.wait_ready(proc, f"http://127.0.0.1:{port}/v2/health/ready", 180)
        for r in range(args.rounds):
            for kind in PHASES:
                setup.console.print(f"  {name} round {r + 1}/{args.rounds}: attack {kind} ...")
                results[kind].append(measure(port, path, body, kind, features, args))
                time.sleep(1.0)  # let timeouts close what the attack left
    return results


def _row(name: str, kind: str, phases: list[Phase]) -> list[str]:
    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0

    p50 = statistics.median(pct(p.latencies, 50) for p in phases)
    p99 = statistics.median(pct(p.latencies, 99) for p in phases)
    worst = max((max(p.probes, default=0.0) for p in phases), default=0.0) * 1000
    failed = sum(p.probe_failures for p in phases)
    clients: dict[str, int] = {}
    for p in phases:
        for k, v in p.new_clients.items():
            clients[k] = clients.get(k, 0) + v
    requests = statistics.median(len(p.latencies) for p in phases)
    return [
        name,
        kind,
        f"{requests:.0f}",
        f"{p50:.2f}",
        f"{p99:.2f}",
        f"{worst:.1f}",
        str(failed),
        " ".join(f"{k}:{v}" for k, v in sorted(clients.items())),
    ]


def report(results: dict[str, dict[str, list[Phase]]]) -> None:
    header = [
        "server",
        "attack",
        "requests",
        "p50 ms",
        "p99 ms",
        "worst probe ms",
        "probes failed",
        "new clients",
    ]
    rows = [header] + [
        _row(name, kind, phases) for name, by in results.items() for kind, phases in by.items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print()
    for name, by in results.items():
        base = statistics.median(statistics.quantiles(p.latencies, n=100)[98] for p in by["none"])
        for kind in ("heavy", "slow"):
            under = [
                statistics.quantiles(p.latencies, n=100)[98]
                if len(p.latencies) > 1
                else float("inf")
                for p in by[kind]
            ]
            print(
                f"{name}: bystander p99 under {kind} / no attack = "
                f"{statistics.median(under) / base:.2f}x"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=2, help="rounds of (none, heavy, slow) per server")
    add("--duration", type=float, default=4.0, help="seconds the bystander runs per phase")
    add("--heavy-interval", type=float, default=0.1, help="seconds between a heavy client's bodies")
    add("--slow-clients", type=int, default=1500, help="connections in the slow attack")
    add(
        "--server-arg",
        action="append",
        help="extra argument for this tree's datawheel serve (repeat), "
        "e.g. --server-arg=--max-connections=512",
    )
    add("--epochs", type=int, default=3, help="epochs when training the model (no --store)")
    add("--store", default=None, help="a file:// store holding a registered digits champion")
    add("--model", default="digits", help="model name (default digits)")
    add(
        "--datawheel-bin",
        type=Path,
        default=Path(sys.executable).parent / "datawheel",
        help="datawheel CLI (default: beside this Python)",
    )
    add("--baseline-path", type=Path, default=None, help="another checkout to measure as well")
    add("--workdir", type=Path, default=None, help="work dir (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds and --duration must be positive")
    if args.baseline_path is not None:
        if not (args.baseline_path / "datawheel" / "__init__.py").is_file():
            parser.error(f"--baseline-path {args.baseline_path} has no datawheel package")
        args.baseline_path = args.baseline_path.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="attack-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.store:
        store = setup.store_path(args.store)
    else:
        store = setup.train_model(args.datawheel_bin, workdir, args.epochs)
    work = setup.make_workload(args.model, store, 8)
    servers = ["datawheel"] + ([harness.BASELINE] if args.baseline_path else [])
    results = {}
    for name in servers:
        rundir = workdir / name
        rundir.mkdir(exist_ok=True)
        setup.console.print(f"[bold]{name}[/] (logs in {rundir})")
        results[name] = bench_server(name, args, work, rundir)
    report(results)
    print(f"work dir: {workdir}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
