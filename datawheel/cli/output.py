"""What the CLI prints, the same way in every command.

- On a terminal, tables are rich tables. Into a pipe or a file they are plain lines: a
  header and one line per row, columns padded with spaces and nothing cut or wrapped, so
  ``grep``, ``awk`` and ``cut`` see every name, path and date whole.
- ``--json`` prints one JSON document on stdout; a command that fails with ``--json``
  prints ``{"error": ..., "fix": ...}`` there too (and exits non-zero).
- ``--store`` is one option for every command: the flag, else ``$DATAWHEEL_STORE``, else
  ``file://.datawheel``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Collection, Sequence
from typing import IO, Any, TypeVar

import click

from datawheel.errors import DatawheelError
from datawheel.redact import redact

__all__ = [
    "REMOTE_STORE_HELP",
    "STORE_HELP",
    "console",
    "echo_json",
    "error_document",
    "is_terminal",
    "kube_namespace",
    "namespace_option",
    "plain_lines",
    "print_table",
    "remote_store",
    "store_option",
]

_F = TypeVar("_F", bound=Callable[..., Any])

STORE_HELP = (
    "file://PATH, a folder path or s3://BUCKET/PREFIX "
    "[default: $DATAWHEEL_STORE, else file://.datawheel]"
)

REMOTE_STORE_HELP = (
    "s3://BUCKET/PREFIX, the store the pods use (a file:// folder is refused) "
    "[default: --param store=, else $DATAWHEEL_STORE]"
)


def store_option(help_text: str = STORE_HELP) -> Callable[[_F], _F]:
    """The ``--store`` option; ``None`` when not given, which open_store resolves."""
    return click.option("--store", default=None, metavar="URI", help=help_text)


def namespace_option() -> Callable[[_F], _F]:
    """``--namespace PROFILE``: where a run or recurring run lives on multi-user Kubeflow."""
    return click.option(
        "--namespace",
        default=None,
        metavar="PROFILE",
        callback=lambda _ctx, _param, value: kube_namespace(value),
        help="Multi-user Kubeflow: the profile namespace the run belongs to (its experiment "
        "is found or created there and its pods run there, with that namespace's datawheel-s3 "
        "Secret and datawheel-settings ConfigMap). Leave it out on standalone KFP.",
    )


def kube_namespace(name: str | None) -> str | None:
    """``name`` if it is a Kubernetes namespace name (an RFC 1123 label), else a one-line error."""
    if name is None:
        return None
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise DatawheelError(
            f"--namespace {name!r} is not a Kubernetes namespace name",
            "pass your Kubeflow profile's namespace, e.g. --namespace kubeflow-user-example-com",
        )
    return name


def is_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream if stream is not None else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or a stream without isatty
        return False


def console(stream: IO[str] | None = None) -> Any:
    """A rich Console for ``stream`` (stdout): as usual on a terminal; into a pipe no colour,
    no markup highlighting and no wrapping at 80 columns (as wide as a line needs)."""
    from rich.console import Console

    stream = stream if stream is not None else sys.stdout
    if is_terminal(stream):
        return Console(file=stream)
    return Console(file=stream, width=100_000, no_color=True, soft_wrap=True, highlight=False)


def echo_json(document: Any) -> None:
    """One JSON document on stdout (sorted keys, indented)."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def plain_lines(
    columns: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[str] = ()
) -> list[str]:
    """A table as plain lines: the header, then each row; columns two spaces apart, padded to
    their widest cell, nothing cut, no trailing spaces."""
    table = [list(columns), *[[" ".join(str(c).split("\n")) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(w) if col in right else cell.ljust(w)
            for cell, w, col in zip(row, widths, columns, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str = "",
    header: bool = True,
    right: Collection[str] = (),
) -> None:
    """``rows`` under ``columns`` on stdout: a rich table on a terminal, else plain lines."""
    if not is_terminal():
        if title:
            click.echo(title)
        lines = plain_lines(columns, rows, right)
        for line in lines if header else lines[1:]:
            click.echo(line)
        return
    from rich.table import Table

    table = Table(title=title or None, show_header=header)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console().print(table)


def error_document(exc: BaseException) -> dict[str, Any]:
    """The JSON a ``--json`` command prints when it fails: the problem, its fix, and what
    else the error carries (``details``: a failed run's status and log)."""
    if isinstance(exc, DatawheelError):
        doc: dict[str, Any] = {"error": redact(exc.problem), "fix": redact(exc.fix)}
        doc.update(getattr(exc, "details", None) or {})
        return doc
    if isinstance(exc, click.ClickException):
        return {
            "error": redact(exc.format_message().rstrip(".")),
            "fix": "see the command's --help",
        }
    return {"error": redact(str(exc)), "fix": ""}


def remote_store(uri: str | None, what: str) -> str:
    """The store for pods on a cluster (``--store``, ``$DATAWHEEL_STORE``, the default): an
    ``s3://`` one, since a ``file://`` folder would be a different one in every pod."""
    from datawheel.storage.settings import local_store_path, store_uri

    chosen = store_uri(uri)
    if local_store_path(chosen) is not None:
        raise DatawheelError(
            f"{what} needs a store every pod can reach, and {chosen!r} is a local folder "
            "(each pod would have its own)",
            "pass --store s3://BUCKET/PREFIX (or set DATAWHEEL_STORE to it)",
        )
    return chosen
