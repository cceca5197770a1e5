"""Hostile names and corrupt records: a default dataset name that would be lossy or shared is
refused with a fix, and a corrupt card.json or manifest.json is one line naming the object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import main_cli as _cli

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.data.gate import admit
from datawheel.errors import DatawheelError
from datawheel.storage import LocalStore


def _error_line(code: int, err: str) -> str:
    assert code != 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and ". Fix: " in line and "Traceback" not in err
    return line


def _table(path: Path, rows: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["label"] = np.where(x[:, 0] > 0, "yes", "no")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("ÜNÏ çødé.csv", "uni-code"),
        ("Straße Æble.parquet", "strasse-aeble"),
        ("/data/My.Table.v2.csv", "my.table.v2"),
        ("/data/x.csv.gz", "x"),
        ("https://user:SECRET@host/t/penguins.csv?token=SECRET", "penguins"),
        ("/images/cats/", "cats"),
        ("digits", "digits"),
        ("/data/digits.csv", "digits"),
    ],
)
def test_default_names_transliterate(source: str, name: str) -> None:
    assert ds.default_name(source) == name


@pytest.mark.parametrize(
    "source", ["..csv", "---.csv", "数据.csv", "/x/_.csv", "https://h/---.csv?x=1"]
)
def test_a_default_name_with_nothing_usable_is_refused(source: str) -> None:
    with pytest.raises(DatawheelError) as info:
        ds.default_name(source)
    assert "--param dataset_name=NAME" in str(info.value) and "--name NAME" in str(info.value)


def test_ingest_names_and_refuses_names_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"file://{tmp_path / 'store'}"
    code, out, err = _cli(capsys, "datasets", "ingest", str(_table(tmp_path / "ÜNÏ çødé.csv")),
                          "--store", store)  # fmt: skip
    assert code == 0, err
    assert out.startswith("uni-code@")
    for i, bad in enumerate(["..csv", "---.csv"]):
        source = _table(tmp_path / f"d{i}" / bad, seed=i + 1)
        line = _error_line(*_cli(capsys, "datasets", "ingest", str(source), "--store", store)[::2])
        assert f"cannot make a dataset name out of {bad!r}" in line
        assert "--name NAME" in line
        code, out, err = _cli(capsys, "datasets", "ingest", str(source), "--store", store,
                              "--name", f"named{i}")  # fmt: skip
        assert code == 0 and out.startswith(f"named{i}@"), err
    assert ds.list_datasets(LocalStore(tmp_path / "store")) == ["named0", "named1", "uni-code"]


@pytest.mark.parametrize("garbage", [b'{"trunc', b"\xff\xfe", b"[]", b'{"rows": 3}'])
def test_a_corrupt_manifest_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], garbage: bytes
) -> None:
    st = LocalStore(tmp_path / "store")
    candidate = ds.ingest(st, str(_table(tmp_path / "t.csv")), name="t")
    dv = admit(st, candidate.name, candidate.version).version
    key = f"datasets/t/versions/{dv.version}/manifest.json"
    (st.root / key).write_bytes(garbage)
    for args in (("datasets", "list"), ("datasets", "show", "t"), ("datasets", "list", "--json")):
        line = _error_line(*_cli(capsys, *args, "--store", st.uri)[::2])
        assert f"the stored manifest {st.uri}/{key} is not" in line, line
        assert f"delete the folder datasets/t/versions/{dv.version} and ingest" in line, line
    with pytest.raises(DatawheelError, match="the stored manifest"):
        ds.ingest(st, str(_table(tmp_path / "t.csv")), name="t")  # the same content again


@pytest.mark.parametrize("garbage", [b'{"trunc', b"", b'{"version": "v1"}', b"null"])
def test_a_corrupt_card_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], garbage: bytes
) -> None:
    st = LocalStore(tmp_path / "store")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.ts").write_bytes(b"not really torchscript")
    registry.register(st, "m", model, card={})
    registry.promote(st, "m", "v1")
    key = "models/m/versions/v1/card.json"
    (st.root / key).write_bytes(garbage)
    commands = [
        ("models", "list"),
        ("models", "list", "m"),
        ("models", "show", "m"),
        ("models", "list", "--json"),
        ("models", "promote", "m", "v1"),
    ]
    for args in commands:
        line = _error_line(*_cli(capsys, *args, "--store", st.uri)[::2])
        assert f"{st.uri}/{key}" in line, (args, line)
        assert "from a backup, or delete the folder models/m/versions/v1" in line, line
