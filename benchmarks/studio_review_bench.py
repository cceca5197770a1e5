"""The studio's review page: queue page time, keyboard labeling speed, label-issue quality.

Three measurements, each beside a baseline in the same run:

1. **Server-side time per review-queue page** (``GET /api/review?queue=uncertain&limit=20``
   on the in-process studio app, starlette's TestClient, so JSON encoding counts) on a
   ledger of ``--predictions`` rows (10k and 100k by default) written with the ledger's
   own ``write_segments`` in ``--segment-rows`` segments, 10% of them labelled. datawheel:
   the first page (every segment parsed), a page again (cached segments), a page after a
   new feedback segment arrived (what labeling causes), a deep page, entropy. Baseline: a
   naive page, ``read_ledger`` of both kinds and a per-row Python ranking (sorted() of each
   row's probabilities, a set of labelled ids), recomputed per page as nothing is kept.
   Also the label-issue queue's page on the bench dataset (500 rows): the first (the
   cross-validation), again, and after a new feedback segment (the ledger's labelled rows
   joined again to keep rows already looked at out).
2. **Time to label 100 items with the keyboard** in headless Chromium (selenium) against real
   `datawheel serve` + `datawheel studio` processes on a digits store trained by the
   pipeline's steps (built once in the work dir): one key per item (digit keys and Enter),
   each waiting until the page shows the next item, then until all 100 labels are in the
   ledger's feedback. Baseline: the same 100 labels posted straight to the server's
   feedback API, one request at a time, no browser and no studio.
3. **Label-issue queue quality** on digits with 10% of labels flipped (seeds 0-2): precision
   and recall against the flipped rows of cleanlab's ``find_label_issues`` on 5-fold CV
   probabilities (what the queue uses; and with ``filter_by="low_self_confidence"``),
   beside the CV model's self-confidence alone (the rows whose given label gets p < 0.5;
   and its lowest k rows, k = as many as cleanlab found, which borrows cleanlab's count)
   and a random k rows.

Timings only (the quality floors are the tests'). The CPUs may be shared; rerun when
something else was busy.

    .venv/bin/python benchmarks/studio_review_bench.py
    .venv/bin/python benchmarks/studio_review_bench.py --predictions 10000 --skip-browser
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
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
sys.path.insert(0, str(REPO / "tests"))
N_FEATURES = 64
CLASSES = [str(i) for i in range(10)]
DAY = 1_780_000_000.0
TOKEN = "studio-bench-token-0123"


def _ledger_store(root: Path, n: int, segment_rows: int) -> Any:
    """A store with model ``bench`` (dataset ``bench``) and ``n`` predictions, 10% labelled."""
    from datawheel.serving.ids import PredictionIds
    from datawheel.serving.ledger.records import SCHEMAS
    from datawheel.serving.ledger.segments import write_segments
    from datawheel.storage import LocalStore

    rng = np.random.default_rng(0)
    store = LocalStore(root)
    features = [f"px_{i}" for i in range(N_FEATURES)]
    frame = pd.DataFrame(rng.random((500, N_FEATURES)).astype(np.float32), columns=features)
    frame["label"] = [CLASSES[i % 10] for i in range(500)]
    stand_in_champion(store, root.parent, frame, CLASSES, "the queue never loads the network")
    ids = PredictionIds("bench", b"studio-bench-key-0123456789abcdef")
    labelled: list[str] = []
    for start in range(0, n, segment_rows):
        m = min(segment_rows, n - start)
        ts = DAY + start * 0.01
        probs = rng.dirichlet(np.full(10, 0.3), size=m)
        index = probs.argmax(axis=1)
        pids = ids.issue("v1", ts, index.tolist())
        table = pa.table(
            {
                "id": pids,
                "ts": np.full(m, ts),
                "model": ["bench"] * m,
                "version": ["v1"] * m,
                "inputs": list_column(rng.random((m, N_FEATURES)).astype(np.float32)),
                "label": [CLASSES[i] for i in index],
                "probabilities": list_column(probs),
                "latency_ms": np.full(m, 1.5),
                "variant": ["torchscript"] * m,
            },
            schema=SCHEMAS["predictions"],
        )
        write_segments(store, "predictions", [table], f"{int(ts * 1e9)}-{start:08x}")
        labelled += pids[::10]
    _feedback(store, labelled, DAY + n * 0.01 + 60, "000")
    return store


def _feedback(store: Any, pids: list[str], ts: float, tag: str) -> None:
    from datawheel.serving.ledger.records import SCHEMAS
    from datawheel.serving.ledger.segments import write_segments

    table = pa.table(
        {
            "id": pids,
            "ts": ts + np.arange(len(pids)) * 1e-3,
            "model": ["bench"] * len(pids),
            "version": ["v1"] * len(pids),
            "label": ["3"] * len(pids),
            "predicted": ["3"] * len(pids),
        },
        schema=SCHEMAS["feedback"],
    )
    write_segments(store, "feedback", [table], f"{int(ts * 1e9)}-{tag:0>8}")


def _naive_page(store: Any, limit: int, offset: int) -> list[str]:
    """The obvious way: read everything, rank row by row in Python."""
    from datawheel.serving.ledger.reader import read_ledger

    preds = read_ledger(store, model="bench")
    done = set(read_ledger(store, model="bench", kind="feedback")["id"])
    scored = []
    for pid, ts, probs in zip(preds["id"], preds["ts"], preds["probabilities"], strict=True):
        if pid in done:
            continue
        p = sorted(probs.tolist(), reverse=True)
        scored.append((p[0] - p[1], -ts, pid))
    scored.sort()
    return [pid for _, _, pid in scored[offset : offset + limit]]


def _timed(fn: Any, repeat: int) -> tuple[float, Any]:
    """(median ms, last result) of ``repeat`` calls."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out


def bench_queue(work: Path, sizes: list[int], segment_rows: int) -> None:
    from starlette.testclient import TestClient

    from datawheel.studio.config import StudioConfig
    from datawheel.studio.webapp import create_app

    print(f"\n1. review-queue page (limit 20), in-process app; {os.cpu_count()} CPUs")
    print(f"{'predictions':>12}  {'page':<34}{'ms':>9}")
    for n in sizes:
        root = work / f"queue-{n}-{segment_rows}" / "store"
        shutil.rmtree(root.parent, ignore_errors=True)
        root.parent.mkdir(parents=True)
        store = _ledger_store(root, n, segment_rows)
        config = StudioConfig(store=store.uri, model="bench", serve_url=None, token=TOKEN)
        client = TestClient(create_app(config))

        def page(
            by: str = "margin", offset: int = 0, client: TestClient = client
        ) -> dict[str, Any]:
            q: dict[str, str | int] = {
                "queue": "uncertain",
                "by": by,
                "limit": 20,
                "offset": offset,
            }
            answer = client.get("/api/review", params=q)
            assert answer.status_code == 200, answer.text
            doc: dict[str, Any] = answer.json()
            return doc

        cold, first = _timed(page, 1)
        warm, _ = _timed(page, 20)
        extra = []
        for k in range(5):  # a new feedback segment before each page, as labeling makes
            pids = [it["id"] for it in page(offset=40 + 20 * k)["items"]]
            _feedback(store, pids, DAY + n + 1000 + k, f"{k + 1}")
            extra.append(_timed(page, 1)[0])
        deep, _ = _timed(lambda n=n: page(offset=n // 3), 10)
        entropy, _ = _timed(lambda: page("entropy"), 10)
        naive, naive_ids = _timed(lambda store=store: _naive_page(store, 20, 0), 3)

        def issues(client: TestClient = client) -> None:
            q: dict[str, str | int] = {"queue": "issues", "limit": 20}
            assert client.get("/api/review", params=q).status_code == 200

        issues_first, _ = _timed(issues, 1)
        issues_again, _ = _timed(issues, 5)
        _feedback(store, [it["id"] for it in page()["items"]], DAY + n + 2000, "9")
        issues_new, _ = _timed(issues, 1)
        assert naive_ids[:5] == [it["id"] for it in first["items"]][:5], "rankings differ"
        rows = [
            ("datawheel, first (parse segments)", cold),
            ("datawheel, again (cached)", warm),
            ("datawheel, after a new label seg.", statistics.median(extra)),
            (f"datawheel, deep (offset {n // 3:,})", deep),
            ("datawheel, entropy", entropy),
            ("naive read_ledger + Python rank", naive),
            ("issues queue, first (5-fold CV)", issues_first),
            ("issues queue, again (cached)", issues_again),
            ("issues queue, after a new label seg.", issues_new),
        ]
        for name, ms in rows:
            print(f"{n:>12,}  {name:<34}{ms:>9.1f}")
        print(
            f"{'':>12}  (queue size {first['total']:,}; server-side 'ms' of a cached page: "
            f"{page()['ms']:.1f})"
        )


def bench_browser(work: Path, items: int) -> None:
    from browser_support import (  # type: ignore[import-not-found]  # tests/, on sys.path
        chrome,
        console_errors,
        login,
        start_stack,
    )
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    from serving_support import (  # type: ignore[import-not-found]  # tests/, on sys.path
        build_model_store,
        digits_rows,
        infer_body,
    )

    from datawheel.serving.ledger.reader import read_ledger
    from datawheel.storage import open_store

    template = work / "digits" / "store"
    if not (work / "digits" / "ready").exists():
        shutil.rmtree(work / "digits", ignore_errors=True)
        template.parent.mkdir(parents=True)
        build_model_store(template)
        (work / "digits" / "ready").write_text("")
    run = work / "browser-run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    print(f"\n2. labeling {items} items with the keyboard, headless Chromium, real processes")
    with start_stack(f"file://{template}", run) as stack, chrome() as driver:
        a, _ = digits_rows(2 * items + 20, offset=0)
        b, _ = digits_rows(2 * items + 20, offset=1797 - 2 * items - 20)
        status, doc = stack.server.post(
            "/v2/models/digits/infer", infer_body((0.5 * a + 0.5 * b).astype(np.float32))
        )
        assert status == 200, doc
        pids = doc["parameters"]["prediction_ids"]
        store = open_store(stack.store)
        while len(read_ledger(store, model="digits")) < len(pids):
            time.sleep(0.2)
        login(driver, stack.studio.url, next_path="/review")

        def current() -> str:
            return str(
                driver.execute_script(
                    "const e = document.querySelector('.review-item.current');"
                    "return e ? e.dataset.id : '';"
                )
            )

        WebDriverWait(driver, 30).until(lambda d: current())
        labelled: set[str] = set()
        start = time.perf_counter()
        for i in range(items):
            before = current()
            labelled.add(before)
            ActionChains(driver).send_keys(str(i % 10) if i % 3 else Keys.ENTER).perform()

            def moved(_: Any, before: str = before) -> bool:
                return bool(current() != before)

            WebDriverWait(driver, 30).until(moved)
        keyed = time.perf_counter() - start
        while not labelled <= set(read_ledger(store, model="digits", kind="feedback")["id"]):
            time.sleep(0.1)
        landed = time.perf_counter() - start
        assert not console_errors(driver)
        rest = [p for p in pids if p not in labelled][:items]
        start = time.perf_counter()
        for j, pid in enumerate(rest):
            body = f'{{"id": "{pid}", "label": "{j % 10}"}}'.encode()
            req = urllib.request.Request(
                f"{stack.server.url}/v2/models/digits/feedback",
                data=body,
                method="POST",
                headers={"content-type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=30).read()
        direct = time.perf_counter() - start
    print(f"{'':<48}{'seconds':>9}{'per item ms':>13}")
    for name, s, n in (
        ("browser: keys pressed, next item shown", keyed, items),
        ("browser: until all are in the ledger's feedback", landed, items),
        (f"baseline: {len(rest)} POSTs to the feedback API", direct, len(rest)),
    ):
        print(f"{name:<48}{s:>9.2f}{1000 * s / n:>13.1f}")


def bench_issues(seeds: list[int]) -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.datasets import load_digits

    from datawheel.studio.label_issues import find_issues

    data = load_digits()
    x = np.asarray(data.data, np.float64) / 16.0
    print("\n3. label-issue queue on digits, 10% of labels flipped")
    print(f"{'seed':>5}  {'method':<46}{'found':>6}{'precision':>10}{'recall':>8}{'s':>7}")
    for seed in seeds:
        rng = np.random.default_rng(seed)
        y = np.asarray(data.target).copy()
        n = len(y)
        flipped = rng.choice(n, n // 10, replace=False)
        y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
        truth = set(flipped.tolist())
        xs = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
        issues = find_issues(xs, y, 10, seed=0)
        k = len(issues.order)
        by_conf = np.argsort(issues.quality, kind="stable")[:k]
        below = np.flatnonzero(issues.quality < 0.5)
        random_k = rng.choice(n, k, replace=False)
        strict = find_label_issues(
            y,
            issues.pred_probs,
            filter_by="low_self_confidence",
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
        for name, picked, s in (
            ("cleanlab find_label_issues (the queue)", issues.order, issues.seconds),
            ("cleanlab, filter_by=low_self_confidence", np.asarray(strict), 0.0),
            ("CV self-confidence < 0.5", below, 0.0),
            ("CV self-confidence, lowest k (cleanlab's k)", by_conf, 0.0),
            ("random k rows", random_k, 0.0),
        ):
            hit = len(set(picked.tolist()) & truth)
            print(
                f"{seed:>5}  {name:<46}{len(picked):>6}{hit / len(picked):>10.3f}"
                f"{hit / len(truth):>8.3f}{s:>7.2f}"
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--predictions", default="10000,100000", help="comma-separated ledger sizes")
    p.add_argument("--segment-rows", type=int, default=1000)
    p.add_argument("--items", type=int, default=100, help="items labeled in the browser")
    p.add_argument("--skip-browser", action="store_true")
    p.add_argument(
        "--work-dir", default=str(Path(tempfile.gettempdir()) / "datawheel-studio-review-bench")
    )
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    bench_queue(work, [int(v) for v in args.predictions.split(",")], args.segment_rows)
    if not args.skip_browser:
        bench_browser(work, args.items)
    bench_issues([0, 1, 2])


if __name__ == "__main__":
    main()
