"""Real tables nobody here prepared, end to end: palmerpenguins' CSV (strings, a small-integer
year, missing numbers and categories) through `datawheel run --local` and a real server
answering tritonclient with raw values, and vega_datasets' cars (strings, a low-cardinality
integer, dates) trained twice on versions whose categories differ, the second scored against
the first on rows recoded into each model's own categories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import palmerpenguins
import pandas as pd
import pytest
import tritonclient.http as triton
from cli_helpers import run_json
from serving_support import ServerProcess, _Sink
from vega_datasets import data as vega

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.data.split import TEST, load_splits, plan_split
from datawheel.data.transform import Transform
from datawheel.evaluation.champion import score_champion
from datawheel.orchestration.ingest import ingest_step
from datawheel.orchestration.prep import prep_step
from datawheel.orchestration.register import register_step
from datawheel.orchestration.train import train_step
from datawheel.orchestration.validate import validate_step
from datawheel.storage import LocalStore, open_store
from datawheel.training.export import load_exported
from datawheel.training.onnx_export import onnx_logits, onnx_session
from datawheel.training.variant_table import VARIANTS

PENGUINS = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"  # in site-packages


def _infer_inputs(frame: pd.DataFrame, categorical: set[str]) -> list[triton.InferInput]:
    tensors = []
    for name in frame.columns:
        if name in categorical:
            values = np.asarray(["" if v is None else str(v) for v in frame[name]], object)
            t = triton.InferInput(name, [len(frame)], "BYTES")
        else:
            values = frame[name].to_numpy(np.float32)
            t = triton.InferInput(name, [len(frame)], "FP32")
        t.set_data_from_numpy(values, binary_data=True)
        tensors.append(t)
    return tensors


def test_penguins_train_and_serve_raw_values(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    result = run_json(
        "--store", store, "--param", f"source={PENGUINS}", "--param", "label=species",
        "--param", "epochs=40", cwd=tmp_path,
    )  # fmt: skip
    summary = result["summary"]
    assert result["status"] == "SUCCEEDED", result["error"]
    assert summary["metrics"]["test_accuracy"] >= 0.9
    st = open_store(store)
    dv = ds.get_version(st, "penguins")
    kinds = {f["name"]: f["kind"] for f in dv.manifest["schema"]["features"]}
    assert [f for f, k in kinds.items() if k == "categorical"] == ["island", "sex", "year"]
    raw = pd.read_csv(PENGUINS)
    islands = dv.manifest["stats"]["island"]["categories"]
    assert islands == raw["island"].value_counts().to_dict()
    assert dv.manifest["stats"]["sex"]["missing"] == int(raw["sex"].isna().sum()) == 11
    assert dv.manifest["stats"]["bill_length_mm"]["missing"] == 2
    assert set(dv.manifest["stats"]["year"]["categories"]) == {"2007", "2008", "2009"}

    server = ServerProcess(store, tmp_path / "spool", model="penguins").start()
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        meta = client.get_model_metadata("penguins")
        inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
        assert inputs["island"] == "BYTES" and inputs["bill_length_mm"] == "FP32"
        rows = raw.drop(columns=["species"]).iloc[[0, 3, 8, 150, 300]].reset_index(drop=True)
        assert rows.isna().any().any()  # row 3 has missing numbers and sex
        rows["year"] = rows["year"].astype(str)
        rows["sex"] = rows["sex"].astype(object).where(rows["sex"].notna(), None)
        answer = client.infer("penguins", _infer_inputs(rows, {"island", "sex", "year"}))
        client.close()
    finally:
        server.stop()
    folder = Path(store.removeprefix("file://")) / "models/penguins/versions/v1"
    tf = Transform.load(folder / "transform.json")
    import torch

    # the server runs the variant the evaluate step chose (auto): compare with that very file
    served = VARIANTS[meta["parameters"]["variant"]]
    encoded = tf.encode_frame(rows[tf.features])
    if served.runtime == "onnxruntime":
        logits = torch.from_numpy(onnx_logits(onnx_session(folder / served.file), encoded))
    else:
        with torch.inference_mode():
            logits = load_exported(folder / served.file)(torch.from_numpy(encoded))
    expected = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(answer.as_numpy("probabilities"), expected, atol=1e-5)
    labels = [v.decode() for v in answer.as_numpy("label")]
    truth = raw["species"].iloc[[0, 3, 8, 150, 300]].tolist()
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 4


def _cars(tmp: Path, keep: pd.Series | None = None) -> Path:
    frame = vega.cars().drop(columns=["Name"])  # a per-car name would only be memorised
    frame["Year"] = frame["Year"].dt.year
    path = tmp / ("cars-all.csv" if keep is None else "cars-some.csv")
    (frame if keep is None else frame[keep]).to_csv(path, index=False)
    return path


def _train(uri: str, work: Path, csv: Path, tag: str, warm: str = "") -> tuple[str, str]:
    """ingest -> validate -> prep -> train; the dataset version and the model folder."""
    meta = work / f"{tag}.json"
    ingest_step(uri, str(csv), "cars", "Origin", 16, str(meta))
    version = json.loads(meta.read_text())["version"]
    validate_step(uri, "cars", version, str(work / f"{tag}-validation.md"))
    prep_step(uri, "cars", version, 0, str(work / f"{tag}-splits"))
    model = work / f"{tag}-model"
    train_step(
        str(work / f"{tag}-splits"), str(model), _Sink(), model_kind="mlp", epochs=40,
        batch_size=32, learning_rate=1e-2, seed=0, store=uri, warm_start_from=warm,
    )  # fmt: skip
    return version, str(model)


def test_cars_challenger_is_scored_against_a_champion_with_other_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.setdefault("DATAWHEEL_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    uri = f"file://{tmp_path / 'store'}"
    cars = vega.cars()
    first = _cars(tmp_path, cars["Cylinders"] != 6)  # no 6-cylinder cars yet
    v1, m1 = _train(uri, tmp_path, first, "v1")
    st = LocalStore(tmp_path / "store")
    schema = {
        f["name"]: f["kind"] for f in ds.get_version(st, "cars", v1).manifest["schema"]["features"]
    }
    assert schema["Cylinders"] == "categorical" and schema["Horsepower"] == "numeric"
    promote = json.dumps({"metrics": {}, "extra": {}, "decision": "promote", "reason": "first"})
    register_step(uri, "cars", m1, "cars", v1, promote, "challenger")
    registry.promote(st, "cars", "v1", alias="champion")
    capsys.readouterr()
    v2, m2 = _train(uri, tmp_path, _cars(tmp_path), "v2", warm="cars:champion")  # a new category
    # the champion's first layer reads other codes: fine-tuning it would misread them
    assert "trained on other features or categories" in capsys.readouterr().out
    assert json.loads((Path(m2) / "train.json").read_text())["warm_start_from"] == ""
    champ_cats = Transform.load(Path(m1) / "transform.json").categories["Cylinders"]
    new_cats = Transform.load(Path(m2) / "transform.json").categories["Cylinders"]
    assert "6" in new_cats and "6" not in champ_cats and new_cats != champ_cats
    # the champion scored on the challenger's test rows (codes in the challenger's categories)
    # equals the champion run on those raw rows encoded by its own transform
    splits = load_splits(tmp_path / "v2-splits")
    champ = score_champion(st, "cars", splits.x_test, splits.y_test, splits.transform)
    assert champ.problem in (None, ""), champ.problem
    dv2 = ds.get_version(st, "cars", v2)
    frame = ds.read_frame(st, dv2)
    plan = plan_split(frame, label="Origin", features=dv2.features, classes=dv2.classes)
    test = frame[plan.assignment == TEST]
    champ_tf = Transform.load(Path(m1) / "transform.json")
    import torch

    with torch.inference_mode():
        module = load_exported(Path(m1) / "model.ts")
        logits = module(torch.from_numpy(champ_tf.encode_frame(test)))
    own = [champ_tf.classes[i] for i in logits.argmax(1).tolist()]
    truth = test["Origin"].astype(str).tolist()
    correct = champ.correct
    assert correct is not None and len(own) == len(correct) > 50
    assert correct.tolist() == [a == b for a, b in zip(own, truth, strict=True)]
    assert correct.mean() >= 0.6
