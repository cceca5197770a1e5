"""``datawheel datasets``: ingest, list and show dataset versions; pin a dataset's reference."""

from __future__ import annotations

from typing import Any

import click

from datawheel.cli.output import echo_json, print_table, store_option
from datawheel.data import versions as ds
from datawheel.errors import DatawheelError, name_list
from datawheel.storage import Store, open_store, validate_name

__all__ = ["datasets"]

_store = store_option()
_COLUMNS = ("dataset", "version", "ref", "rows", "classes", "parent", "created_at", "source")


def _known(st: Store, name: str) -> str:
    """``name`` if the store has such a dataset, else a one-line error naming those it has."""
    validate_name(name, "dataset name")
    known = ds.list_datasets(st)
    if name not in known:
        raise DatawheelError(
            f"dataset {name!r} does not exist in store {st.uri}",
            f"use one of: {name_list(known)}"
            if known
            else "ingest one with 'datawheel datasets ingest SOURCE'",
        )
    return name


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
@click.argument("name", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as one JSON list.")
@_store
def list_(name: str, as_json: bool, store: str | None) -> None:
    """Every dataset (or only NAME) and its committed versions, oldest first (* marks the
    reference). Into a pipe the table is plain lines, nothing cut."""
    st = open_store(store)
    rows = []
    for dataset in [_known(st, name)] if name else ds.list_datasets(st):
        reference = _reference_of(st, dataset)
        for v in ds.list_versions(st, dataset):
            m = v.manifest
            rows.append(
                {
                    "dataset": dataset,
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
        echo_json(rows)
        return
    cells = [
        [
            r["dataset"],
            r["version"],
            "*" if r["reference"] else "",
            str(r["rows"]),
            str(r["classes"]),
            r["parent"] or "-",
            r["created_at"],
            r["source"],
        ]
        for r in rows
    ]
    print_table(_COLUMNS, cells, right=("rows", "classes"))


@datasets.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="JSON (the default; kept for scripts).")
@_store
def show(ref: str, as_json: bool, store: str | None) -> None:
    """Print NAME[@VERSION] (default: the latest version) as JSON: its manifest and the
    dataset's reference record."""
    from datawheel.data.reference import read_reference

    name, _, version = ref.partition("@")
    st = open_store(store)
    dv = ds.get_version(st, _known(st, name), version or "latest")
    echo_json({"manifest": dv.manifest, "reference": read_reference(st, name)})


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
