"""What a script may rely on from every command: ``--json`` on each list and show, the store
rule everywhere, whole lines into a pipe, and messages that read right.

Commands run through ``main()`` with pytest's captured stdout, which is not a terminal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from cli_helpers import main_cli as _cli
from datawheel.pipelines import PIPELINES

from datawheel.cli.main import cli
from datawheel.cli.run import _print_summary
from datawheel.orchestration.local_runner import RunResult, StepTiming
from datawheel.orchestration.params import parse_params

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands() -> dict[str, click.Command]:
    """Every leaf command, by its full name (``models list``)."""
    found: dict[str, click.Command] = {}
    ctx = click.Context(cli)

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(cli, [])
    return found


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_every_list_and_show_command_has_json() -> None:
    commands = _commands()
    listing = [n for n in commands if n.split()[-1] in ("list", "show", "overlays", "settings")]
    assert {"datasets list", "datasets show", "models list", "models show"} <= set(listing)
    for name in listing:
        assert "--json" in _options(commands[name]), name


# Every command that takes --store, with arguments that get it as far as opening the store.
STORE_COMMANDS: dict[str, tuple[str, ...]] = {
    "datasets ingest": ("{csv}",),
    "datasets list": (),
    "datasets show": ("d",),
    "datasets pin-reference": ("d", "v1", "--reason", "r"),
    "models list": (),
    "models show": ("m",),
    "models promote": ("m", "v1"),
    "models rollback": ("m",),
    "deploy settings": ("--model", "m"),
    "deploy canary": ("--model", "m"),
    "drift": ("--model", "m"),
    "flywheel harvest": ("--model", "m"),
    "run": ("training", "--local"),
    "serve": ("--model", "m", "--port", "0"),
    "studio": ("--model", "m", "--port", "0"),
    "watch": ("--model", "m", "--local", "--once"),
    "submit": ("training", "--host", "http://127.0.0.1:9"),
    "schedule": ("training", "--cron", "0 0 * * * *", "--host", "http://127.0.0.1:9"),
}


def _argv(name: str) -> list[str]:
    return [*name.split(), *STORE_COMMANDS[name]]


def test_the_store_commands_are_all_here() -> None:
    assert {n for n, c in _commands().items() if "--store" in _options(c)} == set(STORE_COMMANDS)


@pytest.mark.parametrize("name", sorted(STORE_COMMANDS))
def test_every_store_command_honours_datawheel_store(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed $DATAWHEEL_STORE reaches every command: each one read it."""
    (tmp_path / "t.csv").write_text("a,label\n1,x\n2,y\n")
    argv = [a.format(csv=tmp_path / "t.csv") for a in _argv(name)]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAWHEEL_STORE", "::::")
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == "", err
    (line,) = err.splitlines()
    assert line.startswith("error: store '::::' is not file://PATH") and "Fix: " in line
    code, _, err = _cli(capsys, *argv, "--store", "::x")  # --store wins over the variable
    assert code == 2 and err.startswith("error: store '::x'"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # nothing was made


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_cluster_command_refuses_the_default_local_store(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATAWHEEL_STORE", raising=False)
    for store in ((), ("--store", "file://.datawheel"), ("--store", "./here")):
        code, out, err = _cli(capsys, *_argv(command), *store)
        assert code == 2 and out == ""
        (line,) = err.splitlines()
        assert "is a local folder (each pod would have its own)" in line
        assert line.endswith("Fix: pass --store s3://BUCKET/PREFIX (or set DATAWHEEL_STORE to it).")


def test_readme_documents_the_store_variable_and_default() -> None:
    text = " ".join(README.read_text().split())
    assert "`$DATAWHEEL_STORE`, else `file://.datawheel`" in text
    assert "`submit` and `schedule` refuse a `file://` store" in text


def _result(report: str) -> RunResult:
    steps = [StepTiming("ingest", 0.5, "SUCCESS", 0.25), StepTiming("train", None, "SUCCESS")]
    summary = {
        "dataset": "digits",
        "dataset_version": "v" * 40,
        "model": "digits",
        "model_version": "v2",
        "alias": "challenger",
        "decision": "reject",
        "reason": "test accuracy 0.91 is not above the champion's 0.93 by the margin " * 3,
        "report": report,
        "metrics": {"test_accuracy": 0.91234},
    }
    return RunResult("SUCCEEDED", 2.0, steps, Path("/tmp/runs/run-x.log"), summary)


def test_the_run_summary_in_a_pipe_keeps_every_path_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = "/srv/" + "deep/" * 30 + "models/digits/versions/v2/report.html"
    capsys.readouterr()
    _print_summary(_result(report))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "run succeeded"
    assert re.fullmatch(r"report +" + re.escape(report), lines[4]), lines[4]
    reason = _result("").summary["reason"].rstrip()
    assert re.fullmatch(r"decision +reject: " + re.escape(reason), lines[3]), lines[3]
    assert re.fullmatch(r"step +wall +in body", lines[7])
    assert lines[-2].split() == ["total", "2.00", "0.25"]
    assert lines[-1] == ("KFP overhead (time not in step bodies): 1.75s; log: /tmp/runs/run-x.log")
    assert "…" not in out and "│" not in out and "\x1b" not in out


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("epochs=x", "parameter epochs='x' is not an integer. Fix: pass e.g. --param epochs=30."),
        (
            "learning_rate=fast",
            "parameter learning_rate='fast' is not a number. "
            "Fix: pass e.g. --param learning_rate=0.001.",
        ),
        ("epochs", "--param 'epochs' is not KEY=VALUE. Fix: write e.g. --param epochs=5."),
    ],
)
def test_a_bad_parameter_names_its_kind_and_a_real_example(pair: str, message: str) -> None:
    from datawheel.errors import DatawheelError

    with pytest.raises(DatawheelError) as caught:
        parse_params(PIPELINES["training"], [pair])
    assert str(caught.value) == message
    assert "a int" not in message and "=." not in message


def test_a_bad_boolean_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "run", "flywheel", "--local", "--param", "canary=maybe")
    assert code == 2 and out == ""
    assert err == (
        "error: parameter canary='maybe' is not a boolean. "
        "Fix: pass e.g. --param canary=true (or false).\n"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("datasets", "list", "--json", "--bogus"),
        ("models", "show", "--json"),
        ("run", "training", "--local", "--json", "--param", "epochs"),
        ("models", "list", "nope", "--json"),
        ("datasets", "show", "nope", "--json"),
        ("datasets", "show", "n" * 300, "--json"),
    ],
)
def test_with_json_an_error_is_a_document_and_one_line(
    args: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, *args, "--store", f"file://{tmp_path / 'store'}")
    assert code == 2
    doc = json.loads(out)
    assert set(doc) == {"error", "fix"} and doc["fix"]
    assert err == f"error: {doc['error']}. Fix: {doc['fix']}.\n"
    assert ".." not in err and err.count("Fix:") == 1 and "Traceback" not in err
    assert not (tmp_path / "store").exists()
