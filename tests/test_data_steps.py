"""The ingest and validate pipeline steps, on a real LocalStore and a real S3 store (SeaweedFS).

ingest_step writes a candidate; validate_step commits it or rejects it. No list and no
later step sees a version before validate_step committed it.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from datawheel.data import versions as ds
from datawheel.data.gate import pin_reference
from datawheel.data.reference import read_reference
from datawheel.data.validation import reference_for
from datawheel.errors import DatawheelError
from datawheel.orchestration.ingest import ingest_step
from datawheel.orchestration.prep import prep_step
from datawheel.orchestration.validate import validate_step
from datawheel.storage import open_store


@pytest.fixture(params=["file", "s3"])
def uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URI the steps open themselves: a folder, or a prefix in SeaweedFS."""
    if request.param == "file":
        return f"file://{tmp_path / 'store'}"
    server = request.getfixturevalue("s3_env")
    return f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}/s"


def _table(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """Features a, b, c in [0, 1] with both ends hit, so versions share their ranges."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, size=(rows, 3))
    values[0], values[1] = 0.0, 1.0
    frame = pd.DataFrame(values, columns=["a", "b", "c"])
    frame["label"] = np.where(np.arange(rows) % 2 == 0, "yes", "no")
    return frame


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _ingest(uri: str, source: str, tmp_path: Path, name: str = "tab") -> str:
    """Run ingest_step; the candidate's version id."""
    manifest = tmp_path / f"manifest-{uuid.uuid4().hex[:6]}.json"
    out = ingest_step(uri, source, name, "label", 16, str(manifest))
    json.loads(manifest.read_text(), parse_constant=_refuse)  # the artifact is standard JSON
    return str(out["version"])


def _validate(uri: str, version: str, tmp_path: Path, name: str = "tab") -> dict[str, Any]:
    return validate_step(uri, name, version, str(tmp_path / f"report-{version}.md"))


def _refuse(token: str) -> None:
    raise AssertionError(f"non-standard JSON constant {token}")


def _failed_validate(
    uri: str, version: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        _validate(uri, version, tmp_path)
    assert info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("[datawheel] error: validate: "), line
    assert "Fix:" in line
    return line


def test_candidate_invisible_until_validated(uri: str, tmp_path: Path) -> None:
    version = _ingest(uri, _csv(tmp_path, _table()), tmp_path)
    st = open_store(uri)
    assert ds.list_datasets(st) == []
    assert ds.list_versions(st, "tab") == []
    assert ds.latest_version(st, "tab") is None
    assert reference_for(st, "tab") is None
    with pytest.raises(SystemExit):
        prep_step(uri, "tab", version, 0, str(tmp_path / "splits"))  # no step sees it
    out = _validate(uri, version, tmp_path)
    assert out == {"ok": True, "warnings": 0, "outcome": "committed"}
    assert [v.version for v in ds.list_versions(st, "tab")] == [version]
    assert st.list("datasets/tab/candidates") == []
    assert (tmp_path / f"report-{version}.md").read_text().startswith("# Data validation: PASSED")
    record = read_reference(st, "tab")
    assert record is not None
    assert record["version"] == version
    assert record["reason"] == "first version to pass the absolute checks"
    assert record["history"] == []


def test_first_version_bad_then_good_accepted(
    uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = open_store(uri)
    bad = _ingest(uri, _csv(tmp_path, _table().iloc[:1], "one-row.csv"), tmp_path)
    line = _failed_validate(uri, bad, tmp_path, capsys)
    assert "1 row, fewer than the minimum 10" in line
    assert ds.list_versions(st, "tab") == []
    assert read_reference(st, "tab") is None  # a bad first version is nobody's reference
    assert st.exists(f"datasets/tab/rejected/{bad}/report.md")
    # A good version of the same name is accepted, not measured against the 1-row one.
    good = _ingest(uri, _csv(tmp_path, _table(rows=300), "good.csv"), tmp_path)
    assert _validate(uri, good, tmp_path)["outcome"] == "committed"
    assert [v.version for v in ds.list_versions(st, "tab")] == [good]
    ref = reference_for(st, "tab")
    assert ref is not None and ref.version == good
    # And later versions are checked against it.
    later = _ingest(uri, _csv(tmp_path, _table(rows=200, seed=1), "later.csv"), tmp_path)
    assert _validate(uri, later, tmp_path)["outcome"] == "committed"
    assert ds.get_version(st, "tab", later).manifest["validated_against"] == good
    assert ds.get_version(st, "tab", later).manifest["parent"] == good


def test_rejected_version_never_listed(
    uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = open_store(uri)
    good = _ingest(uri, _csv(tmp_path, _table()), tmp_path)
    _validate(uri, good, tmp_path)
    bad_frame = _table(seed=1).drop(columns="c")
    bad = _ingest(uri, _csv(tmp_path, bad_frame, "bad.csv"), tmp_path)
    line = _failed_validate(uri, bad, tmp_path, capsys)
    assert "schema c: column missing" in line
    assert [v.version for v in ds.list_versions(st, "tab")] == [good]
    assert ds.latest_version(st, "tab") == ds.get_version(st, "tab", good)
    assert not [k for k in st.list("datasets/tab") if f"/versions/{bad}/" in k]
    assert st.list("datasets/tab/candidates") == []
    with pytest.raises(SystemExit):
        prep_step(uri, "tab", bad, 0, str(tmp_path / "splits"))
    assert "failed validation" in capsys.readouterr().err


def test_same_content_again_is_found_idempotently(uri: str, tmp_path: Path) -> None:
    source = _csv(tmp_path, _table())
    version = _ingest(uri, source, tmp_path)
    _validate(uri, version, tmp_path)
    st = open_store(uri)
    keys = st.list("datasets")
    assert _ingest(uri, source, tmp_path) == version
    assert st.list("datasets") == keys  # no candidate: the committed version was found
    assert _validate(uri, version, tmp_path)["outcome"] == "found"
    assert st.list("datasets") == keys


def test_concurrent_same_content_never_loses_the_committed_copy(uri: str, tmp_path: Path) -> None:
    source = _csv(tmp_path, _table(rows=200))
    workers = 6
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            version = _ingest(uri, source, tmp_path)
            outcomes.append(_validate(uri, version, tmp_path / f"w{i}")["outcome"])
        except BaseException as exc:  # SystemExit from a failed step included
            errors.append(exc)

    for i in range(workers):
        (tmp_path / f"w{i}").mkdir()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(outcomes) == workers
    assert set(outcomes) <= {"committed", "found"}
    st = open_store(uri)
    (only,) = ds.list_versions(st, "tab")
    pd.testing.assert_frame_equal(
        ds.read_frame(st, only).drop(columns="label"),
        pd.read_csv(source).drop(columns="label").astype(np.float32),
    )
    assert st.list("datasets/tab/candidates") == []
    record = read_reference(st, "tab")
    assert record is not None and record["version"] == only.version


def test_pin_reference(uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    st = open_store(uri)
    first = _ingest(uri, _csv(tmp_path, _table(), "v1.csv"), tmp_path)
    _validate(uri, first, tmp_path)
    wide = _table(seed=2)
    wide["a"] *= 100  # far outside the reference's ranges
    rejected = _ingest(uri, _csv(tmp_path, wide, "wide.csv"), tmp_path)
    assert "range a:" in _failed_validate(uri, rejected, tmp_path, capsys)
    with pytest.raises(DatawheelError, match="not a committed version") as info:
        pin_reference(st, "tab", rejected, reason="rejected one")
    assert first in str(info.value)  # the fix lists what can be pinned
    candidate = _ingest(uri, _csv(tmp_path, _table(seed=5), "waiting.csv"), tmp_path)
    with pytest.raises(DatawheelError, match="not a committed version"):
        pin_reference(st, "tab", candidate, reason="not validated yet")
    with pytest.raises(DatawheelError, match="not a committed version"):
        pin_reference(st, "tab", "0123456789abcdef", reason="unknown")
    with pytest.raises(DatawheelError, match="needs a reason"):
        pin_reference(st, "tab", first, reason=" ")
    # Re-pin to a later committed version, on purpose and with a reason: history kept.
    second = _ingest(uri, _csv(tmp_path, _table(rows=120, seed=3), "v2.csv"), tmp_path)
    assert _validate(uri, second, tmp_path)["outcome"] == "committed"
    record = pin_reference(st, "tab", second, reason="larger and newer")
    assert record["version"] == second
    assert record["history"] == [first]
    assert [m["to"] for m in record["moves"]] == [first, second]
    assert record["moves"][-1] == {
        **record["moves"][-1],
        "from": first,
        "reason": "larger and newer",
    }
    assert read_reference(st, "tab") == record
    assert pin_reference(st, "tab", second, reason="same again") == record  # no new move
    ref = reference_for(st, "tab")
    assert ref is not None and ref.version == second
    # A candidate validated now is checked against the pinned version.
    third = _ingest(uri, _csv(tmp_path, _table(seed=4), "v3.csv"), tmp_path)
    _validate(uri, third, tmp_path)
    assert ds.get_version(st, "tab", third).manifest["validated_against"] == second


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda f: f.assign(label="yes"), "only 1 class ('yes')"),
        (lambda f: f.assign(a=f["a"].where(f.index != 5, np.inf)), "finite a: 1 value(s) infinite"),
        (lambda f: f.assign(b=f["b"].where(f.index != 5, 1e300)), "beyond float32's range"),
        (lambda f: f.assign(label=f["label"].where(f.index > 2)), "3 row(s) have no label"),
        (
            lambda f: f.assign(label=np.where(f.index < 2, "rare", f["label"])),
            "class(es) rare (2) have fewer than 5 rows",
        ),
    ],
    ids=["one-class", "inf", "1e300", "nan-labels", "tiny-class"],
)
def test_data_that_cannot_train_fails_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, needle: str
) -> None:
    """On a cluster no pre-flight runs: validate (never retried) must refuse it, first or not."""
    uri = f"file://{tmp_path / 'store'}"
    version = _ingest(uri, _csv(tmp_path, change(_table())), tmp_path)
    st = open_store(uri)
    candidate = json.loads(
        st.get_bytes(f"datasets/tab/candidates/{version}/manifest.json"), parse_constant=_refuse
    )
    assert candidate["rows"] == 60
    line = _failed_validate(uri, version, tmp_path, capsys)
    assert needle in line, line
    assert ds.list_versions(st, "tab") == []
    assert read_reference(st, "tab") is None
    rejected = st.get_bytes(f"datasets/tab/rejected/{version}/manifest.json")
    json.loads(rejected, parse_constant=_refuse)
