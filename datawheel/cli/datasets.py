"""``datawheel datasets``: ingest, list and show dataset versions; pin a dataset's reference."""

from __future__ import annotations

import json
from typing import Any

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
    """Ingest SOURCE (digits, a CSV/Parquet file, or an image folder) and validate it.

    The version is committed if it passes validation, else rejected with its report.
    """
    from datawheel.data.gate import admit

    st = open_store(store)
    candidate = ds.ingest(st, source, name=name, label=label, image_size=image_size)
    admission = admit(st, candidate.name, candidate.version)
    admission.report.raise_if_hard()
    dv = admission.version
    click.echo(f"{dv.name}@{dv.version}: {dv.manifest['rows']} rows ({admission.outcome})")


def _reference_of(st: Any, name: str) -> str | None:
    from datawheel.data.validation import reference_for

    ref = reference_for(st, name)
    return ref.version if ref else None


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@_store
def list_(as_json: bool, store: str | None) -> None:
    """Every dataset and its committed versions, oldest first (* marks the reference)."""
    st = open_store(store)
    rows = []
    for name in ds.list_datasets(st):
        reference = _reference_of(st, name)
        for v in ds.list_versions(st, name):
            m = v.manifest
            rows.append(
                {
                    "dataset": name,
                    "version": v.version,
                    "reference": v.version == reference,
                    "rows": m["rows"],
                    "classes": len(m["classes"]),
                    "parent": m["parent"],
                    "created_at": m["created_at"],
                    "committed_at": m.get("committed_at"),
                    "source": m["source"],
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    table = Table("dataset", "version", "ref", "rows", "classes", "parent", "created_at", "source")
    for r in rows:
        table.add_row(
            r["dataset"],
            r["version"],
            "*" if r["reference"] else "",
            str(r["rows"]),
            str(r["classes"]),
            r["parent"] or "-",
            r["created_at"],
            r["source"],
        )
    Console().print(table)


@datasets.command("show")
@click.argument("ref")
@_store
def show(ref: str, store: str | None) -> None:
    """Print NAME[@VERSION] (default: the latest version) as JSON: its manifest and the
    dataset's reference record."""
    from datawheel.data.reference import read_reference

    name, _, version = ref.partition("@")
    st = open_store(store)
    dv = ds.get_version(st, name, version or "latest")
    out = {"manifest": dv.manifest, "reference": read_reference(st, name)}
    click.echo(json.dumps(out, indent=2, sort_keys=True))


@datasets.command("pin-reference")
@click.argument("name")
@click.argument("version")
@click.option("--reason", required=True, help="Why this version becomes the reference.")
@_store
def pin_reference(name: str, version: str, reason: str, store: str | None) -> None:
    """Make committed VERSION the reference that NAME's later versions are validated against."""
    from datawheel.data.gate import pin_reference as pin

    record = pin(open_store(store), name, version, reason=reason)
    before = record["history"][-1] if record["history"] else None
    click.echo(f"{name} reference: {before or '-'} -> {record['version']} ({record['reason']})")
