"""``datawheel deploy``: render and apply the kustomize manifests; canary rollouts and the
per-model deploy settings (does the deployment use canaries?)."""

from __future__ import annotations

import json

import click

from datawheel import registry
from datawheel.cli.canary import canary
from datawheel.cli.output import store_option
from datawheel.deploy.apply import apply as apply_overlay
from datawheel.deploy.manifests import overlays
from datawheel.deploy.manifests import render as render_overlay
from datawheel.storage import open_store

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


@deploy.command("settings")
@click.option("--model", required=True, help="Registered model name.")
@store_option()
@click.option(
    "--canary/--no-canary",
    "use_canary",
    default=None,
    help="Set: a promoted model becomes the candidate, rolled out only by 'deploy canary' "
    "(--canary), or the champion at once, hot-swapped by the servers (--no-canary). "
    "Without either, print the settings.",
)
@click.option("--reason", default="", help="Why, kept in the settings record.")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def settings(
    model: str, store: str | None, use_canary: bool | None, reason: str, as_json: bool
) -> None:
    """Show or set MODEL's deploy settings (models/NAME/deploy.json in the store)."""
    st = open_store(store)
    if use_canary is None:
        current = registry.read_settings(st, model)
    else:
        current = registry.write_settings(st, model, canary=use_canary, reason=reason)
    if as_json:
        click.echo(json.dumps({"model": model, **current.to_json()}, sort_keys=True))
    elif current.canary:
        click.echo(
            f"{model}: canaries on: a promoted model becomes {model}@candidate; roll it out "
            f"with 'datawheel deploy canary --model {model}'"
        )
    else:
        click.echo(f"{model}: canaries off: a promoted model becomes {model}@champion at once")


@deploy.command("overlays")
@click.option("--json", "as_json", is_flag=True, help="Print the names as one JSON list.")
def list_overlays(as_json: bool) -> None:
    """List the overlays."""
    if as_json:
        click.echo(json.dumps(list(overlays())))
        return
    for name in overlays():
        click.echo(name)
