"""Every ``kfp`` command in the README, run as written by kfp 2.17's own CLI code (the click
group kfp's console script calls) against the recording KFP API, which checks each request.

No KFP API server can run here; tests/kfp_recorder.py answers as the v2beta1 API does and
refuses what it refuses (an unknown experiment or pipeline version, a parameter the
pipeline lacks, a recurring run without a trigger)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from kfp.cli.cli import cli
from kfp_recorder import KfpApi, kfp_api
from readme_support import readme_blocks, unwrap

ROOT = Path(__file__).resolve().parent.parent


def readme_kfp_commands() -> list[list[str]]:
    """The README's ``kfp ...`` lines in bash blocks, continuation lines joined, as argv."""
    commands = []
    for block in readme_blocks("bash"):
        for line in unwrap(block).splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("kfp "):
                commands.append(shlex.split(line)[1:])
    return commands


def kfp(api: KfpApi, args: list[str]) -> Result:
    return CliRunner().invoke(cli, ["--endpoint", api.url, *args], obj={}, catch_exceptions=True)


def _spec(path: str) -> dict[str, Any]:
    spec: dict[str, Any] = next(yaml.safe_load_all((ROOT / path).read_text()))
    return spec


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository


def test_the_readme_lists_the_commands_this_file_checks() -> None:
    verbs = [tuple(c[:2]) for c in readme_kfp_commands()]
    assert ("pipeline", "create") in verbs
    assert ("experiment", "create") in verbs
    assert verbs.count(("run", "create")) >= 2  # training and flywheel
    assert ("recurring-run", "create") in verbs


def test_every_readme_kfp_command_works_as_written(in_repo: None) -> None:
    with kfp_api() as api:
        for args in readme_kfp_commands():
            result = kfp(api, args)
            assert result.exit_code == 0, (
                f"`kfp {shlex.join(args)}` failed: {result.output}\n{result.exception!r}"
            )
        assert api.refused == []

        (upload,) = api.posts("/apis/v2beta1/pipelines/upload")
        assert upload["pipelineInfo"] == _spec("pipelines/compiled/training.yaml")["pipelineInfo"]
        assert [p["display_name"] for p in api.pipelines.values()] == ["datawheel-training"]

        assert [e["display_name"] for e in api.experiments.values()] == ["flywheel"]
        runs = api.posts("/apis/v2beta1/runs")
        assert [r["display_name"] for r in runs] == ["nightly", "flywheel-now"]
        assert {r["experiment_id"] for r in runs} == {"exp-1"}  # created once, then found
        training, flywheel = (r["pipeline_spec"] for r in runs)
        # the platform spec (GPU, Secret, PVC) travels with the run, or the pods get none
        platform = training["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]
        assert "exec-train" in platform["executors"]
        assert training["pipeline_spec"]["pipelineInfo"]["name"] == "datawheel-training"
        assert runs[0]["runtime_config"]["parameters"] == {
            "store": "s3://mlpipeline/datawheel",
            "epochs": 40,
            "sweep_learning_rates": "0.001,0.003",
        }
        assert flywheel["pipeline_spec"]["pipelineInfo"]["name"] == "datawheel-flywheel"
        assert runs[1]["runtime_config"]["parameters"] == {
            "store": "s3://mlpipeline/datawheel",
            "model_name": "digits",
        }

        (recurring,) = api.posts("/apis/v2beta1/recurringruns")
        assert recurring["display_name"] == "flywheel-nightly"
        assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
        assert int(recurring["max_concurrency"]) == 1
        assert recurring["experiment_id"] == "exp-1"
        spec = recurring["pipeline_spec"]
        assert spec.get("pipeline_spec", spec)["pipelineInfo"]["name"] == "datawheel-flywheel"
        assert recurring["runtime_config"]["parameters"]["model_name"] == "digits"


def test_an_uploaded_pipeline_runs_by_id_and_version_but_not_by_name_alone(in_repo: None) -> None:
    """What the README says about `run create`: -p with -v works; -n alone does not."""
    with kfp_api() as api:
        assert (
            kfp(
                api, ["pipeline", "create", "-p", "t", "pipelines/compiled/training.yaml"]
            ).exit_code
            == 0
        )
        assert kfp(api, ["experiment", "create", "flywheel"]).exit_code == 0
        (pid,) = api.pipelines
        (vid,) = api.versions
        ok = kfp(api, ["run", "create", "-e", "flywheel", "-p", pid, "-v", vid, "epochs=3"])
        assert ok.exit_code == 0, ok.output
        (run,) = api.posts("/apis/v2beta1/runs")
        assert run["pipeline_version_reference"] == {"pipeline_id": pid, "pipeline_version_id": vid}
        alone = kfp(api, ["run", "create", "-e", "flywheel", "-n", "t", "epochs=3"])
        assert alone.exit_code != 0
        assert "both `pipeline_id` and `version_id` are required" in str(alone.exception)
        assert len(api.posts("/apis/v2beta1/runs")) == 1  # nothing was sent


def test_the_recorder_refuses_a_parameter_the_pipeline_lacks(in_repo: None) -> None:
    """The check above can fail: a misspelt parameter is refused as the API would."""
    with kfp_api() as api:
        bad = kfp(
            api,
            ["run", "create", "-e", "x", "-f", "pipelines/compiled/flywheel.yaml", "epoch=4"],
        )
        assert bad.exit_code != 0
        assert api.refused and "epoch" in api.refused[0][1]
