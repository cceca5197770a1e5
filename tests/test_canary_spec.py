"""Building the canary Deployment and sizing it: pure functions on API JSON."""

from __future__ import annotations

import copy
import re

import pytest
from fake_kube import NAME_LABEL, stable_deployment

from datawheel.deploy.canary_spec import (
    TRACK_LABEL,
    canary_deployment,
    canary_replicas,
    check_follows_champion,
    model_arg,
    parse_steps,
)
from datawheel.errors import DatawheelError


def test_canary_is_the_stable_pod_on_the_canary_track_pinned_to_a_version() -> None:
    stable = stable_deployment()
    before = copy.deepcopy(stable)
    canary = canary_deployment(stable, "datawheel-serve-canary", "digits:v3", 1)
    assert stable == before  # the stable object is not modified
    meta = canary["metadata"]
    assert meta["name"] == "datawheel-serve-canary" and meta["namespace"] == "datawheel"
    assert meta["labels"] == {
        NAME_LABEL: "datawheel-serve",
        "app.kubernetes.io/part-of": "datawheel",
        TRACK_LABEL: "canary",
    }
    assert meta["annotations"]["datawheel.dev/canary-of"] == "datawheel-serve digits:v3"
    assert not {"resourceVersion", "uid", "generation", "creationTimestamp"} & set(meta)
    assert "status" not in canary
    spec = canary["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {
        "matchLabels": {NAME_LABEL: "datawheel-serve", TRACK_LABEL: "canary"}
    }
    labels = spec["template"]["metadata"]["labels"]
    assert labels[TRACK_LABEL] == "canary" and labels[NAME_LABEL] == "datawheel-serve"
    serve, sidecar = spec["template"]["spec"]["containers"]
    assert serve["args"][:3] == ["serve", "--model", "digits:v3"]
    assert serve["args"][3:] == stable["spec"]["template"]["spec"]["containers"][0]["args"][3:]
    assert serve["image"] == "ghcr.io/datawheel/datawheel:0.1.0"
    assert sidecar["args"] == ["--model", "x"]  # only the serve container is pinned
    assert spec["template"]["spec"]["serviceAccountName"] == "datawheel-serve"


def test_model_arg_in_equals_form_is_replaced_in_the_same_form() -> None:
    stable = stable_deployment(model_args=["serve", "--model=digits@champion"])
    canary = canary_deployment(stable, "c", "digits:v2", 2)
    args = canary["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["serve", "--model=digits:v2"]
    assert model_arg(canary) == (1, "digits:v2")


def test_a_deployment_without_a_model_arg_is_refused() -> None:
    stable = stable_deployment(model_args=["serve"])
    with pytest.raises(DatawheelError, match="runs no 'serve --model"):
        canary_deployment(stable, "c", "digits:v2", 1)


def test_the_container_named_serve_is_required_among_several() -> None:
    stable = stable_deployment()
    stable["spec"]["template"]["spec"]["containers"][0]["name"] = "main"
    with pytest.raises(DatawheelError, match="no container named 'serve'"):
        model_arg(stable)
    del stable["spec"]["template"]["spec"]["containers"][1]
    assert model_arg(stable) == (2, "$(DATAWHEEL_MODEL)@champion")  # a lone container will do


@pytest.mark.parametrize(
    "value", ["$(DATAWHEEL_MODEL)@champion", "digits@champion", "digits", "$(DATAWHEEL_MODEL)"]
)
def test_stable_following_champion_is_accepted(value: str) -> None:
    check_follows_champion(stable_deployment(model_args=["serve", "--model", value]), "digits")


@pytest.mark.parametrize("value", ["digits:v1", "digits@challenger", "other@champion"])
def test_stable_not_following_champion_is_refused(value: str) -> None:
    stable = stable_deployment(model_args=["serve", "--model", value])
    with pytest.raises(DatawheelError, match=re.escape(f"serves '{value}', not digits@champion")):
        check_follows_champion(stable, "digits")


@pytest.mark.parametrize(
    ("stable", "share", "expected"),
    [
        (4, 0.1, 1),  # 0.44: at least one canary pod (20% of the pods)
        (4, 0.25, 1),  # 1.33
        (4, 0.5, 4),  # half the pods
        (4, 0.75, 12),
        (10, 0.1, 1),  # 1.11
        (10, 0.25, 3),  # 3.33: 23% of the pods
        (3, 0.25, 1),  # 1.0
        (1, 0.5, 1),
        (2, 0.2, 1),  # 0.5 rounds half up
        (6, 0.25, 2),
    ],
)
def test_canary_replicas(stable: int, share: float, expected: int) -> None:
    assert canary_replicas(stable, share) == expected


def test_parse_steps() -> None:
    assert parse_steps("0.1,0.25,0.5") == (0.1, 0.25, 0.5)
    assert parse_steps(" 0.5 , 0.9 ") == (0.5, 0.9)
    assert parse_steps("0.2") == (0.2,)


@pytest.mark.parametrize(
    "text", ["", "0.5,0.25", "0,0.5", "0.5,1", "1", "0.5,1.5", "a,b", "0.5,0.5", ","]
)
def test_bad_steps_are_refused(text: str) -> None:
    with pytest.raises(DatawheelError, match=re.escape("pass --steps like 0.1,0.25,0.5 (")):
        parse_steps(text)
