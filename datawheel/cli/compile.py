"""``datawheel compile``: write pipelines/compiled/*.yaml."""

from __future__ import annotations

import click

from datawheel.orchestration.compiler import COMPILED_DIR, compile_all


@click.command("compile")
@click.option("--out-dir", default=str(COMPILED_DIR), show_default=True, type=click.Path())
def compile_(out_dir: str) -> None:
    """Compile every pipeline to KFP IR YAML."""
    for path in compile_all(out_dir):
        click.echo(f"wrote {path}")
