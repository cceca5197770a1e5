"""Serving throughput of an image model: PNG files as the ``image`` input vs pre-flattened FP32.

One ``datawheel serve`` of the digits model (8x8 grayscale, trained here unless ``--store``
names a store with it), measured in the same run with closed-loop ``wrk`` on three request
kinds, each one row per request, cycling over real digits rows:

* ``fp32``:      the pre-flattened row, 64 FP32 values in JSON (what a client had to send);
* ``png-8x8``:   the same row as an 8x8 grayscale PNG, base64 in JSON (decode, no resize);
* ``png-photo``: the row scaled up to a ``--photo-size`` RGB PNG, base64 in JSON (decode,
  convert to L, resize to 8x8 as training does): what a client sends "as it is".

Before measuring, every PNG body's answer is checked against the FP32 answer for the row the
server's own decode gives (datawheel.serving.inputs.image_rows): the same label. The server is
pinned to CPU 0 and wrk to CPU 1 (``--pin split``); torch uses one thread. Prints req/s, p50
and p99 per kind and concurrency, and each PNG kind's req/s relative to fp32. Timings only.

    .venv/bin/python benchmarks/image_input_bench.py --concurrency 1,16 --duration 5
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy checks benchmarks/ as a namespace package
    from benchmarks import serve_harness as harness
    from benchmarks import serve_setup as setup
else:  # run as a script: benchmarks/ is sys.path[0]
    import serve_harness as harness
    import serve_setup as setup

KINDS = ("fp32", "png-8x8", "png-photo")


def _body(name: str, datatype: str, shape: list[int], data: list[Any]) -> str:
    doc = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    return json.dumps(doc, separators=(",", ":"))


def _png(row: Any, size: int, mode: str) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.round(np.clip(row, 0, 1) * 255).astype(np.uint8).reshape(8, 8)
    im = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    im.convert(mode).save(out, format="PNG")
    return out.getvalue()


def workloads(rows: int, photo: int) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The request bodies of each kind, and the mean size of each kind's PNG file."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = np.asarray(load_digits().data, dtype=np.float32) / 16.0
    x = data[np.linspace(0, len(data) - 1, num=min(rows, len(data))).astype(int)]
    small = [_png(r, 8, "L") for r in x]
    large = [_png(r, photo, "RGB") for r in x]
    bodies = {
        "fp32": [_body("input", "FP32", [1, 64], [float(v) for v in r]) for r in x],
        "png-8x8": [_body("image", "BYTES", [1], [base64.b64encode(f).decode()]) for f in small],
        "png-photo": [_body("image", "BYTES", [1], [base64.b64encode(f).decode()]) for f in large],
    }
    sizes = {
        "png-8x8": sum(map(len, small)) // len(small),
        "png-photo": sum(map(len, large)) // len(large),
    }
    return bodies, sizes


def _post(url: str, body: str) -> Any:
    req = urllib.request.Request(
        url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def check(url: str, bodies: dict[str, list[str]]) -> str:
    """Each PNG body's label equals the FP32 label of the row the server decodes it to."""
    from datawheel.data.image_decode import Preprocessing
    from datawheel.serving.inputs import image_rows

    prep = Preprocessing("L", 8, 8)
    for kind in ("png-8x8", "png-photo"):
        for body in bodies[kind][:16]:
            png = base64.b64decode(json.loads(body)["inputs"][0]["data"][0])
            row = image_rows([png], prep)[0]
            as_png = _post(url, body)["outputs"][0]["data"]
            as_fp32 = _post(url, _body("input", "FP32", [1, 64], row.tolist()))["outputs"][0]
            if as_png != as_fp32["data"]:
                return f"{kind}: PNG says {as_png}, its FP32 row says {as_fp32['data']}"

    return "PNG labels equal their FP32 rows' labels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add = parser.add_argument
    add("--concurrency", default="1,16", help="client counts (default 1,16)")
    add("--duration", type=float, default=5.0, help="seconds per point (default 5)")
    add("--warmup", type=float, default=1.0, help="warm-up seconds per point (default 1)")
    add("--rows", type=int, default=64, help="distinct digits rows (default 64)")
    add("--photo-size", type=int, default=256, help="side of the png-photo images (default 256)")
    add("--epochs", type=int, default=3, help="training epochs without --store (default 3)")
    add("--store", default=None, help="file:// store with 'digits' registered (default: train)")
    add("--pin", choices=("split", "none"), default="split")
    add("--datawheel-bin", type=Path, default=Path(sys.executable).parent / "datawheel")
    args = parser.parse_args(argv)
    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    if args.pin == "split" and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        args.pin = "none"
    workdir = Path(tempfile.mkdtemp(prefix="image-bench-"))
    try:
        if args.store:
            store = setup.copy_model(setup.store_path(args.store), "digits", workdir / "store")
        else:
            store = setup.train_model(args.datawheel_bin, workdir, args.epochs)
        bodies, sizes = workloads(args.rows, args.photo_size)
        return _measure(args, levels, store, bodies, sizes, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(
    args: argparse.Namespace,
    levels: list[int],
    store: Path,
    bodies: dict[str, list[str]],
    sizes: dict[str, int],
    workdir: Path,
) -> int:
    port = harness.free_port()
    cmd = [
        str(args.datawheel_bin),
        *("serve", "--model", "digits@champion", "--store", f"file://{store}"),
        *("--host", "127.0.0.1", "--port", str(port), "--spool-dir", str(workdir / "spool")),
    ]
    if args.pin == "split":
        cmd = ["taskset", "-c", "0", *cmd]
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v2/models/digits/infer"
    wrk_cpu = "1" if args.pin == "split" else None
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with harness.running(cmd, harness.server_env(1), workdir / "server.log") as proc:
        ready = harness.wait_ready(proc, f"{base}/v2/health/ready", 180)
        print(f"server ready in {ready:.1f} s; {check(url, bodies)}", flush=True)
        print(
            f"PNG sizes: 8x8 L {sizes['png-8x8']} bytes, {args.photo_size}x{args.photo_size} "
            f"RGB {sizes['png-photo']} bytes (base64 in JSON adds a third)",
            flush=True,
        )
        for kind in KINDS:
            lua = setup.write_lua(bodies[kind], workdir / f"{kind}.lua")
            for conns in levels:
                if args.warmup > 0:
                    harness.run_wrk(url, conns, args.warmup, lua, wrk_cpu)
                t0 = time.perf_counter()
                results[kind, conns] = res = harness.run_wrk(
                    url, conns, args.duration, lua, wrk_cpu
                )
                errors = res["non_2xx"] + sum(res["socket_errors"].values())
                print(
                    f"{kind:<10} c={conns:<3} {res['rps']:9.1f} req/s  p50 {res['p50_ms']:7.2f} ms"
                    f"  p99 {res['p99_ms']:7.2f} ms  errors {errors}  "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    print("\nreq/s relative to fp32 (same server, same run):")
    for kind in KINDS[1:]:
        parts = [
            f"c={c}: {results[kind, c]['rps'] / results['fp32', c]['rps']:.2f}x" for c in levels
        ]
        print(f"  {kind:<10} " + "  ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
