"""The ``datawheel`` command. Each noun lives in its own module; this one wires them up.

A :class:`DatawheelError` anywhere becomes one line on stderr and exit status 2; with
``--json`` the error is also a JSON document on stdout (``{"error": ..., "fix": ...}``).
Credentials in any URL of an error line are masked.
"""

from __future__ import annotations

import importlib
import sys

import click

from datawheel.errors import DatawheelError
from datawheel.redact import redact

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
    "studio": "datawheel.cli.studio:studio",
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


def _wants_json(argv: list[str]) -> bool:
    args = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in args


def _fail(exc: DatawheelError, code: int, as_json: bool) -> None:
    """``exc`` as one line on stderr (and, with ``--json``, a JSON document on stdout)."""
    if as_json:
        import json

        from datawheel.cli.output import error_document

        click.echo(json.dumps(error_document(exc), sort_keys=True))
    click.echo(redact(f"error: {exc}"), err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    try:
        # Without standalone mode click returns, not raises, a command's Exit(code).
        code = cli.main(args=args, prog_name="datawheel", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except DatawheelError as exc:
        _fail(exc, 2, as_json)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if as_json:  # a usage error too is one line on stderr and a JSON document
            _fail(
                DatawheelError(exc.format_message(), "see the command's --help"),
                exc.exit_code,
                True,
            )
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:  # `datawheel models list | head -1`: the reader has gone
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as exc:  # a file the command was pointed at: one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        problem = f"{exc.strerror or type(exc).__name__}{where}"
        fix = "check the path, its permissions and the free disk space"
        _fail(DatawheelError(problem, fix), 2, as_json)


if __name__ == "__main__":
    main()
