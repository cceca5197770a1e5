"""``datawheel models``: list, show, promote and roll back registered models."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from datawheel import registry
from datawheel.storage import open_store

_store = click.option("--store", default=None, help="file://PATH or s3://BUCKET/PREFIX")


@click.group()
def models() -> None:
    """Model versions and aliases in the registry."""


@models.command("list")
@_store
def list_(store: str | None) -> None:
    """Every model version with its aliases and test accuracy."""
    st = open_store(store)
    table = Table("model", "version", "aliases", "test_accuracy", "dataset", "created_at")
    for name in registry.list_models(st):
        aliases: dict[str, list[str]] = {}
        for alias in registry.ALIASES:
            record = registry.get_alias(st, name, alias)
            if record:
                aliases.setdefault(record["version"], []).append(alias)
        for mv in registry.list_versions(st, name):
            acc = mv.metrics.get("test_accuracy")
            table.add_row(
                name,
                mv.version,
                ", ".join(aliases.get(mv.version, [])) or "-",
                f"{acc:.4f}" if acc is not None else "-",
                f"{mv.card.get('dataset')}@{mv.card.get('dataset_version')}",
                mv.card["created_at"],
            )
    Console().print(table)


@models.command("show")
@click.argument("ref")
@_store
def show(ref: str, store: str | None) -> None:
    """Print the card of NAME[@alias|:version] (default: @champion) as JSON."""
    name, which = registry.parse_ref(ref)
    click.echo(
        json.dumps(registry.resolve(open_store(store), name, which).card, indent=2, sort_keys=True)
    )


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
    record = registry.promote(
        open_store(store), name, version, alias=alias, reason=reason, repair=repair
    )
    click.echo(f"{name}@{alias} -> {record['version']}")


@models.command("rollback")
@click.argument("name")
@click.option("--alias", default="champion", show_default=True)
@_store
def rollback(name: str, alias: str, store: str | None) -> None:
    """Point ALIAS of model NAME back at the version it had before."""
    record = registry.rollback(open_store(store), name, alias=alias)
    click.echo(f"{name}@{alias} -> {record['version']} ({record['reason']})")
