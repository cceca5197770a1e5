"""Categorical features from ingest to harvest: typing, the manifest, validation, the split
hash, codes, the network's encoder (TorchScript), the champion's recoding, and a harvest of
served codes back into text rows."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from harvest_support import DAY, Ledger

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.data.categorical import (
    MAX_INT_CATEGORIES,
    decode_column,
    encode_column,
    fit_categories,
    recode_column,
)
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded, load_source
from datawheel.data.split import frame_hashes, plan_split, row_hashes
from datawheel.data.transform import Transform
from datawheel.data.validation import validate
from datawheel.errors import DatawheelError
from datawheel.flywheel.harvest import harvest
from datawheel.storage import LocalStore
from datawheel.training.encoder import ONE_HOT_MAX, CategoricalEncoder, embedding_dim
from datawheel.training.networks import build_model

CLASSES = ["a", "b", "c"]


def _frame(
    n: int = 120, seed: int = 0, colours: tuple[str, ...] = ("red", "green")
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n).round(3),
            "colour": rng.choice(list(colours), n),
            "flag": rng.random(n) < 0.5,
            "doors": rng.choice([2, 4], n),  # a low-cardinality integer
            "count": np.arange(n),  # an integer with many values: a number
            "label": [CLASSES[i % 3] for i in range(n)],
        }
    )


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "t.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_ingest_types_text_bool_and_small_ints_as_categorical(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[[3, 7], "colour"] = None
    loaded = load_source(_csv(tmp_path, frame))
    assert loaded.categorical == ("colour", "flag", "doors")
    assert loaded.frame["flag"].iloc[0] in ("True", "False")
    assert set(loaded.frame["doors"].dropna()) == {"2", "4"}
    assert loaded.frame["count"].dtype == np.float32
    dv = ds.ingest_frame(LocalStore(tmp_path / "s"), loaded, name="t")
    kinds = {f["name"]: f["kind"] for f in dv.manifest["schema"]["features"]}
    assert kinds == {
        "x": "numeric",
        "colour": "categorical",
        "flag": "categorical",
        "doors": "categorical",
        "count": "numeric",
    }
    stats = dv.manifest["stats"]["colour"]
    counts = frame["colour"].value_counts()
    assert stats["categories"] == {
        c: int(counts[c]) for c in sorted(counts.index, key=lambda c: (-counts[c], c))
    }
    assert stats["missing"] == 2 and stats["distinct"] == 2
    # the version validates (missing categories are a warning: they code as "other")
    report = validate(dv, None)
    assert report.ok, report.summary()
    assert [(a.check, a.column, a.hard) for a in report.anomalies] == [("missing", "colour", False)]


def test_an_integer_column_with_many_values_or_few_rows_stays_numeric(tmp_path: Path) -> None:
    few = pd.DataFrame({"k": [1, 2, 3, 1], "label": ["a", "b", "a", "b"]})
    assert load_source(_csv(tmp_path, few)).categorical == ()
    many = pd.DataFrame({"k": np.arange(200) % (MAX_INT_CATEGORIES + 1), "label": ["a", "b"] * 100})
    assert load_source(_csv(tmp_path, many, "m.csv")).categorical == ()


def test_duplicate_column_names_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("f0,f1,f0,label,f1\n1,2,3,a,5\n")
    with pytest.raises(DatawheelError, match=r"more than one column named f0, f1") as info:
        load_source(str(path))
    assert "own name" in info.value.fix


def test_a_missing_label_column_lists_every_column_or_the_first_and_how_many_more(
    tmp_path: Path,
) -> None:
    frame = pd.DataFrame({f"c{i}": [1.0] for i in range(12)})
    with pytest.raises(DatawheelError, match=r"c0, c1, c2, c3, c4, c5, c6, c7 and 4 more"):
        load_source(_csv(tmp_path, frame))


def test_codes_round_trip_and_other_is_zero() -> None:
    cats = fit_categories(pd.DataFrame({"c": ["b", "a", "b", None, "c", "b", "a"]}), ["c"])["c"]
    assert cats == ["b", "a", "c"]  # most frequent first, ties by name
    codes = encode_column(["a", "b", None, "zebra", True, 3], cats)
    assert codes.tolist() == [2.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert decode_column(codes, cats) == ["a", "b", None, None, None, None]
    assert decode_column(np.array([np.nan, 7.0, 1.5, -1.0]), cats) == [None] * 4
    # codes under one vocabulary moved into another: unknown ones become "other"
    moved = recode_column(np.array([0.0, 1.0, 2.0, 3.0, 9.0]), ["b", "a", "c"], ["a", "b"])
    assert moved.tolist() == [0.0, 2.0, 1.0, 0.0, 0.0]


def test_split_hashes_depend_on_text_never_on_codes() -> None:
    frame = _frame(200)
    for c in ("colour", "doors"):
        frame[c] = frame[c].astype(str).astype(object)
    cat = ["colour", "doors"]
    feats = ["x", "colour", "doors"]
    base = frame_hashes(frame, feats, cat)
    # more rows, with a category never seen before, move no existing row
    extra = pd.concat([frame, _frame(50, seed=9, colours=("violet",))], ignore_index=True)
    extra["doors"] = extra["doors"].astype(str).astype(object)
    assert np.array_equal(frame_hashes(extra, feats, cat)[:200], base)
    # a numeric-only frame hashes exactly as before categorical support
    assert np.array_equal(frame_hashes(frame, ["x"], []), row_hashes(frame[["x"]].to_numpy()))
    plan = plan_split(frame, label="label", features=feats, classes=CLASSES)
    train = plan.assignment == 0
    assert set(plan.categories) == set(cat)
    assert set(plan.categories["colour"]) == set(frame.loc[train, "colour"])  # fitted on train
    splits = plan.splits()
    tf = splits.transform
    assert tf.mean[1:] == [0.0, 0.0] and tf.std[1:] == [1.0, 1.0]
    assert tf.low is not None and tf.low[0] == pytest.approx(frame.loc[train, "x"].min())
    assert tf.cardinalities() == {1: len(tf.categories["colour"]), 2: 2}
    # encode_frame is the split's own coding, and decode_frame inverts it
    assert np.array_equal(tf.encode_frame(frame), plan.x)
    back = tf.decode_frame(plan.x)
    assert back["colour"].tolist() == frame["colour"].tolist()
    schema = {f["name"]: f for f in tf.feature_schema()}
    assert schema["colour"]["type"] == "categorical" and schema["x"]["type"] == "numeric"


def test_unseen_categories_are_a_warning_with_counts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    first = ds.ingest_frame(store, load_source(_csv(tmp_path, _frame())), name="t")
    assert admit(store, "t", first.version).outcome == "committed"
    newer = _frame(120, seed=0, colours=("red", "green", "violet"))  # same numbers
    second = ds.ingest_frame(store, load_source(_csv(tmp_path, newer, "n.csv")), name="t")
    report = validate(second, ds.get_version(store, "t"))
    assert report.ok, report.summary()
    found = [a for a in report.anomalies if a.check == "categories"]
    violet = int((newer["colour"] == "violet").sum())
    assert [(a.column, a.hard) for a in found] == [("colour", False)]
    assert f"'violet' ({violet})" in found[0].detail


def test_encoder_one_hot_up_to_the_cap_and_embeddings_above_it_and_scripts() -> None:
    enc = CategoricalEncoder(3, {1: 3, 2: ONE_HOT_MAX + 4})
    assert enc.width == 1 + 4 + embedding_dim(ONE_HOT_MAX + 4)
    x = torch.tensor([[0.5, 2.0, 1.0], [1.5, 0.0, 7.0], [2.0, 9.0, -3.0], [1.0, 1.5, 0.0]])
    out = enc(x)
    assert out.shape == (4, enc.width)
    assert out[0, :5].tolist() == [0.5, 0.0, 0.0, 1.0, 0.0]
    assert out[2, 1:5].tolist() == [1.0, 0.0, 0.0, 0.0]  # 9 is no code of a 3-category column
    assert out[3, 1:5].tolist() == [1.0, 0.0, 0.0, 0.0]  # nor is 1.5
    emb = out[:, 5:]
    assert torch.equal(emb[2], emb[3])  # -3 is "other", as 0 is
    scripted = torch.jit.script(enc)
    assert torch.equal(scripted(x), out)
    net = build_model("mlp", 3, 3, None, hidden=8, categorical={1: 3, 2: ONE_HOT_MAX + 4}).eval()
    assert torch.equal(torch.jit.script(net)(x), net(x))
    with pytest.raises(DatawheelError, match="categorical"):
        build_model("cnn", 64, 3, (1, 8, 8), categorical={0: 2})


def test_champion_scores_rows_recoded_into_its_own_categories() -> None:
    challenger = Transform(["c"], CLASSES, [0.0], [1.0], categories={"c": ["b", "a"]})
    champion = Transform(["c"], CLASSES, [0.0], [1.0], categories={"c": ["a", "c", "b"]})
    rows = np.array([[0.0], [1.0], [2.0]], np.float32)
    assert challenger.recode(rows, champion)[:, 0].tolist() == [0.0, 3.0, 1.0]


def _register(store: LocalStore, tmp: Path, categories: dict[str, list[str]]) -> str:
    folder = tmp / f"model-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / "model.ts").write_bytes(os.urandom(32))
    Transform(["x", "colour"], CLASSES, [0.0, 0.0], [1.0, 1.0], categories=categories).save(
        folder / "transform.json"
    )
    latest = ds.latest_version(store, "toy")
    card = {"dataset": "toy", "dataset_version": latest.version if latest else ""}
    return registry.register(store, "toy", folder, card=card).version


def test_harvest_turns_served_codes_back_into_categories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    frame = _frame(60)[["x", "colour", "label"]]
    frame["colour"] = frame["colour"].astype(object)
    loaded = Loaded(frame, "label", "test:toy", None, ("colour",))
    parent = ds.ingest_frame(store, loaded, name="toy")
    assert admit(store, "toy", parent.version).outcome == "committed"
    # v1 knew red and green; v2 also blue, in another order
    v1 = _register(store, tmp_path, {"colour": ["red", "green"]})
    v2 = _register(store, tmp_path, {"colour": ["blue", "green", "red"]})
    registry.promote(store, "toy", v2, alias="champion")
    ledger = Ledger(store)
    rows1 = np.array([[0.5, 1.0], [0.25, 2.0], [0.75, 0.0]])  # red, green, other (missing)
    rows2 = np.array([[0.125, 1.0], [0.375, 3.0]])  # blue, red
    p1 = ledger.predict(rows1, ["a", "b", "c"], version=v1)
    p2 = ledger.predict(rows2, ["a", "b"], version=v2, ts=DAY + 1)
    ledger.label(p1 + p2, ["b", "b", "c", "a", "c"], ["a", "b", "c", "a", "b"], version=v2)
    result = harvest(store, "toy", reason="categorical")
    assert result.created, result.message
    out = ds.read_frame(store, ds.get_version(store, "toy"))
    added = out.iloc[60:]
    assert added["x"].tolist() == [0.5, 0.25, 0.75, 0.125, 0.375]
    assert [None if pd.isna(v) else v for v in added["colour"]] == [
        "red",
        "green",
        None,
        "blue",
        "red",
    ]
    assert added["label"].tolist() == ["b", "b", "c", "a", "c"]
    assert out.iloc[:60]["colour"].tolist() == frame["colour"].tolist()
