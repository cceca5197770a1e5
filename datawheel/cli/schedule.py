"""``datawheel schedule PIPELINE --cron "0 0 3 * * *" --host URL``: a KFP recurring run."""

from __future__ import annotations

import os
import tempfile

import click

from datawheel.cli.output import (
    REMOTE_STORE_HELP,
    namespace_option,
    remote_store,
    store_option,
)
from datawheel.errors import DatawheelError
from datawheel.flywheel.recurring import create_schedule, validate_cron
from datawheel.pipelines import PIPELINES
from datawheel.redact import redact

__all__ = ["schedule"]


@click.command()
@click.argument("pipeline", type=click.Choice(sorted(PIPELINES)))
@click.option(
    "--cron",
    required=True,
    help='KFP cron, 6 fields, seconds first: "0 0 3 * * *" is 03:00 every day.',
)
@click.option("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
@click.option("--experiment", default="datawheel-flywheel", show_default=True)
@click.option("--name", "job_name", default="", help="default: PIPELINE-schedule")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE")
@store_option(REMOTE_STORE_HELP)
@namespace_option()
def schedule(
    pipeline: str,
    cron: str,
    host: str,
    experiment: str,
    job_name: str,
    params: tuple[str, ...],
    store: str | None,
    namespace: str | None,
) -> None:
    """Run PIPELINE on a schedule (max_concurrency=1, no catch-up) on the KFP API at --host.

    The store is --store, else --param store=, else $DATAWHEEL_STORE; it must be s3://. The
    token, if your cluster needs one, comes from $KFP_TOKEN.
    """
    from datawheel.orchestration.compiler import compile_pipeline
    from datawheel.orchestration.params import parse_params
    from datawheel.orchestration.preflight import check_parameters

    cron = validate_cron(cron)  # before anything is compiled or sent
    if not host.startswith(("http://", "https://")):
        raise DatawheelError(
            f"--host {redact(host)!r} is not a URL", "pass e.g. --host http://localhost:8080"
        )
    arguments = parse_params(PIPELINES[pipeline], params)
    arguments["store"] = remote_store(
        store or arguments.get("store"), "a recurring run on Kubeflow"
    )
    check_parameters(arguments)
    if pipeline == "flywheel":
        arguments.setdefault("reason", f"schedule {cron}")
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(pipeline, tmp)
        run_id = create_schedule(
            package,
            host=host,
            cron=cron,
            job_name=job_name or f"{pipeline}-schedule",
            experiment=experiment,
            params=arguments,
            token=os.environ.get("KFP_TOKEN"),
            namespace=namespace,
        )
    click.echo(
        f"scheduled {pipeline} as recurring run {run_id} ({cron!r}, one at a time, no catch-up) "
        f"in experiment {experiment!r} on {redact(host)}"
    )
