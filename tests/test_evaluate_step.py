"""evaluate_step against a real LocalStore registry with real tiny exported models.

The challenger is trained on three well separated blobs. Champions are built from it by
hand (permuted input columns, permuted, extra or fewer classes, a constant predictor), so
each test knows exactly what the champion must score.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datawheel import registry
from datawheel.data.split import Splits, write_splits
from datawheel.data.transform import Transform, fit_transform
from datawheel.evaluation import input_mismatch
from datawheel.orchestration.evaluate import evaluate_step
from datawheel.storage import LocalStore
from datawheel.training.export import export_model, load_exported
from datawheel.training.loop import TrainConfig, fit
from datawheel.training.networks import Classifier, build_model

FEATURES = ["f0", "f1", "f2", "f3", "f4"]
CLASSES = ["a", "b", "c"]
NAME = "blobs"


class Sink:
    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def log_metric(self, metric: str, value: float) -> None:
        self.logged[metric] = value


def blobs(n: int, seed: int, n_features: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs, close enough that a good model still errs on a few rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.zeros((3, n_features), np.float32)
    for k in range(3):
        centers[k, k % n_features] = 2.0
    x = centers[y] + rng.normal(0, 0.8, (n, n_features)).astype(np.float32)
    return (x * 10 + 50).astype(np.float32), y.astype(np.int64)  # raw: not standardized


@functools.cache
def _data() -> tuple[Splits, Classifier]:
    """The splits (train/val/test blobs) and a challenger trained on them."""
    x_train, y_train = blobs(900, seed=1)
    x_val, y_val = blobs(300, seed=2)
    x_test, y_test = blobs(600, seed=3)
    tf = fit_transform(x_train, FEATURES, CLASSES)
    splits = Splits(x_train, y_train, x_val, y_val, x_test, y_test, tf)
    result = fit(
        tf.apply(x_train),
        y_train,
        tf.apply(x_val),
        y_val,
        n_classes=3,
        image_shape=None,
        config=TrainConfig(epochs=8, hidden=16, patience=0),
        log=lambda _: None,
    )
    return splits, result.model.eval()


def export_dir(model: Classifier, tf: Transform, out: Path) -> Path:
    """What the train step leaves: model.ts, model.onnx, model_int8.onnx, model.pt, transform."""
    export_model(
        model, mean=np.asarray(tf.mean, np.float32), std=np.asarray(tf.std, np.float32), out_dir=out
    )
    tf.save(out / "transform.json")
    (out / "train.json").write_text(json.dumps({"history": []}))
    return out


def register_champion(store: LocalStore, model_dir: Path) -> str:
    mv = registry.register(store, NAME, model_dir, card={"metrics": {}})
    registry.promote(store, NAME, mv.version, reason="test champion")
    return mv.version


def permuted(
    model: Classifier, tf: Transform, features: list[str], classes: list[str]
) -> tuple[Classifier, Transform]:
    """The same network taking ``features`` in that order and answering ``classes``.

    A class the original does not know gets a logit that never wins; a class left out
    of ``classes`` is simply never predicted.
    """
    net = copy.deepcopy(model)
    cols = [tf.features.index(f) for f in features]
    first = net.backbone[0]
    assert isinstance(first, torch.nn.Linear)
    head = net.head
    with torch.no_grad():
        first.weight.copy_(first.weight[:, cols])
        rows = [tf.classes.index(c) if c in tf.classes else -1 for c in classes]
        weight = torch.stack(
            [head.weight[r] if r >= 0 else torch.zeros_like(head.weight[0]) for r in rows]
        )
        bias = torch.stack([head.bias[r] if r >= 0 else torch.tensor(-1e4) for r in rows])
    net.head = torch.nn.Linear(head.in_features, len(classes))
    with torch.no_grad():
        net.head.weight.copy_(weight)
        net.head.bias.copy_(bias)
    mean = [tf.mean[c] for c in cols]
    std = [tf.std[c] for c in cols]
    return net.eval(), Transform(features, classes, mean, std, tf.image_shape)


def constant(tf: Transform, label: str) -> Classifier:
    """A model that always answers ``label``."""
    net = build_model("mlp", tf.n_features, len(tf.classes), None, hidden=4)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(0.0)
        net.head.bias[tf.classes.index(label)] = 1.0
    return net.eval()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    splits, model = _data()
    write_splits(splits, tmp_path / "splits")
    export_dir(model, splits.transform, tmp_path / "challenger")
    return {
        "tmp": tmp_path,
        "store": LocalStore(tmp_path / "store"),
        "splits": splits,
        "model": model,
    }


def run_step(env: dict[str, Any], margin: float = 0.0) -> dict[str, Any]:
    tmp: Path = env["tmp"]
    result = evaluate_step(
        env["store"].uri,
        NAME,
        "blobs-data",
        str(tmp / "splits"),
        str(tmp / "challenger"),
        margin,
        str(tmp / "report.md"),
        Sink(),
        seed=0,
    )
    assert isinstance(result, dict)
    return result


def challenger_accuracy(env: dict[str, Any]) -> float:
    splits: Splits = env["splits"]
    with torch.no_grad():
        logits = load_exported(env["tmp"] / "challenger" / "model.ts")(
            torch.from_numpy(splits.x_test)
        )
    return float((logits.argmax(1).numpy() == splits.y_test).mean())


def champion_from(env: dict[str, Any], net: Classifier, tf: Transform, name: str) -> str:
    return register_champion(env["store"], export_dir(net, tf, env["tmp"] / name))


def test_no_champion_promotes(env: dict[str, Any]) -> None:
    ev = run_step(env)
    assert ev["decision"] == "promote"
    assert "no champion yet" in ev["reason"]
    assert ev["champion_version"] is None
    assert ev["metrics"]["accuracy"] == pytest.approx(challenger_accuracy(env))
    assert ev["metrics"]["accuracy"] > 0.8
    assert 0.75 < ev["extra"]["int8_accuracy"] <= 1


def test_clearly_better_challenger_promotes_against_the_real_champion(
    env: dict[str, Any],
) -> None:
    tf = env["splits"].transform
    version = champion_from(env, constant(tf, "a"), tf, "champ")
    ev = run_step(env)
    assert ev["decision"] == "promote"
    assert ev["champion_version"] == version == "v1"
    share_a = float(np.mean(env["splits"].y_test == 0))
    assert ev["champion_accuracy"] == pytest.approx(share_a)
    assert ev["ci_low"] > 0.0
    assert "one-sided 97.5% test" in ev["reason"]
    assert "two-sided 95% bootstrap interval" in ev["reason"]
    report = (env["tmp"] / "report.md").read_text()
    assert "Champion `v1` accuracy" in report and "one-sided 97.5% test" in report
    # the register step's conditional promote accepts the version the evaluation saw
    mv = registry.register(env["store"], NAME, env["tmp"] / "challenger", card={})
    registry.promote(env["store"], NAME, mv.version, expect=ev["champion_version"])
    assert registry.resolve(env["store"], NAME).version == mv.version


def test_same_model_with_columns_in_another_order_is_scored(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    net, champ_tf = permuted(env["model"], tf, ["f3", "f0", "f4", "f1", "f2"], CLASSES)
    version = champion_from(env, net, champ_tf, "champ")
    ev = run_step(env)
    # the champion is the challenger's network under another column order: if the columns
    # were not reordered for it, it would score far lower than the challenger
    assert ev["champion_version"] == version
    assert ev["champion_accuracy"] == pytest.approx(challenger_accuracy(env))
    assert ev["diff"] == 0.0
    assert ev["decision"] == "reject"
    assert "not shown better" in ev["reason"]


def test_champion_with_classes_in_another_order_and_an_extra_class_is_scored(
    env: dict[str, Any],
) -> None:
    tf = env["splits"].transform
    net, champ_tf = permuted(env["model"], tf, FEATURES, ["c", "z", "a", "b"])
    champion_from(env, net, champ_tf, "champ")
    ev = run_step(env)
    # labels are compared as strings: same answers, same accuracy, never "z"
    assert ev["champion_accuracy"] == pytest.approx(challenger_accuracy(env))
    assert ev["diff"] == 0.0 and ev["decision"] == "reject"


def test_champion_that_never_knew_a_class_is_wrong_on_its_rows(env: dict[str, Any]) -> None:
    splits: Splits = env["splits"]
    net, champ_tf = permuted(env["model"], splits.transform, FEATURES, ["b", "a"])
    version = champion_from(env, net, champ_tf, "champ")
    with torch.no_grad():
        logits = load_exported(env["tmp"] / "challenger" / "model.ts")(
            torch.from_numpy(splits.x_test)
        ).numpy()
    y = splits.y_test
    expected = np.where(y == 2, False, logits[:, :2].argmax(1) == y)  # wrong on every "c"
    ev = run_step(env)
    assert ev["champion_version"] == version
    assert ev["champion_accuracy"] == pytest.approx(float(expected.mean()))
    assert ev["decision"] == "promote"  # about a third of the rows it cannot get right


def test_champion_on_other_features_rejects_naming_them(env: dict[str, Any]) -> None:
    x, _ = blobs(400, seed=9)
    other = ["f0", "f1", "f2", "f3", "g"]
    champ_tf = fit_transform(x, other, CLASSES)
    version = champion_from(env, build_model("mlp", 5, 3, None, hidden=4), champ_tf, "champ")
    ev = run_step(env)
    assert ev["decision"] == "reject"
    assert ev["champion_version"] == version
    assert "no champion" not in ev["reason"]
    assert f"champion {version} takes features [f0, f1, f2, f3, g]" in ev["reason"]
    assert "the test split has [f0, f1, f2, f3, f4]: missing g" in ev["reason"]
    assert ev["champion_accuracy"] is None and ev["ci_low"] is None
    report = (env["tmp"] / "report.md").read_text()
    assert report.startswith("# Evaluation: REJECT") and "missing g" in report
    assert "Champion `v1` was not scored" in report


def test_champion_on_images_rejects_a_tabular_split(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    champ_tf = Transform(tf.features, tf.classes, tf.mean, tf.std, [1, 1, 5])
    version = champion_from(env, env["model"], champ_tf, "champ")
    ev = run_step(env)
    assert (ev["decision"], ev["champion_version"]) == ("reject", version)
    assert "takes images of shape 1x1x5 but the test split has tabular rows" in ev["reason"]


def test_input_mismatch_names_image_shapes_and_accepts_reordering() -> None:
    def tf(features: list[str], shape: list[int] | None) -> Transform:
        n = len(features)
        return Transform(features, CLASSES, [0.0] * n, [1.0] * n, shape)

    pixels = [f"p{i}" for i in range(64)]
    got = input_mismatch("v3", tf(pixels, [1, 8, 8]), tf(pixels, [1, 4, 16]))
    assert got.startswith("champion v3 takes images of shape 1x8x8 but the test split has")
    assert "images of shape 1x4x16" in got
    assert input_mismatch("v3", tf(pixels[::-1], [1, 8, 8]), tf(pixels, [1, 8, 8])) == ""
    long = input_mismatch("v3", tf(pixels, None), tf([*pixels[:63], "q"], None))
    assert "... 64 in all]" in long and long.endswith("missing p63")
    assert input_mismatch("v3", tf(pixels[:10], None), tf(pixels, None)) == ""  # a subset
    assert input_mismatch("v3", tf(["a", "a"], None), tf(["a", "b"], None)).endswith("repeat")


def test_champion_on_a_subset_of_the_features_is_scored_on_its_own_columns(
    env: dict[str, Any],
) -> None:
    """The challenger added features: the champion is scored on the ones it knows."""
    splits: Splits = env["splits"]
    keep = ["f2", "f0", "f1"]
    cols = [FEATURES.index(f) for f in keep]
    champ_tf = fit_transform(splits.x_train[:, cols], keep, CLASSES)
    result = fit(
        champ_tf.apply(splits.x_train[:, cols]),
        splits.y_train,
        champ_tf.apply(splits.x_val[:, cols]),
        splits.y_val,
        n_classes=3,
        image_shape=None,
        config=TrainConfig(epochs=4, hidden=8, patience=0),
        log=lambda _: None,
    )
    version = champion_from(env, result.model.eval(), champ_tf, "champ")
    with torch.no_grad():
        served = load_exported(env["tmp"] / "champ" / "model.ts")
        pred = served(torch.from_numpy(np.ascontiguousarray(splits.x_test[:, cols]))).argmax(1)
    ev = run_step(env)
    assert ev["champion_version"] == version
    assert ev["champion_accuracy"] == pytest.approx(float((pred.numpy() == splits.y_test).mean()))
    assert "cannot" not in ev["reason"] and "missing" not in ev["reason"]


def test_champion_failing_its_checksum_rejects(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    version = champion_from(env, constant(tf, "a"), tf, "champ")
    stored = env["store"].root / f"models/{NAME}/versions/{version}/model.ts"
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    ev = run_step(env)
    assert (ev["decision"], ev["champion_version"]) == ("reject", version)
    assert "model.ts does not match its checksum" in ev["reason"]
    assert "no champion" not in ev["reason"]


def test_champion_that_cannot_be_loaded_rejects(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    broken = export_dir(constant(tf, "a"), tf, env["tmp"] / "champ")
    (broken / "model.ts").write_bytes(b"not a TorchScript file")  # registered like this
    version = register_champion(env["store"], broken)
    ev = run_step(env)
    assert (ev["decision"], ev["champion_version"]) == ("reject", version)
    assert "is not a TorchScript model" in ev["reason"]


def test_champion_without_a_transform_rejects(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    champ = export_dir(constant(tf, "a"), tf, env["tmp"] / "champ")
    (champ / "transform.json").unlink()
    version = register_champion(env["store"], champ)
    ev = run_step(env)
    assert (ev["decision"], ev["champion_version"]) == ("reject", version)
    assert f"champion {version} was registered without transform.json" in ev["reason"]


def test_champion_whose_outputs_do_not_match_its_classes_rejects(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    four = Transform(tf.features, [*tf.classes, "d"], tf.mean, tf.std)  # the model answers 3
    version = champion_from(env, constant(tf, "a"), four, "champ")
    ev = run_step(env)
    assert (ev["decision"], ev["champion_version"]) == ("reject", version)
    assert re.search(r"fails on the test rows: .*logits of shape \(\d+, 3\)", ev["reason"])


def test_corrupt_champion_alias_rejects(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    champion_from(env, constant(tf, "a"), tf, "champ")
    (env["store"].root / f"models/{NAME}/aliases/champion.json").write_text("{not json")
    ev = run_step(env)
    assert ev["decision"] == "reject"
    assert "cannot show the challenger is better than the champion" in ev["reason"]
    assert "no champion" not in ev["reason"]


def test_challenger_that_does_not_fit_its_splits_is_a_user_error(env: dict[str, Any]) -> None:
    tf = env["splits"].transform
    wide = Transform([*tf.features, "f5"], tf.classes, [*tf.mean, 0.0], [*tf.std, 1.0])
    export_dir(build_model("mlp", 6, 3, None, hidden=4), wide, env["tmp"] / "challenger")
    with pytest.raises(SystemExit):
        run_step(env)
