"""The promotion path: promote -> candidate with canaries, champion without; reject ->
challenger, never rolled out; the deploy settings in the store; clearing an alias."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from datawheel import registry
from datawheel.data.sources import Loaded
from datawheel.data.versions import commit, ingest_frame
from datawheel.deploy.candidate import NoCandidateError, candidate_to_roll_out, retire_candidate
from datawheel.errors import DatawheelError
from datawheel.orchestration.register import register_step, target_alias
from datawheel.registry import CorruptRecordError
from datawheel.storage import LocalStore, Store


def _model_dir(root: Path, tag: str) -> Path:
    """A fake exported model: the registry stores bytes, it never parses them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.ts").write_bytes(b"torchscript " + tag.encode() * 50)
    (root / "train.json").write_text(
        json.dumps(
            {
                "metrics": {"val_accuracy": 0.9},
                "config": {"model_kind": "mlp"},
                "device": "cpu",
            }
        )
    )
    return root


def _evaluation(decision: str, champion: str | None) -> str:
    return json.dumps(
        {
            "metrics": {"accuracy": 0.9},
            "extra": {},
            "decision": decision,
            "reason": f"test {decision}",
            "champion_version": champion,
        }
    )


def _register(
    store: LocalStore, tmp_path: Path, tag: str, decision: str, champion: str | None, **kw: Any
) -> dict[str, Any]:
    alias = "champion" if decision == "promote" else "challenger"
    model = _model_dir(tmp_path / tag, tag)
    args = (store.uri, "digits", str(model), "digits", "d1", _evaluation(decision, champion))
    summary: dict[str, Any] = json.loads(register_step(*args, alias, **kw))
    return summary


def _alias(store: Store, alias: str) -> str | None:
    record = registry.get_alias(store, "digits", alias)
    return None if record is None else str(record["version"])


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


# --- register_step ---------------------------------------------------------------------


def test_promote_without_canary_moves_the_champion(local: LocalStore, tmp_path: Path) -> None:
    first = _register(local, tmp_path, "a", "promote", None)
    second = _register(local, tmp_path, "b", "promote", "v1")
    assert (first["alias"], second["alias"]) == ("champion", "champion")
    assert second["canary"] is False
    assert (_alias(local, "champion"), _alias(local, "candidate")) == ("v2", None)


def test_promote_with_canary_sets_the_candidate_and_leaves_the_champion(
    local: LocalStore, tmp_path: Path
) -> None:
    # the first model has no champion to run a canary against: it becomes champion
    assert _register(local, tmp_path, "a", "promote", None, canary=True)["alias"] == "champion"
    summary = _register(local, tmp_path, "b", "promote", "v1", canary=True)
    assert (summary["alias"], summary["canary"], summary["model_version"]) == (
        "candidate",
        True,
        "v2",
    )
    assert (_alias(local, "champion"), _alias(local, "candidate")) == ("v1", "v2")
    card = registry.resolve(local, "digits", "v2").card
    assert (card["decision"], card["evaluated_against"]) == ("promote", "v1")
    # a retry registers nothing new and moves nothing
    again = _register(local, tmp_path, "b", "promote", "v1", canary=True)
    assert again["model_version"] == "v2"
    assert [m.version for m in registry.list_versions(local, "digits")] == ["v1", "v2"]
    moves = registry.get_alias(local, "digits", "candidate")
    assert moves is not None and len(moves["moves"]) == 1
    # and the canary may roll it out
    assert candidate_to_roll_out(local, "digits") == ("v1", "v2")


def test_a_rejected_model_is_only_ever_the_challenger(
    local: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(local, tmp_path, "a", "promote", None)
    rejected = _register(local, tmp_path, "b", "reject", "v1", canary=True)
    assert rejected["alias"] == "challenger"
    assert (_alias(local, "champion"), _alias(local, "candidate")) == ("v1", None)
    assert _alias(local, "challenger") == "v2"
    # asked for the champion with a rejection: refused before anything is written
    model = _model_dir(tmp_path / "c", "c")
    args = (local.uri, "digits", str(model), "digits", "d1", _evaluation("reject", "v1"))
    with pytest.raises(SystemExit):
        register_step(*args, "champion", canary=True)
    assert "can only become the challenger, not the champion" in capsys.readouterr().err
    assert [m.version for m in registry.list_versions(local, "digits")] == ["v1", "v2"]
    # and the canary has nothing to roll out, saying why
    with pytest.raises(NoCandidateError) as info:
        candidate_to_roll_out(local, "digits")
    assert str(info.value).startswith(
        "model 'digits' has no candidate: the last evaluation rejected digits:v2, "
        "nothing to roll out"
    )
    assert "\n" not in str(info.value)


def test_target_alias_rules() -> None:
    assert target_alias("champion", "promote", False, "v1") == "champion"
    assert target_alias("champion", "promote", True, "v1") == "candidate"
    assert target_alias("champion", "promote", True, None) == "champion"  # nothing to canary
    assert target_alias("candidate", "promote", False, "v1") == "candidate"
    assert target_alias("challenger", "promote", True, "v1") == "challenger"
    assert target_alias("challenger", "reject", True, "v1") == "challenger"
    for asked in ("champion", "candidate"):
        with pytest.raises(DatawheelError, match="never rolled out"):
            target_alias(asked, "reject", False, "v1")


def test_store_setting_turns_canaries_on_and_the_parameter_cannot_turn_them_off(
    local: LocalStore, tmp_path: Path
) -> None:
    _register(local, tmp_path, "a", "promote", None)
    registry.write_settings(local, "digits", canary=True, reason="prod uses canaries")
    summary = _register(local, tmp_path, "b", "promote", "v1", canary=False)
    assert (summary["alias"], summary["canary"]) == ("candidate", True)
    assert (_alias(local, "champion"), _alias(local, "candidate")) == ("v1", "v2")
    registry.write_settings(local, "digits", canary=False)
    assert _register(local, tmp_path, "c", "promote", "v1")["alias"] == "champion"
    assert _alias(local, "champion") == "v3"


def test_candidate_needs_the_champion_the_evaluation_saw(
    local: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(local, tmp_path, "a", "promote", None)
    _register(local, tmp_path, "b", "promote", "v1")  # v2 is champion now
    with pytest.raises(SystemExit):
        _register(local, tmp_path, "c", "promote", "v1", canary=True)  # compared with v1
    assert "digits@champion points at v2, not v1 as the evaluation saw" in capsys.readouterr().err
    assert _alias(local, "candidate") is None


# --- what the canary may roll out ------------------------------------------------------


def test_canary_refuses_stale_or_rejected_candidates(local: LocalStore, tmp_path: Path) -> None:
    _register(local, tmp_path, "a", "promote", None)
    _register(local, tmp_path, "b", "promote", "v1", canary=True)  # candidate v2 vs v1
    registry.promote(local, "digits", "v2", reason="by hand")  # champion moved: v2
    with pytest.raises(NoCandidateError, match="digits:v2 is already the champion"):
        candidate_to_roll_out(local, "digits")
    _register(local, tmp_path, "c", "promote", "v2", canary=True)  # candidate v3 vs v2
    registry.rollback(local, "digits")  # champion back to v1
    with pytest.raises(NoCandidateError, match="evaluated against champion v2, but the champion"):
        candidate_to_roll_out(local, "digits")
    # pointed at a rejected model by hand: never rolled out
    _register(local, tmp_path, "d", "reject", "v1")
    registry.promote(local, "digits", "v4", alias="candidate")
    with pytest.raises(NoCandidateError, match="which the evaluation rejected"):
        candidate_to_roll_out(local, "digits")


def test_retiring_a_candidate_is_a_compare_and_swap(store: Store, tmp_path: Path) -> None:
    for tag in ("a", "b", "c"):
        registry.register(store, "digits", _model_dir(tmp_path / tag, tag), card={})
    registry.promote(store, "digits", "v1")
    registry.promote(store, "digits", "v2", alias="candidate")
    registry.promote(store, "digits", "v3", alias="candidate")  # a newer one arrived
    assert retire_candidate(store, "digits", "v2", "canary done") is False
    assert _alias(store, "candidate") == "v3"
    assert retire_candidate(store, "digits", "v3", "canary done") is True
    assert _alias(store, "candidate") is None
    assert retire_candidate(store, "digits", "v3", "again") is True  # already unset: no-op


# --- clearing an alias, deploy settings ------------------------------------------------


def test_a_cleared_alias_reads_as_unset_and_keeps_its_moves(store: Store, tmp_path: Path) -> None:
    for tag in ("a", "b"):
        registry.register(store, "m", _model_dir(tmp_path / tag, tag), card={})
    registry.promote(store, "m", "v1", alias="candidate")
    with pytest.raises(registry.AliasMovedError, match="points at v1, not v2"):
        registry.clear(store, "m", "candidate", expect="v2")
    registry.clear(store, "m", "candidate", reason="rolled out", expect="v1")
    assert registry.get_alias(store, "m", "candidate") is None
    with pytest.raises(DatawheelError, match="has no 'candidate' alias"):
        registry.resolve(store, "m", "candidate")
    raw = json.loads(store.get_bytes("models/m/aliases/candidate.json"))
    assert raw["version"] is None and raw["cleared"] is True
    assert [(m["from"], m["to"]) for m in raw["moves"]] == [(None, "v1"), ("v1", None)]
    # set again: expect=None (unset) holds for a cleared alias; history skips the gap
    registry.promote(store, "m", "v2", alias="candidate", expect=None)
    record = registry.get_alias(store, "m", "candidate")
    assert record is not None and record["version"] == "v2" and "cleared" not in record
    assert record["history"] == []
    # a record with "version": null but no "cleared" mark is corrupt, as before
    store.put_bytes("models/m/aliases/champion.json", b'{"version": null}')
    with pytest.raises(CorruptRecordError, match="no valid 'version' field"):
        registry.get_alias(store, "m", "champion")


def test_deploy_settings_default_write_and_corrupt(store: Store) -> None:
    assert registry.read_settings(store, "m").canary is False
    written = registry.write_settings(store, "m", canary=True, reason="canaries in prod")
    assert written.canary is True and written.updated_at is not None
    read = registry.read_settings(store, "m")
    assert (read.canary, read.reason) == (True, "canaries in prod")
    registry.write_settings(store, "m", canary=False)
    assert registry.read_settings(store, "m").canary is False
    assert registry.list_models(store) == []  # a settings record is not a model
    store.put_bytes("models/m/deploy.json", b'{"canary": "yes"}')
    with pytest.raises(CorruptRecordError, match=r"deploy\.json has no valid 'canary'") as info:
        registry.read_settings(store, "m")
    assert "datawheel deploy settings --model m" in str(info.value)
    registry.write_settings(store, "m", canary=True)  # writing again repairs it
    assert registry.read_settings(store, "m").canary is True


def test_the_card_names_the_trigger_of_a_harvested_dataset_version(
    local: LocalStore, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "label": ["a", "b", "a", "b"]})
    lineage = {"kind": "harvest", "reason": "drift: InputDriftHigh"}
    candidate = ingest_frame(
        local, Loaded(frame, "label", "harvest"), name="digits", extra_manifest={"lineage": lineage}
    )
    dv = commit(local, candidate, report="ok", reference=None)
    model = _model_dir(tmp_path / "a", "a")
    evaluation = _evaluation("promote", None)
    register_step(local.uri, "digits", str(model), "digits", dv.version, evaluation, "champion")
    assert registry.resolve(local, "digits", "champion").card["trigger"] == "drift: InputDriftHigh"
    # a dataset version that is not in the store (or has no lineage) gives no trigger
    second = _register(local, tmp_path, "b", "promote", "v1")
    assert "trigger" not in registry.resolve(local, "digits", second["model_version"]).card
