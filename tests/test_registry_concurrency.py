"""The registry under concurrent writers and killed writers, on both stores, with real processes.

Before conditional writes, two processes registering 15 versions each got 17 versions: 13
were overwritten, both were told v1..v8, and 4 versions mixed both writers' files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from datawheel import registry
from datawheel.registry import AliasMovedError, CorruptRecordError
from datawheel.storage import Store
from datawheel.storage.files import sha256_bytes

WORKER = Path(__file__).with_name("registry_worker.py")


def _model(root: Path, tag: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.ts").write_bytes(f"torchscript {tag} ".encode() * 2000)
    (root / "model.pt").write_bytes(f"weights {tag} ".encode() * 500)
    (root / "transform.json").write_text(json.dumps({"tag": tag}))
    return root


def _env(request: pytest.FixtureRequest, store: Store) -> dict[str, str]:
    env = dict(os.environ)
    if store.uri.startswith("s3://"):
        env.update(request.getfixturevalue("seaweedfs").env())
    return env


def _workers(
    store: Store, env: dict[str, str], tmp_path: Path, batches: list[list[Path]], *extra: str
) -> list[subprocess.Popen[bytes]]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *extra, store.uri, "m", str(go), str(out), *batch],
            env=env,
        )
        for out, batch in (
            (tmp_path / f"out{i}.json", list(map(str, b))) for i, b in enumerate(batches)
        )
    ]
    go.touch()
    return procs


def _assert_intact(store: Store, versions: list[registry.ModelVersion]) -> None:
    """Every file of every version matches its card's SHA-256, so every version can serve."""
    for mv in versions:
        for fname, digest in mv.card["files"].items():
            data = store.get_bytes(f"models/m/versions/{mv.version}/{fname}")
            assert sha256_bytes(data) == digest, f"{mv.version}/{fname} mixes writers"


@pytest.mark.parametrize("per_worker", [1, 5])
def test_concurrent_registers_give_distinct_intact_versions(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest, per_worker: int
) -> None:
    batches = [
        [_model(tmp_path / f"w{w}-{i}", f"w{w}-{i}") for i in range(per_worker)] for w in range(4)
    ]
    procs = _workers(store, _env(request, store), tmp_path, batches)
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    told = [v for i in range(4) for v in json.loads((tmp_path / f"out{i}.json").read_text())]
    versions = registry.list_versions(store, "m")
    total = 4 * per_worker
    assert sorted(told, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, total + 1)]
    assert [m.version for m in versions] == [f"v{i}" for i in range(1, total + 1)]
    assert len({m.card["checksum"] for m in versions}) == total
    for mv in versions:  # each writer was told the version that holds its own model
        src = Path(mv.card["src"])
        assert mv.card["checksum"] == sha256_bytes((src / "model.ts").read_bytes())
    _assert_intact(store, versions)


def test_register_killed_before_its_card_is_invisible_and_a_retry_completes_it(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src = _model(tmp_path / "m", "killed")
    (proc,) = _workers(store, _env(request, store), tmp_path, [[src]], "--die-before-card")
    assert proc.wait(timeout=60) == -9
    assert registry.list_versions(store, "m") == []
    assert store.exists("models/m/versions/v1/claim.json")  # the claim outlived its writer
    retried = registry.register(store, "m", src, card={})
    assert retried.version == "v1"
    assert [m.version for m in registry.list_versions(store, "m")] == ["v1"]
    _assert_intact(store, [retried])
    other = registry.register(store, "m", _model(tmp_path / "n", "next"), card={})
    assert other.version == "v2"


def test_concurrent_promotes_keep_every_move(store: Store, tmp_path: Path) -> None:
    for i in range(8):
        registry.register(store, "m", _model(tmp_path / f"m{i}", f"m{i}"), card={})
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def move(version: str) -> None:
        try:
            start.wait()
            registry.promote(store, "m", version, reason=f"to {version}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(f"v{i + 1}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    record = registry.get_alias(store, "m", "champion")
    assert record is not None
    moves = record["moves"]
    assert sorted(m["to"] for m in moves) == sorted(f"v{i + 1}" for i in range(8))
    assert [m["from"] for m in moves[1:]] == [m["to"] for m in moves[:-1]]  # an unbroken chain
    assert record["version"] == moves[-1]["to"]
    assert len(record["history"]) == 7


def test_promote_decided_against_a_moved_champion_is_refused(store: Store, tmp_path: Path) -> None:
    for tag in ("a", "b", "c"):
        registry.register(store, "m", _model(tmp_path / tag, tag), card={})
    registry.promote(store, "m", "v1", expect=None)
    with pytest.raises(AliasMovedError, match="points at v1, not nothing"):
        registry.promote(store, "m", "v2", expect=None)
    registry.promote(store, "m", "v2", expect="v1")  # another pipeline promotes v2
    with pytest.raises(AliasMovedError, match="points at v2, not v1"):
        registry.promote(store, "m", "v3", expect="v1")
    record = registry.get_alias(store, "m", "champion")
    assert record is not None and record["version"] == "v2"
    assert [(m["from"], m["to"]) for m in record["moves"]] == [(None, "v1"), ("v1", "v2")]


@pytest.mark.parametrize("body", [b'{"version": "v1"', b"[]", b"{}", b'{"version": 3}', b"\xff"])
def test_corrupt_alias_is_a_one_line_error(store: Store, tmp_path: Path, body: bytes) -> None:
    registry.register(store, "m", _model(tmp_path / "a", "a"), card={})
    store.put_bytes("models/m/aliases/champion.json", body)
    with pytest.raises(CorruptRecordError, match=r"aliases/champion\.json") as err:
        registry.resolve(store, "m")
    assert "\n" not in str(err.value) and "--repair" in str(err.value)
    with pytest.raises(CorruptRecordError):
        registry.promote(store, "m", "v1")
    record = registry.promote(store, "m", "v1", repair=True)
    assert registry.resolve(store, "m").version == "v1" == record["version"]


@pytest.mark.parametrize("body", [b'{"version": "v1", "fi', b"[]", b'{"files": {}}'])
def test_corrupt_card_is_a_one_line_error(store: Store, tmp_path: Path, body: bytes) -> None:
    registry.register(store, "m", _model(tmp_path / "a", "a"), card={})
    store.put_bytes("models/m/versions/v1/card.json", body)
    with pytest.raises(CorruptRecordError, match=r"versions/v1/card\.json"):
        registry.list_versions(store, "m")
    with pytest.raises(CorruptRecordError, match=r"versions/v1/card\.json"):
        registry.resolve(store, "m", "v1")
    # a corrupt neighbour does not block the next registration
    assert registry.register(store, "m", _model(tmp_path / "b", "b"), card={}).version == "v2"
