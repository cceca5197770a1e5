"""``make demo``: the flywheel closes the loop on one machine, every step on the terminal.

1. Train the champion on the built-in digits (thin strokes) with the training pipeline.
2. Serve it (a real ``datawheel serve`` process, following the ``champion`` alias).
3. Send production traffic drawn with a thicker pen (:mod:`.demo_traffic`), a shift the
   champion never saw; simulated users send the true label back for part of it.
4. The watcher (``datawheel watch --once --local``) sees drift and low live accuracy and
   starts the flywheel pipeline through kfp.local: harvest -> validate -> drift-report ->
   prep -> train (fine-tuning the champion) -> evaluate -> register.
5. The new champion is promoted; the running server hot-swaps to it.
6. New thick-stroke traffic (images no model trained on): live accuracy before and after.
7. The studio (``datawheel studio``) on the same store and server: its address and labeling
   token are printed, and it runs until Ctrl-C. ``DEMO_STUDIO=0`` (or ``--no-studio``) ends
   the demo after step 6 instead.

    python -m datawheel.flywheel.demo [--store DIR] [--epochs N] [--label-share F] [--no-studio]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["main"]

MODEL = "digits"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(n: int, text: str) -> None:
    _say()
    _say(f"== {n}. {text}")


def _datawheel() -> str:
    found = shutil.which("datawheel", path=str(Path(sys.executable).parent))
    return found or "datawheel"


def _run(args: list[str], *, capture: bool = False) -> str:
    cmd = [_datawheel(), *args]
    _say("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd)}` failed with exit status {proc.returncode}")
    return proc.stdout or ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        out: dict[str, Any] = json.loads(r.read())
        return out


def _serve(store: str, root: Path) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    log = (root / "server.log").open("a")
    cmd = [
        _datawheel(),
        "serve",
        "--model",
        MODEL,
        "--store",
        store,
        "--port",
        str(port),
        "--spool-dir",
        str(root / "spool"),
        "--poll-seconds",
        "0.5",
        "--ledger-flush-seconds",
        "0.5",
    ]
    _say("$ " + " ".join(cmd) + f"  (log: {root / 'server.log'})")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, f"{url}/v2/health/ready", "server", log.name, 90)
    return proc, url


def _wait_ready(
    proc: subprocess.Popen[str], url: str, what: str, log: str, timeout: float, hint: str = ""
) -> None:
    """Until ``url`` answers; a one-line exit naming the log when ``proc`` dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the {what} exited ({proc.returncode}); see {log}{hint}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"demo: the {what} did not get ready in {timeout:.0f} s; see {log}{hint}")


def _served_version(url: str) -> str:
    doc = _get(f"{url}/v2/models/{MODEL}")
    versions = doc.get("versions") or [""]
    return str(versions[0])


def _wait_ledger(store: str, labels: int, timeout: float = 60) -> None:
    """Until the server's ledger holds the feedback it answered (it flushes every 0.5 s)."""
    from datawheel.serving.ledger import read_ledger
    from datawheel.storage import open_store

    st = open_store(store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = read_ledger(st, model=MODEL, kind="feedback", columns=["id"])
        if len(got) >= labels:
            return
        time.sleep(0.3)
    raise SystemExit(f"demo: the ledger did not reach {labels} labels in {timeout:.0f} s")


def _wait_swap(url: str, old: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _served_version(url)
        if now and now != old:
            return now
        time.sleep(0.3)
    return old


def main(argv: list[str] | None = None) -> int:
    from datawheel.flywheel.demo_summary import print_summary
    from datawheel.flywheel.demo_traffic import send_wave, shifted_pools

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".datawheel/demo"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--label-share", type=float, default=0.5)
    parser.add_argument(
        "--no-studio",
        action="store_true",
        default=os.environ.get("DEMO_STUDIO", "1").strip() in ("0", "false", "no", "off"),
        help="end after the accuracy summary instead of running the studio [$DEMO_STUDIO=0]",
    )
    args = parser.parse_args(argv)
    root = args.store.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    store = f"file://{root}"
    os.environ["DATAWHEEL_CHECKPOINT_DIR"] = str(root / "checkpoints")
    started = time.monotonic()
    common = ["--store", store, "--pipeline-root", str(root / "runs")]

    _step(1, "train the champion on the built-in digits (thin strokes)")
    _run(["run", "training", "--local", *common, "--param", f"epochs={args.epochs}"])

    _step(2, "serve it")
    server, url = _serve(store, root)
    try:
        before_version = _served_version(url)
        _say(f"serving {MODEL}:{before_version} at {url}")
        (wave1_x, wave1_y), (wave2_x, wave2_y) = shifted_pools()

        _step(3, f"production traffic drawn with a thicker pen: {len(wave1_x)} images")
        before = send_wave(url, MODEL, wave1_x, wave1_y, label_share=args.label_share, seed=1)
        _say(
            f"live accuracy {before.accuracy:.1%} on {before.sent} predictions; users sent "
            f"{before.labeled} labels, {before.labeled - before.confirmed} of them corrections"
        )
        _wait_ledger(store, before.labeled)

        _step(4, "the watcher looks at the ledger and starts the flywheel")
        _run(
            [
                "watch",
                "--model",
                MODEL,
                "--store",
                store,
                "--local",
                "--once",
                "--pipeline-root",
                str(root / "runs"),
            ]
        )

        _step(5, "the running server follows the champion alias")
        after_version = _wait_swap(url, before_version)
        _say(f"serving {MODEL}:{after_version} (was {before_version})")

        _step(6, f"new thick-stroke traffic, images no model saw: {len(wave2_x)} images")
        after = send_wave(url, MODEL, wave2_x, wave2_y, label_share=0.0, seed=2)
        _say(f"live accuracy {after.accuracy:.1%} on {after.sent} predictions")
        print_summary(store, MODEL, before, after, before_version, after_version, started)
        code = 0 if after.accuracy > before.accuracy else 1
        if not args.no_studio:
            _step(7, "the studio: try the model, correct what it is least sure of, watch it")
            _studio(store, root, url)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return code


def _studio(store: str, root: Path, serve_url: str) -> None:
    """``datawheel studio`` on the demo's store and server, in the foreground until Ctrl-C."""
    import secrets

    port = int(os.environ.get("DEMO_STUDIO_PORT", "8090"))
    token = os.environ.get("DATAWHEEL_STUDIO_TOKEN") or secrets.token_urlsafe(12)
    cmd = [_datawheel(), "studio", "--model", MODEL, "--store", store]
    cmd += ["--serve-url", serve_url, "--port", str(port)]
    log = (root / "studio.log").open("a")
    _say("$ " + " ".join(cmd) + f"  (log: {root / 'studio.log'})")
    env = {**os.environ, "DATAWHEEL_STUDIO_TOKEN": token}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    address = f"http://127.0.0.1:{port}/"
    try:
        hint = " (port in use? set DEMO_STUDIO_PORT, or DEMO_STUDIO=0 to skip it)"
        _wait_ready(proc, f"{address}healthz", "studio", log.name, 60, hint)
        _say(f"studio: {address}")
        _say(f"studio: labeling token: {token}  (log in on {address}login)")
        _say("studio: running until Ctrl-C (make demo DEMO_STUDIO=0 skips this step)")
        proc.wait()
    except KeyboardInterrupt:
        _say("studio: stopped")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
