"""Prediction ids on the hot path: the cost per batch of giving every row its id.

Side by side, for one batch of ``--rows`` rows (what ``Serving._run_batch`` does per batch):

* before:       32 hex chars from one ``os.urandom`` per batch, then each id put in the
                per-process prediction index (what feedback needed to find it);
* before, ids:  the same without the index: the ids alone;
* signed:       :meth:`PredictionIds.issue`, what serving does now: version, time, class
                index, a 64-bit nonce (one ``os.urandom`` per batch) and a 128-bit keyed
                BLAKE2b tag per row; nothing to remember;
* hmac-sha256:  the same ids tagged with HMAC-SHA256 truncated to 128 bits, the alternative
                that was measured and not taken.

Prints microseconds per batch and per row (best of ``--repeat``). Timings only; no asserts.

    python benchmarks/prediction_ids.py --rows 64
"""

from __future__ import annotations

import argparse
import hmac
import os
import platform
import time
import timeit
from collections.abc import Callable

from datawheel.serving.ids import PredictionIds
from datawheel.serving.predictions import PredictionIndex


def _before(n: int, index: PredictionIndex | None, labels: list[str]) -> Callable[[], object]:
    def run() -> object:
        raw = os.urandom(16 * n).hex()
        ids = [raw[k : k + 32] for k in range(0, len(raw), 32)]
        if index is not None:
            index.add(ids, "v3", labels)
        return ids

    return run


def _hmac(n: int, key: bytes, classes: list[int]) -> Callable[[], object]:
    def run() -> object:
        nonces = os.urandom(8 * n).hex()
        prefix = f"v3.{int(time.time() * 1000):x}."
        out = []
        for k, c in enumerate(classes):
            body = f"{prefix}{c}.{nonces[16 * k : 16 * k + 16]}"
            tag = hmac.digest(key, b"digits\0" + body.encode(), "sha256")[:16].hex()
            out.append(f"{body}.{tag}")
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows per batch")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000, help="batches per timing")
    args = parser.parse_args()
    n, key = args.rows, os.urandom(32)
    classes = [k % 10 for k in range(n)]
    labels = [str(c) for c in classes]
    ids = PredictionIds("digits", key)
    cases: dict[str, Callable[[], object]] = {
        "before": _before(n, PredictionIndex(), labels),
        "before, ids": _before(n, None, labels),
        "signed": lambda: ids.issue("v3", time.time(), classes),
        "hmac-sha256": _hmac(n, key, classes),
    }
    print(f"python {platform.python_version()} on {platform.machine()}, {n} rows per batch")
    print(f"{'ids':<13} {'us/batch':>9} {'us/row':>7}")
    for name, run in cases.items():
        best = min(timeit.repeat(run, number=args.number, repeat=args.repeat)) / args.number
        print(f"{name:<13} {best * 1e6:9.1f} {best * 1e6 / n:7.2f}")
    print(f"example id: {ids.issue('v3', time.time(), [7])[0]}")


if __name__ == "__main__":
    main()
