"""``datawheel watch``: start the flywheel pipeline by itself when drift, live accuracy or new
labels call for it, and on the Alertmanager webhook (see :mod:`datawheel.flywheel.controller`)."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import click

from datawheel.cli.output import store_option
from datawheel.errors import DatawheelError
from datawheel.flywheel.controller import Decision, WatchConfig, Watcher
from datawheel.flywheel.launch import KfpLauncher, Launcher, LocalLauncher, run_flywheel_subprocess
from datawheel.flywheel.rules import Thresholds
from datawheel.redact import redact

__all__ = ["watch"]


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DatawheelError(
            f"--listen {text!r} is not HOST:PORT", "pass e.g. --listen 0.0.0.0:8080"
        )
    return host, int(port)


def _parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    from datawheel.pipelines import PIPELINES

    if not pairs:
        return {}
    if "flywheel" not in PIPELINES:
        raise DatawheelError(
            "this install has no flywheel pipeline to check --param against",
            "drop --param, or update datawheel",
        )
    from datawheel.orchestration.params import parse_params

    return parse_params(PIPELINES["flywheel"], pairs)


def _printer(as_json: bool, out: Any) -> Any:
    lock = threading.Lock()

    def report(d: Decision) -> None:
        with lock:
            if as_json:
                click.echo(json.dumps(d.to_json(), sort_keys=True), file=out)
            else:
                what = {"started": "started", "refused": "not started", "quiet": "quiet"}
                head = what.get(d.action, d.action)
                parts = [p for p in (d.run_id, d.reason, d.refused, d.detail) if p]
                click.echo(f"watch: {head}" + (f": {'; '.join(parts)}" if parts else ""), file=out)
            out.flush()

    return report


@click.command()
@click.option("--model", required=True, help="The served model to watch (its champion).")
@store_option()
@click.option(
    "--prometheus", default="", help="Prometheus URL for the served drift and accuracy gauges."
)
@click.option("--kfp-host", default="", help="KFP API URL: submit runs there (on a cluster).")
@click.option("--local", "local_", is_flag=True, help="Run the pipeline here through kfp.local.")
@click.option(
    "--once", is_flag=True, help="One evaluation cycle (waits for a local run), then exit."
)
@click.option(
    "--interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds between cycles.",
)
@click.option(
    "--cooldown",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Least seconds between two run starts.",
)
@click.option(
    "--window", default="1h", show_default=True, help="The recent ledger window: 30m, 1h, 1d."
)
@click.option(
    "--accuracy-below", default=0.8, show_default=True, type=float, help="Live accuracy floor."
)
@click.option(
    "--min-labels",
    default=50,
    show_default=True,
    type=int,
    help="Labels in the window before live accuracy counts.",
)
@click.option(
    "--new-labels",
    default=1000,
    show_default=True,
    type=int,
    help="New labels since the last run that start one (0: off).",
)
@click.option("--no-drift", is_flag=True, help="Do not start runs on the drift verdict.")
@click.option(
    "--listen",
    default="",
    metavar="HOST:PORT",
    help="Serve the Alertmanager webhook (POST /alertmanager).",
)
@click.option(
    "--experiment",
    default="datawheel-flywheel",
    show_default=True,
    help="KFP experiment of the runs.",
)
@click.option(
    "--pipeline-root",
    default=".datawheel/runs",
    show_default=True,
    help="kfp.local's folder (--local).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra pipeline parameter; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per decision on stdout.")
def watch(
    model: str,
    store: str | None,
    prometheus: str,
    kfp_host: str,
    local_: bool,
    once: bool,
    interval: float,
    cooldown: float,
    window: str,
    accuracy_below: float,
    min_labels: int,
    new_labels: int,
    no_drift: bool,
    listen: str,
    experiment: str,
    pipeline_root: str,
    params: tuple[str, ...],
    as_json: bool,
) -> None:
    """Watch MODEL and start the flywheel pipeline when a rule holds, once per reason."""
    from datawheel.orchestration.drift_inputs import parse_since
    from datawheel.storage import open_store, validate_name

    validate_name(model, "--model")
    if local_ == bool(kfp_host):
        raise DatawheelError(
            "pass exactly one of --local and --kfp-host",
            "--local runs the pipeline here; --kfp-host URL submits it to Kubeflow Pipelines",
        )
    address = _listen(listen) if listen else None
    if prometheus and not prometheus.startswith(("http://", "https://")):
        raise DatawheelError(
            f"--prometheus {redact(prometheus)!r} is not a URL",
            "pass e.g. --prometheus http://HOST:9090",
        )
    thresholds = Thresholds(not no_drift, accuracy_below, min_labels, new_labels)
    config = WatchConfig(
        model=model,
        thresholds=thresholds,
        cooldown_s=cooldown,
        window_s=parse_since(window),
        window=window,
        parameters=_parameters(params),
        prometheus=prometheus,
    )
    launcher: Launcher
    if local_:
        launcher = LocalLauncher(
            lambda args: run_flywheel_subprocess(args, pipeline_root=pipeline_root)
        )
    else:
        launcher = KfpLauncher(kfp_host, experiment=experiment, token=os.environ.get("KFP_TOKEN"))
    watcher = Watcher(open_store(store), config, launcher)
    # stdout carries the decisions only: what libraries print (kfp.Client's "Run details:
    # URL" lines) goes to stderr for as long as the watcher runs
    out, sys.stdout = sys.stdout, sys.stderr
    try:
        _loop(watcher, launcher, _printer(as_json, out), once, interval, address)
    finally:
        sys.stdout = out


def _loop(
    watcher: Watcher,
    launcher: Launcher,
    report: Any,
    once: bool,
    interval: float,
    address: tuple[str, int] | None,
) -> None:
    if once:
        decisions = watcher.step()
        for d in decisions:
            report(d)
        started = [d for d in decisions if d.action == "started"]
        if started and isinstance(launcher, LocalLauncher):
            launcher.wait(started[0].run_id)
            for d in [x for x in (watcher.poll(),) if x is not None]:
                report(d)
        return
    stop = threading.Event()
    if address is None:
        watcher.run_forever(interval, report=report, stop=stop)
        return
    import uvicorn

    from datawheel.flywheel.alerts import create_app

    loop = threading.Thread(
        target=watcher.run_forever,
        args=(interval,),
        kwargs={"report": report, "stop": stop},
        daemon=True,
        name="watch-loop",
    )
    loop.start()
    try:
        uvicorn.run(
            create_app(watcher, on_decision=report),
            host=address[0],
            port=address[1],
            log_level="warning",
        )
    finally:
        stop.set()
