"""``datawheel run PIPELINE --local``: run a pipeline through kfp.local with live progress."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import click

from datawheel.cli.output import STORE_HELP, echo_json, is_terminal, print_table, store_option
from datawheel.errors import DatawheelError
from datawheel.orchestration.local_runner import LocalRunner, RunEvent, RunResult
from datawheel.orchestration.params import defaults, parse_params
from datawheel.orchestration.preflight import check_flywheel, check_training
from datawheel.orchestration.sweep import lr_grid
from datawheel.pipelines import PIPELINES
from datawheel.pipelines.training import SWEEP_PARALLELISM
from datawheel.redact import redact
from datawheel.storage.settings import store_uri

__all__ = ["run"]


class RunFailed(DatawheelError):
    """A run that ended badly; ``details`` go into the ``--json`` error document."""

    def __init__(self, problem: str, fix: str, details: dict[str, Any]) -> None:
        super().__init__(problem, fix)
        self.details = details


@click.command()
@click.argument("pipeline", type=click.Choice(sorted(PIPELINES)))
@click.option(
    "--local",
    "local_",
    is_flag=True,
    required=True,
    help="Run here through kfp.local (use 'datawheel submit' for a cluster).",
)
@store_option(f"{STORE_HELP}; wins over --param store=")
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline parameter; repeatable."
)
@click.option(
    "--pipeline-root",
    default=".datawheel/runs",
    show_default=True,
    help="Where kfp.local keeps step artifacts and logs.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the summary as JSON on stdout; a failure as {"error": ..., "fix": ...}.',
)
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
    given = parse_params(func, params)
    args = {**defaults(func), **given}
    if store or "store" not in given:  # --store, else --param store=, else $DATAWHEEL_STORE
        args["store"] = store_uri(store)
    if pipeline == "flywheel":
        args = check_flywheel(args)
        # harvest validate drift prep train compress evaluate alias register
        n_rates, total = 1, 9
    else:
        args = check_training(args)
        n_rates = len(lr_grid(float(args["learning_rate"]), str(args["sweep_learning_rates"])))
        total = 9 + n_rates  # lr-grid ingest validate prep (trains) pick-best importer
        # compress evaluate register
    # Bind the real stream now: the runner redirects sys.stderr into its log while it runs.
    with _progress(sys.stderr, pipeline, total) as on_event:
        runner = LocalRunner(
            pipeline_root, on_event=on_event, concurrent_steps=min(n_rates, SWEEP_PARALLELISM)
        )
        result = runner.run(func, args)
    if not as_json:
        _print_summary(result)
    if result.status != "SUCCEEDED":
        problem, _, fix = (result.error or "the pipeline failed").partition(". Fix: ")
        where = f"the full log is at {result.log_path}"
        details = {k: v for k, v in _as_dict(result).items() if k != "error"}
        raise RunFailed(problem, f"{fix.rstrip('.')}; {where}" if fix else f"see {where}", details)
    if as_json:
        echo_json(_as_dict(result))


@contextlib.contextmanager
def _progress(stream: IO[str], pipeline: str, total: int) -> Iterator[Callable[[RunEvent], None]]:
    """Each step as it starts and every progress line, on ``stream``: a live bar on a
    terminal, else plain lines written whole (no wrapping, no cut)."""
    if not is_terminal(stream):
        done = 0

        def plain(event: RunEvent) -> None:
            nonlocal done
            if event.kind == "start":
                line = f"{pipeline}: {event.task} ({done}/{total} steps done)"
            elif event.kind == "end":
                done += 1
                return
            else:
                line = f"  {event.text}"
            stream.write(redact(line) + "\n")
            stream.flush()

        yield plain
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("[dim]{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=True,
    ) as progress:
        bar = progress.add_task(f"{pipeline}: starting", total=total)

        def live(event: RunEvent) -> None:
            if event.kind == "start":
                progress.update(bar, description=f"{pipeline}: {event.task}")
            elif event.kind == "end":
                progress.advance(bar)
            else:
                progress.console.print(f"  {redact(event.text)}", style="dim", markup=False)

        yield live


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


def _print_summary(result: RunResult) -> None:
    s = result.summary
    if s:
        rows = [
            ["dataset", f"{s['dataset']}@{s['dataset_version']}"],
            ["model", f"{s['model']}:{s['model_version']} ({s['alias']})"],
            ["decision", f"{s['decision']}: {s['reason']}"],
        ]
        if s.get("report"):
            rows.append(["report", s["report"]])
        for key in (
            "test_accuracy",
            "test_macro_f1",
            "test_int8_accuracy",
            "val_accuracy",
            "epochs_run",
            "samples_per_second",
        ):
            if key in s["metrics"]:
                rows.append([key, f"{s['metrics'][key]:.4g}"])
        print_table(("key", "value"), rows, title=f"run {result.status.lower()}", header=False)
    steps = [
        [
            st.task,
            f"{st.wall_seconds:.2f}" if st.wall_seconds is not None else "-",
            f"{st.body_seconds:.2f}" if st.body_seconds is not None else "-",
        ]
        for st in result.steps
    ]
    steps.append(["total", f"{result.wall_seconds:.2f}", f"{result.body_seconds:.2f}"])
    print_table(
        ("step", "wall", "in body"), steps, title="timings (seconds)", right=("wall", "in body")
    )
    click.echo(
        f"KFP overhead (time not in step bodies): {result.overhead_seconds:.2f}s; "
        f"log: {result.log_path}"
    )
