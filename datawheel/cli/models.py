"""``datawheel models``: list, show, promote and roll back registered models."""

from __future__ import annotations

from typing import Any

import click

from datawheel import registry
from datawheel.cli.output import echo_json, print_table, store_option
from datawheel.errors import DatawheelError, name_list
from datawheel.storage import Store, open_store

__all__ = ["models"]

_store = store_option()
_COLUMNS = ("model", "version", "aliases", "test_accuracy", "dataset", "created_at")


@click.group()
def models() -> None:
    """Model versions and aliases in the registry."""


def _known(st: Store, name: str) -> list[str]:
    known = registry.list_models(st)
    if name and name not in known:
        raise DatawheelError(
            f"model {name!r} is not in the registry at {st.uri}: it does not exist",
            f"use one of: {name_list(known)}" if known else "run the training pipeline first",
        )
    return [name] if name else known


def _rows(st: Store, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        aliases: dict[str, list[str]] = {}
        for alias in registry.ALIASES:
            record = registry.get_alias(st, name, alias)
            if record:
                aliases.setdefault(record["version"], []).append(alias)
        for mv in registry.list_versions(st, name):
            rows.append(
                {
                    "model": name,
                    "version": mv.version,
                    "aliases": aliases.get(mv.version, []),
                    "test_accuracy": mv.metrics.get("test_accuracy"),
                    "dataset": mv.card.get("dataset"),
                    "dataset_version": mv.card.get("dataset_version"),
                    "created_at": mv.card["created_at"],
                }
            )
    return rows


@models.command("list")
@click.argument("name", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as one JSON list.")
@_store
def list_(name: str, as_json: bool, store: str | None) -> None:
    """Every model version (or NAME's) with its aliases and test accuracy. Into a pipe the
    table is plain lines, nothing cut."""
    st = open_store(store)
    rows = _rows(st, _known(st, name))
    if as_json:
        echo_json(rows)
        return
    cells = [
        [
            r["model"],
            r["version"],
            ", ".join(r["aliases"]) or "-",
            "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}",
            f"{r['dataset']}@{r['dataset_version']}",
            r["created_at"],
        ]
        for r in rows
    ]
    print_table(_COLUMNS, cells, right=("test_accuracy",))


@models.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="JSON (the default; kept for scripts).")
@_store
def show(ref: str, as_json: bool, store: str | None) -> None:
    """Print the card of NAME[@alias|:version] (default: @champion) as JSON."""
    name, which = registry.parse_ref(ref)
    st = open_store(store)
    _known(st, name)
    echo_json(registry.resolve(st, name, which).card)


@models.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--alias", default="champion", show_default=True)
@click.option("--reason", default="manual promotion", show_default=True)
@click.option("--repair", is_flag=True, help="overwrite a corrupt alias record")
@_store
def promote(
    name: str, version: str, alias: str, reason: str, repair: bool, store: str | None
) -> None:
    """Point ALIAS of model NAME at VERSION (a compare-and-swap; every move is kept)."""
    st = open_store(store)
    _known(st, name)
    record = registry.promote(st, name, version, alias=alias, reason=reason, repair=repair)
    click.echo(f"{name}@{alias} -> {record['version']}")


@models.command("rollback")
@click.argument("name")
@click.option("--alias", default="champion", show_default=True)
@_store
def rollback(name: str, alias: str, store: str | None) -> None:
    """Point ALIAS of model NAME back at the version it had before."""
    st = open_store(store)
    _known(st, name)
    record = registry.rollback(st, name, alias=alias)
    click.echo(f"{name}@{alias} -> {record['version']} ({record['reason']})")
