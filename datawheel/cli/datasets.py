"""``datawheel datasets``: ingest, list and show dataset versions."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from datawheel.data import versions as ds
from datawheel.storage import open_store

_store = click.option("--store", default=None, help="file://PATH or s3://BUCKET/PREFIX")


@click.group()
def datasets() -> None:
    """Dataset versions in the store."""


@datasets.command("ingest")
@click.argument("source")
@click.option("--name", default="", help="dataset name (default: from the source)")
@click.option("--label", default="label", show_default=True)
@click.option("--image-size", default=16, show_default=True)
@_store
def ingest(source: str, name: str, label: str, image_size: int, store: str | None) -> None:
    """Ingest SOURCE (digits, a CSV/Parquet file, or an image folder) as a new version."""
    dv = ds.ingest(open_store(store), source, name=name, label=label, image_size=image_size)
    click.echo(f"{dv.name}@{dv.version}: {dv.manifest['rows']} rows")


@datasets.command("list")
@_store
def list_(store: str | None) -> None:
    """Every dataset and its versions, oldest first."""
    st = open_store(store)
    table = Table("dataset", "version", "rows", "classes", "parent", "created_at", "source")
    for name in ds.list_datasets(st):
        for v in ds.list_versions(st, name):
            m = v.manifest
            table.add_row(
                name,
                v.version,
                str(m["rows"]),
                str(len(m["classes"])),
                m["parent"] or "-",
                m["created_at"],
                m["source"],
            )
    Console().print(table)


@datasets.command("show")
@click.argument("ref")
@_store
def show(ref: str, store: str | None) -> None:
    """Print the manifest of NAME[@VERSION] (default: the latest version) as JSON."""
    name, _, version = ref.partition("@")
    dv = ds.get_version(open_store(store), name, version or "latest")
    click.echo(json.dumps(dv.manifest, indent=2, sort_keys=True))
