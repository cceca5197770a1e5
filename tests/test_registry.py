"""The model registry: checksummed versions, cards and aliases, on both stores."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pytest
from failing_store import FailingStore

from datawheel import registry
from datawheel.errors import DatawheelError
from datawheel.registry import ChecksumError
from datawheel.storage import Store


def _model_dir(root: Path, tag: str = "a") -> Path:
    """A fake exported model: the registry stores bytes, it never parses them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.ts").write_bytes(b"torchscript " + tag.encode() * 100)
    (root / "model_int8.ts").write_bytes(b"int8 " + tag.encode())
    (root / "transform.json").write_text('{"mean": [0.0]}')
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_versions_and_card(store: Store, tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "m1")
    card = {"metrics": {"accuracy": 0.9}, "dataset": "digits@abc", "params": {"lr": 0.01}}
    v1 = registry.register(store, "mnist", src, card=card)
    assert v1.version == "v1"
    assert v1.card["checksum"] == _sha(src / "model.ts")
    assert v1.card["files"] == {
        "model.ts": _sha(src / "model.ts"),
        "model_int8.ts": _sha(src / "model_int8.ts"),
        "transform.json": _sha(src / "transform.json"),
    }
    assert v1.card["code_version"].startswith("0.1.0")
    assert datetime.fromisoformat(v1.card["created_at"]).tzinfo is not None
    assert v1.card["dataset"] == "digits@abc"
    assert v1.card["params"] == {"lr": 0.01}
    assert v1.card["name"] == "mnist"
    assert v1.card["version"] == "v1"
    assert v1.metrics == {"accuracy": 0.9}
    assert store.list("models/mnist/versions/v1") == [
        "models/mnist/versions/v1/card.json",
        "models/mnist/versions/v1/claim.json",
        "models/mnist/versions/v1/model.ts",
        "models/mnist/versions/v1/model_int8.ts",
        "models/mnist/versions/v1/transform.json",
    ]
    v2 = registry.register(store, "mnist", _model_dir(tmp_path / "m2", "b"), card={})
    assert v2.version == "v2"
    assert v2.card["checksum"] != v1.card["checksum"]
    assert [m.version for m in registry.list_versions(store, "mnist")] == ["v1", "v2"]
    assert registry.list_models(store) == ["mnist"]
    assert registry.get_alias(store, "mnist", "champion") is None


def test_version_numbers_sort_numerically(store: Store, tmp_path: Path) -> None:
    for i in range(11):
        src = _model_dir(tmp_path / f"m{i}", f"model-{i}")
        last = registry.register(store, "m", src, card={"code_version": "fixed"})
    assert last.version == "v11"
    assert last.card["code_version"] == "fixed"
    versions = [m.version for m in registry.list_versions(store, "m")]
    assert versions == [f"v{i}" for i in range(1, 12)]


def test_register_needs_model_ts(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "model.pt").write_bytes(b"weights")
    with pytest.raises(DatawheelError, match=r"has no model\.ts"):
        registry.register(store, "m", src, card={})
    assert store.list("models") == []


def test_same_model_registers_once(store: Store, tmp_path: Path) -> None:
    """Registering is keyed by model.ts's checksum: a retried step gets the same version."""
    src = _model_dir(tmp_path / "m")
    first = registry.register(store, "m", src, card={"note": "first"})
    again = registry.register(store, "m", src, card={"note": "retry"})
    assert again.version == first.version == "v1"
    assert again.card["note"] == "first"
    assert [m.version for m in registry.list_versions(store, "m")] == ["v1"]
    other = registry.register(store, "m", _model_dir(tmp_path / "n", "other"), card={})
    assert other.version == "v2"


def _three_versions(store: Store, tmp_path: Path) -> None:
    for tag in ("a", "b", "c"):
        registry.register(store, "m", _model_dir(tmp_path / tag, tag), card={"note": tag})


def test_promote_and_rollback(store: Store, tmp_path: Path) -> None:
    _three_versions(store, tmp_path)
    registry.promote(store, "m", "v1")
    assert registry.resolve(store, "m").version == "v1"
    record = registry.promote(store, "m", "v2", reason="better")
    assert record["version"] == "v2"
    assert record["history"] == ["v1"]
    assert record["reason"] == "better"
    assert registry.get_alias(store, "m", "champion") == record
    registry.promote(store, "m", "v3")
    registry.promote(store, "m", "v3")  # no-op for the history
    alias = registry.get_alias(store, "m", "champion")
    assert alias is not None
    assert alias["version"] == "v3"
    assert alias["history"] == ["v1", "v2"]
    # Only the alias object changed: one key per alias.
    assert store.list("models/m/aliases") == ["models/m/aliases/champion.json"]

    back = registry.rollback(store, "m")
    assert back["version"] == "v2"
    assert back["history"] == ["v1"]
    assert "rollback from v3" in back["reason"]
    assert registry.resolve(store, "m", "champion").version == "v2"
    assert registry.rollback(store, "m")["version"] == "v1"
    with pytest.raises(DatawheelError, match="no earlier version to roll back to"):
        registry.rollback(store, "m")
    assert registry.resolve(store, "m").version == "v1"


def test_rollback_without_alias(store: Store) -> None:
    with pytest.raises(DatawheelError, match="no earlier version"):
        registry.rollback(store, "m", alias="challenger")


def test_promote_missing_version(store: Store, tmp_path: Path) -> None:
    registry.register(store, "m", _model_dir(tmp_path / "m"), card={})
    with pytest.raises(DatawheelError, match="m:v7 is not in the registry"):
        registry.promote(store, "m", "v7")
    assert registry.get_alias(store, "m", "champion") is None


def test_resolve(store: Store, tmp_path: Path) -> None:
    registry.register(store, "m", _model_dir(tmp_path / "a", "a"), card={"note": "one"})
    registry.register(store, "m", _model_dir(tmp_path / "b", "b"), card={"note": "two"})
    registry.promote(store, "m", "v2", alias="challenger")
    assert registry.resolve(store, "m", "v1").card["note"] == "one"
    assert registry.resolve(store, "m", "challenger").card["note"] == "two"
    assert registry.resolve(store, "m", "challenger").version == "v2"
    with pytest.raises(DatawheelError, match="has no 'champion' alias"):
        registry.resolve(store, "m")
    with pytest.raises(DatawheelError, match="not in the registry"):
        registry.resolve(store, "m", "v9")


def test_parse_ref() -> None:
    assert registry.parse_ref("m@challenger") == ("m", "challenger")
    assert registry.parse_ref("m:v3") == ("m", "v3")
    assert registry.parse_ref("m") == ("m", "champion")


def test_fetch_roundtrip(store: Store, tmp_path: Path) -> None:
    src = _model_dir(tmp_path / "m")
    mv = registry.register(store, "m", src, card={})
    out = registry.fetch(store, mv, tmp_path / "dest")
    assert sorted(p.name for p in out.iterdir()) == ["model.ts", "model_int8.ts", "transform.json"]
    for name in ("model.ts", "model_int8.ts", "transform.json"):
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_fetch_detects_tampering(store: Store, tmp_path: Path) -> None:
    mv = registry.register(store, "m", _model_dir(tmp_path / "m"), card={})
    store.put_bytes("models/m/versions/v1/model.ts", b"evil bytes")
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError, match=r"file model\.ts does not match its checksum"):
        registry.fetch(store, mv, dest)
    assert not (dest / "model.ts").exists()
    assert all(p.read_bytes() != b"evil bytes" for p in dest.rglob("*") if p.is_file())
    # The card from the store (not the in-memory one) catches it too.
    with pytest.raises(ChecksumError):
        registry.fetch(store, registry.resolve(store, "m", "v1"), tmp_path / "dest2")


def test_failed_register_is_invisible_and_a_retry_completes_it(
    store: Store, tmp_path: Path
) -> None:
    registry.register(store, "m", _model_dir(tmp_path / "m"), card={})
    src = _model_dir(tmp_path / "n", "new")
    with pytest.raises(OSError, match="injected"):
        registry.register(FailingStore(store, "card.json"), "m", src, card={})
    assert [m.version for m in registry.list_versions(store, "m")] == ["v1"]
    with pytest.raises(DatawheelError, match="m:v2 is not in the registry"):
        registry.resolve(store, "m", "v2")
    retried = registry.register(store, "m", src, card={})
    assert retried.version == "v2"  # the retry resumed its own claim: no gap, no v3
    assert [m.version for m in registry.list_versions(store, "m")] == ["v1", "v2"]
    registry.fetch(store, retried, tmp_path / "dest")


@pytest.mark.parametrize("name", ["MNIST", "-m", "a/b", "a b", "", "m" * 64, "../m"])
def test_invalid_model_names(store: Store, tmp_path: Path, name: str) -> None:
    with pytest.raises(DatawheelError, match="not valid"):
        registry.register(store, name, _model_dir(tmp_path / "m"), card={})
    assert store.list("models") == []
