"""``datawheel flywheel``: the flywheel's stages by hand (``harvest``).

Exit status: 0 when the harvest ran (a version created or not), 2 on bad input, a store
that failed, or a harvested version that failed validation (one line, with the fix).
"""

from __future__ import annotations

import json

import click

from datawheel.cli.output import store_option
from datawheel.storage import open_store

__all__ = ["flywheel"]


@click.group()
def flywheel() -> None:
    """Production labels back into training data."""


@flywheel.command("harvest")
@click.option("--model", required=True, help="model NAME whose ledger is harvested")
@store_option()
@click.option("--since", default="", help="labels given from T on (ISO-8601, epoch s or 24h)")
@click.option("--until", default="", help="labels given before T (default: now)")
@click.option("--reason", default="", help="why this harvest runs (kept in the lineage)")
@click.option("--no-validate", is_flag=True, help="Leave a candidate; do not validate/commit.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def harvest(
    model: str,
    store: str | None,
    since: str,
    until: str,
    reason: str,
    no_validate: bool,
    as_json: bool,
) -> None:
    """Join MODEL's predictions with their feedback labels and write the labelled rows as
    a new, validated version of the model's dataset (deduplicated by content; the newest
    label wins a conflict). A window with no new labels creates nothing and says so."""
    from datawheel.flywheel.harvest import harvest as run_harvest
    from datawheel.flywheel.harvest import parse_time

    result = run_harvest(
        open_store(store),
        model,
        since=parse_time(since) if since.strip() else None,
        until=parse_time(until) if until.strip() else None,
        reason=reason,
        validate=not no_validate,
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
        click.echo(result.message, err=True)
        return
    click.echo(result.message)
