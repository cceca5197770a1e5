"""Serving variants of the digits MLP and CNN: size, single-call latency, served req/s.

For each model kind, one ``datawheel run training --local`` trains and registers digits
(with the compress step's student where the pipeline makes one). Then, in the same run:

* every variant in the registered folder (TorchScript fp32, ONNX fp32, ONNX int8, student):
  its size on disk, the p50/p99 of single calls at batch 1 and batch 64 (one thread) and its
  test accuracy, by the evaluate step's own measurement (datawheel.evaluation.variant_choice);
* end-to-end serving: ``datawheel serve --variant V`` for ``torchscript`` and for the card's
  choice (``auto``; with ``--all``, every variant), closed-loop ``wrk`` at 1 and 64 clients
  on one FP32 row per request, server pinned to CPU 0 and wrk to CPU 1; req/s and each
  variant's ratio to TorchScript.

Timings only; nothing passes or fails.

    .venv/bin/python benchmarks/variants_bench.py --duration 5
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

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks import serve_harness as harness
    from benchmarks import serve_setup as setup
else:  # run as a script: benchmarks/ is sys.path[0]
    import serve_harness as harness
    import serve_setup as setup


def _train(datawheel: Path, work: Path, kind: str, epochs: int) -> Path:
    store = work / f"store-{kind}"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(datawheel),
            *("run", "training", "--local", "--store", f"file://{store}", "--json"),
            *("--param", f"epochs={epochs}", "--param", f"model_kind={kind}"),
        ],
        cwd=work,
        env={**os.environ, "DATAWHEEL_CHECKPOINT_DIR": str(work / f"ckpt-{kind}")},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"training the {kind} failed:\n{proc.stderr[-3000:]}")
    print(f"trained the digits {kind} in {time.perf_counter() - start:.0f} s", flush=True)
    return store


def _test_rows(store: Path) -> tuple[Any, Any]:
    from datawheel.data import versions as ds
    from datawheel.data.split import TEST, plan_split
    from datawheel.storage import LocalStore

    st = LocalStore(store)
    dv = ds.get_version(st, "digits")
    plan = plan_split(
        ds.read_frame(st, dv), label=dv.label, features=dv.features, classes=dv.classes
    )
    test = plan.assignment == TEST
    return plan.x[test], plan.y[test]


def _folder(store: Path) -> tuple[Path, dict[str, Any]]:
    from datawheel import registry
    from datawheel.storage import LocalStore

    mv = registry.resolve(LocalStore(store), "digits", "champion")
    return store / "models" / "digits" / "versions" / mv.version, mv.card


def _bodies(x: Any, n: int) -> list[str]:
    rows = x[:n]
    return [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": [1, 64],
                        "data": [float(v) for v in r],
                    }
                ]
            },
            separators=(",", ":"),
        )
        for r in rows
    ]


def _serve(
    args: argparse.Namespace, store: Path, variant: str, lua: Path, work: Path
) -> dict[int, float]:
    port = harness.free_port()
    copy = setup.copy_model(store, "digits", work / f"serve-{variant}")
    cmd = [
        str(args.datawheel_bin),
        *("serve", "--model", "digits@champion", "--store", f"file://{copy}"),
        *(
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--spool-dir",
            str(work / f"spool-{variant}"),
        ),
        *("--variant", variant),
    ]
    if args.pin == "split":
        cmd = ["taskset", "-c", "0", *cmd]
    base = f"http://127.0.0.1:{port}"
    wrk_cpu = "1" if args.pin == "split" else None
    out: dict[int, float] = {}
    with harness.running(cmd, harness.server_env(1), work / f"server-{variant}.log") as proc:
        harness.wait_ready(proc, f"{base}/v2/health/ready", 180)
        for conns in args.levels:
            url = f"{base}/v2/models/digits/infer"
            harness.run_wrk(url, conns, args.warmup, lua, wrk_cpu)
            res = harness.run_wrk(url, conns, args.duration, lua, wrk_cpu)
            out[conns] = float(res["rps"])
            errors = res["non_2xx"] + sum(res["socket_errors"].values())
            print(
                f"  serve --variant {variant:<11} c={conns:<3} {res['rps']:9.1f} req/s  "
                f"p50 {res['p50_ms']:7.2f} ms  p99 {res['p99_ms']:7.2f} ms  errors {errors}",
                flush=True,
            )
    return out


def _kind(args: argparse.Namespace, work: Path, kind: str, can_choose: bool) -> None:
    from datawheel.evaluation.variant_choice import choose_variant, measure_variants

    store = _train(args.datawheel_bin, work, kind, args.epochs)
    folder, card = _folder(store)
    x, y = _test_rows(store)
    figures = measure_variants(folder, x, y, calls=args.calls)
    choice = choose_variant(figures)
    serves = card.get("serving_variant", {}).get("name", "torchscript")
    print(f"\n{kind}: {len(y)} test rows; the card serves {serves!r}")
    head = ("size KiB", "accuracy", "b1 p50", "b1 p99", "b64 p50", "b64 p99")
    print(f"{'variant':<12} " + " ".join(f"{h:>9}" for h in head) + "  (ms)")
    for f in figures:
        print(
            f"{f.name:<12} {f.size_bytes / 1024:9.1f} {f.accuracy:9.4f} {f.p(1, 'p50'):9.3f} "
            f"{f.p(1, 'p99'):9.3f} {f.p(64, 'p50'):9.3f} {f.p(64, 'p99'):9.3f}"
        )
    print(f"choice on this machine: {choice.name} ({choice.reason})", flush=True)
    if not can_choose:
        print("  (datawheel serve has no --variant here: serving req/s skipped)")
        return
    lua = setup.write_lua(_bodies(x, 64), work / f"{kind}.lua")
    names = [f.name for f in figures] if args.all else ["torchscript", "auto"]
    served = {name: _serve(args, store, name, lua, work) for name in names}
    base = served["torchscript"]
    for name, rps in served.items():
        if name != "torchscript":
            ratios = "  ".join(f"c={c}: {rps[c] / base[c]:.2f}x" for c in args.levels)
            print(f"  {name} vs torchscript: {ratios}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add = parser.add_argument
    add("--kinds", default="mlp,cnn", help="model kinds (default mlp,cnn)")
    add("--concurrency", default="1,64", help="client counts (default 1,64)")
    add("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    add("--warmup", type=float, default=1.0, help="warm-up seconds per point (default 1)")
    add("--epochs", type=int, default=10, help="training epochs (default 10)")
    add("--calls", type=int, default=300, help="timed single calls at batch 1 (default 300)")
    add("--all", action="store_true", help="serve every variant, not only torchscript and auto")
    add("--pin", choices=("split", "none"), default="split")
    add("--datawheel-bin", type=Path, default=Path(sys.executable).parent / "datawheel")
    args = parser.parse_args(argv)
    args.levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if args.pin == "split" and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        args.pin = "none"
    can_choose = "--variant" in (harness.datawheel_serve_help(args.datawheel_bin) or "")
    work = Path(tempfile.mkdtemp(prefix="variants-bench-"))
    try:
        for kind in args.kinds.split(","):
            _kind(args, work, kind.strip(), can_choose)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
