"""`datawheel schedule`: KFP cron validation (6 fields, seconds first) and the recurring run
kfp.Client sends to a recording KFP API (max_concurrency 1, no catch-up, the cron)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp_recorder import kfp_api

from datawheel.cli.main import main
from datawheel.errors import DatawheelError
from datawheel.flywheel.recurring import create_schedule, validate_cron

PACKAGE = Path(__file__).resolve().parent.parent / "pipelines" / "compiled" / "training.yaml"


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 3 * * *",
        "*/30 * * * * ?",
        "0 15,45 9-17 ? * MON-FRI",
        "0 0 0 1 jan,jul *",
        "0 0 */6 1-31/2 * 0,6",
        "  0   0 3 * *  * ",
    ],
)
def test_valid_crons(cron: str) -> None:
    assert validate_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize(
    ("cron", "needles"),
    [
        ("0 3 * * *", ["has 5 field(s)", "probably '0 0 3 * * *'", "seconds first"]),
        ("0 0 3 * * * *", ["has 7 field(s)", "6 fields, seconds first"]),
        ("", ["has 0 field(s)"]),
        ("60 0 3 * * *", ["field 1 (seconds) '60'", "not in 0-59"]),
        ("0 61 3 * * *", ["field 2 (minutes)"]),
        ("0 0 24 * * *", ["field 3 (hours) '24'", "0-23"]),
        ("0 0 3 0 * *", ["field 4 (day-of-month) '0'", "1-31"]),
        ("0 0 3 * 13 *", ["field 5 (month) '13'", "JAN-DEC"]),
        ("0 0 3 * * 7", ["field 6 (day-of-week) '7'", "SUN-SAT"]),
        ("0 0 3 * * FUN", ["field 6 (day-of-week)", "'FUN'"]),
        ("0 0 17-9 * * *", ["field 3 (hours)", "runs backwards"]),
        ("*/0 0 3 * * *", ["field 1 (seconds)", "/0"]),
        ("? 0 3 * * *", ["field 1 (seconds) '?'"]),
        ("0 0 3 L * *", ["field 4 (day-of-month) 'L'"]),
        ("@daily", ["has 1 field(s)"]),
    ],
)
def test_bad_crons_name_the_field(cron: str, needles: list[str]) -> None:
    with pytest.raises(DatawheelError) as info:
        validate_cron(cron)
    text = str(info.value)
    assert "Fix: KFP cron has 6 fields, seconds first" in text and "\n" not in text
    for needle in needles:
        assert needle in text


def test_create_schedule_sends_a_recurring_run_with_one_at_a_time_and_no_catchup() -> None:
    with kfp_api() as api:
        rid = create_schedule(
            PACKAGE,
            host=api.url,
            cron="0 0 3 * * *",
            job_name="nightly",
            experiment="flywheel",
            params={"epochs": 7, "store": "s3://wheel/prod"},
        )
    assert rid == "rr-1"
    (exp,) = api.posts("/apis/v2beta1/experiments")
    assert exp["display_name"] == "flywheel"
    (job,) = api.posts("/apis/v2beta1/recurringruns")
    assert job["display_name"] == "nightly"
    assert job["experiment_id"] == "exp-1"
    assert job["max_concurrency"] == 1  # what kfp.Client sends (the API also takes "1")
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert job["runtime_config"]["parameters"] == {"epochs": 7, "store": "s3://wheel/prod"}
    spec = job["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "datawheel-training"  # uploaded inline
    assert job.get("pipeline_version_reference") is None


def test_schedule_cli_compiles_and_sends_the_flywheel(capsys: pytest.CaptureFixture[str]) -> None:
    with kfp_api() as api:
        code = _run(
            ["schedule", "flywheel", "--cron", "0 30 2 * * *", "--host", api.url,
             "--param", "model_name=digits", "--param", "epochs=5",
             "--store", "s3://wheel/prod"]
        )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "recurring run rr-1" in out.out and "no catch-up" in out.out
    (job,) = api.posts("/apis/v2beta1/recurringruns")
    assert job["display_name"] == "flywheel-schedule"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert job["max_concurrency"] == 1 and job["no_catchup"] is True
    params = job["runtime_config"]["parameters"]
    assert params["model_name"] == "digits" and params["epochs"] == 5
    assert params["reason"] == "schedule 0 30 2 * * *"
    assert params["store"] == "s3://wheel/prod"
    assert "flywheel" in job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"]


def test_schedule_cli_refuses_a_bad_cron_before_any_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with kfp_api() as api:
        code = _run(["schedule", "flywheel", "--cron", "0 3 * * *", "--host", api.url])
    err = capsys.readouterr().err.strip()
    assert code == 2 and api.calls == []
    assert err.startswith("error: cron '0 3 * * *' has 5 field(s)") and "seconds first" in err
    assert "\n" not in err


def test_schedule_to_an_unreachable_host_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatawheelError, match="refused or failed the recurring run"):
        create_schedule(PACKAGE, host=f"http://127.0.0.1:{port}", cron="0 0 3 * * *", job_name="x")
