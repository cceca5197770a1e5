"""``datawheel submit``: upload a compiled pipeline to a Kubeflow Pipelines API and run it."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click

from datawheel.cli.output import (
    REMOTE_STORE_HELP,
    namespace_option,
    remote_store,
    store_option,
)
from datawheel.errors import DatawheelError
from datawheel.orchestration.compiler import compile_pipeline
from datawheel.orchestration.params import parse_params
from datawheel.orchestration.preflight import check_parameters
from datawheel.orchestration.remote import submit as submit_run
from datawheel.pipelines import PIPELINES
from datawheel.redact import redact

__all__ = ["submit"]


@click.command()
@click.argument("pipeline", type=click.Choice(sorted(PIPELINES)))
@click.option("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
@click.option("--experiment", default="datawheel", show_default=True)
@click.option("--run-name", default="", help="default: PIPELINE-TIMESTAMP")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE")
@store_option(REMOTE_STORE_HELP)
@namespace_option()
def submit(
    pipeline: str,
    host: str,
    experiment: str,
    run_name: str,
    params: tuple[str, ...],
    store: str | None,
    namespace: str | None,
) -> None:
    """Compile PIPELINE and start a run on the KFP API at --host.

    The store is --store, else --param store=, else $DATAWHEEL_STORE; it must be s3://, since
    a file:// folder would be a different one in each pod. The token, if your cluster needs
    one, comes from $KFP_TOKEN.
    """
    if not host.startswith(("http://", "https://")):
        raise DatawheelError(
            f"--host {redact(host)!r} is not a URL", "pass e.g. --host http://localhost:8080"
        )
    arguments = parse_params(PIPELINES[pipeline], params)
    arguments["store"] = remote_store(store or arguments.get("store"), "a run on Kubeflow")
    check_parameters(arguments)  # a bad name or kind fails here, not in a retried pod
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(pipeline, tmp)
        name = run_name or f"{pipeline}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        run_id = submit_run(
            package,
            host=host,
            arguments=arguments,
            experiment=experiment,
            run_name=name,
            token=os.environ.get("KFP_TOKEN"),
            namespace=namespace,
        )
    where = f" (namespace {namespace})" if namespace else ""
    click.echo(
        f"submitted {pipeline} as run {run_id} in experiment {experiment!r}{where} on "
        f"{redact(host)}"
    )
