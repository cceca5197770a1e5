"""``datawheel drift``: compare a reference with a current sample, feature by feature.

Exit status: 0 when the comparison ran (drift or not; ``--fail-on-drift`` makes dataset
drift 1), 2 on bad input (one line, with the fix).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from datawheel.cli.output import STORE_HELP, console, store_option

__all__ = ["drift"]


def _num(x: Any) -> str:
    if x is None:
        return "-"
    v = float(x)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _console() -> Console:
    # Into a pipe or a file: no colour, no wrapping, and as wide as the table needs, so no
    # name, path or note is ever cut.
    out: Console = console(sys.stdout)
    return out


def _table(title: str, rows: list[Any], pipe: bool) -> Table:
    from rich import box

    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE if pipe else box.HEAVY_HEAD,
        show_edge=not pipe,
    )
    for col in ("feature", "kind", "test", "statistic", "p-value", "threshold", "psi"):
        right = col in ("statistic", "p-value", "threshold", "psi")
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    table.add_column("drifted", overflow="fold")
    table.add_column("notes", overflow="fold")
    for f in rows:
        state = "[bold red]DRIFT[/]" if f.drifted else ("no" if f.verdict else "no verdict")
        table.add_row(
            f.name,
            f.kind,
            f.test,
            _num(f.statistic),
            _num(f.p_value),
            _num(f.threshold),
            _num(f.psi),
            state,
            f.notes,
        )
    return table


def _print_report(run: Any) -> None:
    r = run.report
    pipe = not sys.stdout.isatty()
    out = _console()
    verdict = "[bold red]DATASET DRIFT[/]" if r.dataset_drift else "[bold green]no dataset drift[/]"
    out.print(
        f"{verdict}: {len(r.drifted_features)} of {len(r.features)} features drifted "
        f"(reference {run.reference}, {r.reference_rows:,} rows; current {run.current}, "
        f"{r.current_rows:,} rows)",
        highlight=False,
    )
    classes = [f for f in (r.prediction, r.label) if f is not None]
    if classes:
        out.print(_table("predictions and labels", classes, pipe))
    out.print(_table("features by severity", r.features, pipe))
    for note in [*run.notes, *r.notes]:
        out.print(note, highlight=False)
    out.print(f"rule: {r.rule}", highlight=False)


@click.command()
@click.argument("reference", required=False, default="")
@click.argument("current", required=False, default="")
@click.option(
    "--model",
    default="",
    help="NAME[@alias] or NAME:vN: its training-split reference against its ledger window.",
)
@store_option(f"{STORE_HELP} (datasets, models)")
@click.option("--since", default="24h", show_default=True, help="ledger window for --model")
@click.option("--label", default="", help="a column that is not a feature (the label)")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--html", "html_path", default="", help="Also write the HTML report here.")
@click.option("--markdown", "md_path", default="", help="Also write the Markdown report here.")
@click.option("--fail-on-drift", is_flag=True, help="Exit 1 when the dataset drifted.")
def drift(
    reference: str,
    current: str,
    model: str,
    store: str | None,
    since: str,
    label: str,
    as_json: bool,
    html_path: str,
    md_path: str,
    fail_on_drift: bool,
) -> None:
    """Compare CURRENT with REFERENCE (each a dataset NAME@VERSION or a CSV/Parquet file or
    URI), or with --model the model's reference with the rows it served in the --since
    window. Prints every feature ranked by severity: its test, statistic, p-value,
    threshold and whether it drifted, and the dataset verdict."""
    from datawheel.orchestration.drift_report import run_drift, write_reports

    run = run_drift(store, reference, current, model=model, since=since, label=label)
    title = f"Drift of {model}" if model else "Drift report"
    write_reports(run, report_path=md_path, html_path=html_path, title=title)
    if as_json:
        out = run.report.to_json_dict()
        out.update(reference=run.reference, current=run.current)
        click.echo(json.dumps(out, indent=2))
    else:
        _print_report(run)
    if html_path:
        click.echo(f"html report: {html_path}", err=True)
    if fail_on_drift and run.report.dataset_drift:
        raise click.exceptions.Exit(1)
