"""``datawheel deploy canary``: roll the registry's candidate out next to the stable server,
judged by Prometheus, and promote or roll it back. Exit status: 0 promoted, 1 rolled back,
2 error (including: there is no candidate to roll out)."""

from __future__ import annotations

import json

import click

from datawheel.cli.output import store_option
from datawheel.deploy.canary_policy import Thresholds
from datawheel.deploy.canary_spec import parse_steps
from datawheel.deploy.kube import connect
from datawheel.deploy.prom import Prometheus
from datawheel.deploy.rollout import CANARY, STABLE, CanaryConfig, run_canary
from datawheel.redact import redact
from datawheel.storage import open_store

__all__ = ["canary"]

DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring:9090"


@click.command()
@click.option("--model", required=True, help="Registered model name; its candidate is rolled out.")
@store_option()
@click.option("--namespace", default="datawheel", show_default=True)
@click.option("--prometheus", "prometheus_url", default=DEFAULT_PROMETHEUS, show_default=True)
@click.option(
    "--steps",
    default="0.1,0.25,0.5",
    show_default=True,
    help="Canary traffic shares, each below 1 (promotion moves the rest). Set by pod count: "
    "the canary gets stable*w/(1-w) pods next to the stable ones, so 0.5 doubles the pods.",
)
@click.option(
    "--interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between looks at the metrics.",
)
@click.option(
    "--window",
    default="1m",
    show_default=True,
    help="PromQL range each look covers; at most --interval, so that a look sees only its "
    "step's traffic, and at least 2 scrape intervals.",
)
@click.option(
    "--max-waits",
    default=5,
    show_default=True,
    type=click.IntRange(0),
    help="Inconclusive looks per step (too little traffic) before rolling back.",
)
@click.option(
    "--max-error-rate",
    default=0.01,
    show_default=True,
    type=float,
    help="Highest 5xx share of the canary's inference requests.",
)
@click.option(
    "--max-error-excess",
    default=0.005,
    show_default=True,
    type=float,
    help="How much higher than stable's the canary's 5xx share may be.",
)
@click.option(
    "--max-p99-ratio",
    default=1.5,
    show_default=True,
    type=float,
    help="Canary p99 latency may be at most this times stable's...",
)
@click.option(
    "--p99-slack-ms",
    default=25.0,
    show_default=True,
    type=float,
    help="...plus this many milliseconds.",
)
@click.option(
    "--min-requests",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="Inference requests per version and window needed to judge.",
)
@click.option(
    "--min-labels",
    default=50,
    show_default=True,
    type=click.IntRange(1),
    help="Feedback labels per version, since the canary started, before live accuracy is "
    "judged; until then it is not (the verdicts say so).",
)
@click.option(
    "--max-accuracy-drop",
    default=0.05,
    show_default=True,
    type=float,
    help="How far below stable's live accuracy the canary's may be (0.05 = 5 points).",
)
@click.option(
    "--ready-timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds pods may take to become ready after a scale.",
)
@click.option(
    "--prom-matchers", default="", help='Extra PromQL label matchers, e.g. namespace="datawheel".'
)
@click.option("--kubeconfig", default=None, help="Kubeconfig file (default: $KUBECONFIG).")
@click.option("--context", default=None, help="Kubeconfig context.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def canary(
    model: str,
    store: str | None,
    namespace: str,
    prometheus_url: str,
    steps: str,
    interval: float,
    window: str,
    max_waits: int,
    max_error_rate: float,
    max_error_excess: float,
    max_p99_ratio: float,
    p99_slack_ms: float,
    min_requests: int,
    min_labels: int,
    max_accuracy_drop: float,
    ready_timeout: float,
    prom_matchers: str,
    kubeconfig: str | None,
    context: str | None,
    as_json: bool,
) -> None:
    """Run MODEL's candidate (what the evaluator promoted with canaries on; never a rejected
    model) as Deployment datawheel-serve-canary behind the datawheel-serve Service, give it
    more of the traffic step by step (by pod count; the stable Deployment is not scaled),
    and promote it to champion, or roll it back, on its error rate, p99 latency and live
    accuracy (from feedback, once --min-labels arrived) against the stable version's. The
    record goes to the store (models/NAME/canary/) and the stable Deployment's
    datawheel.dev/last-canary annotation."""
    config = CanaryConfig(
        model=model,
        steps=parse_steps(steps),
        interval_s=interval,
        window=window,
        thresholds=Thresholds(
            max_error_rate=max_error_rate,
            max_error_excess=max_error_excess,
            max_p99_ratio=max_p99_ratio,
            p99_slack_s=p99_slack_ms / 1000,
            min_requests=min_requests,
            min_labels=min_labels,
            max_accuracy_drop=max_accuracy_drop,
        ),
        max_waits=max_waits,
        ready_timeout_s=ready_timeout,
        matchers=prom_matchers,
        stable_name=STABLE,
        canary_name=CANARY,
    )
    record = run_canary(
        open_store(store),
        connect(namespace, kubeconfig=kubeconfig, context=context),
        Prometheus(prometheus_url),
        config,
        log=lambda line: click.echo(redact(line), err=True),  # progress; stdout: the result
    )
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        click.echo(f"{record['decision']}: {record['reason']} (record: {record['record_key']})")
    if record["decision"] != "promoted":
        raise click.exceptions.Exit(1)
