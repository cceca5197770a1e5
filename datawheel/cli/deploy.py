"""``datawheel deploy``: render and apply the kustomize manifests; canary rollouts."""

from __future__ import annotations

import click

from datawheel.cli.canary import canary
from datawheel.deploy.apply import apply as apply_overlay
from datawheel.deploy.manifests import overlays
from datawheel.deploy.manifests import render as render_overlay

__all__ = ["deploy"]

_OVERLAY_HELP = "kustomize overlay under manifests/overlays (local, kubeflow, gpu)"


@click.group()
def deploy() -> None:
    """Deploy serving and monitoring on Kubernetes (kustomize overlays)."""


@deploy.command()
@click.option("--overlay", required=True, help=_OVERLAY_HELP)
@click.option("--kubectl", "binary", default="kubectl", show_default=True)
def render(overlay: str, binary: str) -> None:
    """Print the overlay's manifests (what `apply` would send)."""
    click.echo(render_overlay(overlay, binary=binary), nl=False)


@deploy.command()
@click.option("--overlay", required=True, help=_OVERLAY_HELP)
@click.option("--kubectl", "binary", default="kubectl", show_default=True)
@click.option("--context", default=None, help="kubeconfig context to use")
@click.option("--kubeconfig", default=None, help="path to a kubeconfig file")
@click.option(
    "--dry-run",
    type=click.Choice(["none", "server"]),
    default="none",
    show_default=True,
    help="server: let the API server validate without persisting anything",
)
def apply(
    overlay: str, binary: str, context: str | None, kubeconfig: str | None, dry_run: str
) -> None:
    """Apply the overlay to the cluster kubectl points at."""
    extra = ["--dry-run=server"] if dry_run == "server" else []
    result = apply_overlay(
        overlay, binary=binary, context=context, kubeconfig=kubeconfig, extra_args=extra
    )
    click.echo(result.output, nl=False)


deploy.add_command(canary)


@deploy.command("overlays")
def list_overlays() -> None:
    """List the overlays."""
    for name in overlays():
        click.echo(name)
