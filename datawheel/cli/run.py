"""``datawheel run PIPELINE --local``: run a pipeline through kfp.local with live progress."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from datawheel.errors import DatawheelError
from datawheel.orchestration.local_runner import LocalRunner, RunEvent, RunResult
from datawheel.orchestration.params import defaults, parse_params
from datawheel.orchestration.preflight import check_flywheel, check_training
from datawheel.orchestration.sweep import lr_grid
from datawheel.pipelines import PIPELINES
from datawheel.pipelines.training import SWEEP_PARALLELISM


@click.command()
@click.argument("pipeline", type=click.Choice(sorted(PIPELINES)))
@click.option(
    "--local",
    "local_",
    is_flag=True,
    required=True,
    help="Run here through kfp.local (use 'datawheel submit' for a cluster).",
)
@click.option(
    "--store", default=None, help="file://PATH (default ./.datawheel) or s3://BUCKET/PREFIX"
)
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline parameter; repeatable."
)
@click.option(
    "--pipeline-root",
    default=".datawheel/runs",
    show_default=True,
    help="Where kfp.local keeps step artifacts and logs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def run(
    pipeline: str,
    local_: bool,
    store: str | None,
    params: tuple[str, ...],
    pipeline_root: str,
    as_json: bool,
) -> None:
    """Run PIPELINE locally and print its summary (dataset, model, metrics, decision)."""
    func = PIPELINES[pipeline]
    args = {**defaults(func), **parse_params(func, params)}
    if store:
        args["store"] = store
    if pipeline == "flywheel":
        args = check_flywheel(args)
        n_rates, total = 1, 8  # harvest validate drift prep train evaluate alias register
    else:
        args = check_training(args)
        n_rates = len(lr_grid(float(args["learning_rate"]), str(args["sweep_learning_rates"])))
        total = 8 + n_rates
    # Bind the real stream now: the runner redirects sys.stderr into its log while it runs.
    console = Console(file=sys.stderr)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("[dim]{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task(f"{pipeline}: starting", total=total)

        def on_event(event: RunEvent) -> None:
            if event.kind == "start":
                progress.update(bar, description=f"{pipeline}: {event.task}")
            elif event.kind == "end":
                progress.advance(bar)
            else:
                progress.console.print(f"  [dim]{event.text}[/dim]", highlight=False)

        runner = LocalRunner(
            pipeline_root, on_event=on_event, concurrent_steps=min(n_rates, SWEEP_PARALLELISM)
        )
        result = runner.run(func, args)
    if as_json:
        click.echo(json.dumps(_as_dict(result), indent=2, sort_keys=True))
    else:
        _print_summary(console, result)
    if result.status != "SUCCEEDED":
        raise DatawheelError(
            result.error or "the pipeline failed", f"see the full log at {result.log_path}"
        )


def _as_dict(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": result.error,
        "summary": result.summary,
        "timings": {
            "wall_seconds": round(result.wall_seconds, 3),
            "body_seconds": round(result.body_seconds, 3),
            "overhead_seconds": round(result.overhead_seconds, 3),
            "steps": [
                {
                    "task": s.task,
                    "status": s.status,
                    "wall_seconds": None if s.wall_seconds is None else round(s.wall_seconds, 3),
                    "body_seconds": s.body_seconds,
                }
                for s in result.steps
            ],
        },
        "log": str(result.log_path),
    }


def _print_summary(console: Console, result: RunResult) -> None:
    out = Console(file=sys.stdout)
    s = result.summary
    if s:
        table = Table(title=f"run {result.status.lower()}", show_header=False)
        table.add_row("dataset", f"{s['dataset']}@{s['dataset_version']}")
        table.add_row("model", f"{s['model']}:{s['model_version']} ({s['alias']})")
        table.add_row("decision", f"[bold]{s['decision']}[/bold]: {s['reason']}")
        if s.get("report"):
            table.add_row("report", s["report"])
        for key in (
            "test_accuracy",
            "test_macro_f1",
            "test_int8_accuracy",
            "val_accuracy",
            "epochs_run",
            "samples_per_second",
        ):
            if key in s["metrics"]:
                table.add_row(key, f"{s['metrics'][key]:.4g}")
        out.print(table)
    steps = Table(title="timings (seconds)")
    for col in ("step", "wall", "in body"):
        steps.add_column(col, justify="right" if col != "step" else "left")
    for st in result.steps:
        body = f"{st.body_seconds:.2f}" if st.body_seconds is not None else "-"
        wall = f"{st.wall_seconds:.2f}" if st.wall_seconds is not None else "-"
        steps.add_row(st.task, wall, body)
    steps.add_row("[bold]total[/bold]", f"{result.wall_seconds:.2f}", f"{result.body_seconds:.2f}")
    out.print(steps)
    out.print(
        f"KFP overhead (time not in step bodies): {result.overhead_seconds:.2f}s; "
        f"log: {result.log_path}"
    )
