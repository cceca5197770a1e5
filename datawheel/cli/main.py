"""The ``datawheel`` command. Each noun lives in its own module; this one wires them up.

A :class:`DatawheelError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from datawheel.errors import DatawheelError

__all__ = ["cli", "main"]

# command name -> "module:attribute". Imported on use: `run` pulls in torch and compiles the
# pipeline DSL (seconds), which `deploy render` or `models list` should not pay for.
_COMMANDS = {
    "run": "datawheel.cli.run:run",
    "submit": "datawheel.cli.submit:submit",
    "serve": "datawheel.cli.serve:serve",
    "compile": "datawheel.cli.compile:compile_",
    "datasets": "datawheel.cli.datasets:datasets",
    "models": "datawheel.cli.models:models",
    "deploy": "datawheel.cli.deploy:deploy",
    "drift": "datawheel.cli.drift:drift",
    "watch": "datawheel.cli.watch:watch",
    "schedule": "datawheel.cli.schedule:schedule",
    "flywheel": "datawheel.cli.flywheel:flywheel",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="datawheel")
def cli() -> None:
    """datawheel: the data flywheel on Kubeflow Pipelines."""


def main(argv: list[str] | None = None) -> None:
    try:
        # Without standalone mode click returns, not raises, a command's Exit(code).
        code = cli.main(args=argv, prog_name="datawheel", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except DatawheelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
