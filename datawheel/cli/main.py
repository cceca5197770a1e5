"""The ``datawheel`` command. Each noun lives in its own module; this one wires them up.

A :class:`DatawheelError` anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

import click

from datawheel.cli import compile as compile_cmd
from datawheel.cli import datasets, deploy, models, run, serve, submit
from datawheel.errors import DatawheelError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="datawheel")
def cli() -> None:
    """datawheel: the data flywheel on Kubeflow Pipelines."""


cli.add_command(run.run)
cli.add_command(submit.submit)
cli.add_command(serve.serve)
cli.add_command(compile_cmd.compile_)
cli.add_command(datasets.datasets)
cli.add_command(models.models)
cli.add_command(deploy.deploy)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="datawheel", standalone_mode=False)
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
