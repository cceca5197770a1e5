"""Test accuracy on real tables: datawheel's MLP against scikit-learn on the same split.

For each table (palmerpenguins' penguins, vega_datasets' cars with ``Origin`` as the label),
the rows are loaded by datawheel's own loader (text, booleans and small integers become
categorical) and split by datawheel's content hash (split seed 0). Every model sees the
same train rows and is scored on the same test rows:

* ``datawheel mlp``: the pipeline's transform and training loop (validation rows for early
  stopping), categories one-hot or embedded inside the network;
* ``sklearn hgb``: HistGradientBoostingClassifier with native categorical support;
* ``sklearn logreg``: LogisticRegression on one-hot categories and standardized, imputed
  numbers (scikit-learn's own pipeline).

Prints accuracy and macro F1 per table and model, repeated over ``--seeds`` training seeds
(mean and range), plus the table's rows and categorical columns. Nothing is timed.

    .venv/bin/python benchmarks/tabular_bench.py --seeds 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _tables(tmp: Path) -> dict[str, tuple[str, str]]:
    import palmerpenguins
    from vega_datasets import data as vega

    cars = vega.cars().drop(columns=["Name"])
    cars["Year"] = cars["Year"].dt.year
    cars.to_csv(tmp / "cars.csv", index=False)
    penguins = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    return {"penguins": (str(penguins), "species"), "cars": (str(tmp / "cars.csv"), "Origin")}


def _scores(y: np.ndarray, pred: np.ndarray, n: int) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    acc = float(np.mean(y == pred))
    return acc, float(f1_score(y, pred, labels=list(range(n)), average="macro", zero_division=0))


def _datawheel(plan: Any, seed: int) -> np.ndarray:
    import torch

    from datawheel.training.loop import TrainConfig, fit

    splits = plan.splits()
    tf = splits.transform
    config = TrainConfig(model_kind="mlp", epochs=60, batch_size=32, lr=1e-2, seed=seed)
    result = fit(
        tf.apply(splits.x_train), splits.y_train, tf.apply(splits.x_val), splits.y_val,
        n_classes=len(tf.classes), image_shape=None, config=config, log=lambda _: None,
        categorical=tf.cardinalities(),
    )  # fmt: skip
    with torch.inference_mode():
        logits = result.model(torch.from_numpy(tf.apply(splits.x_test)))
    return np.asarray(logits.argmax(1).numpy())


def _sklearn(kind: str, frame: pd.DataFrame, plan: Any, seed: int) -> np.ndarray:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = list(plan.categories)
    nums = [f for f in plan.features if f not in plan.categories]
    x = frame[plan.features].copy()
    for c in cats:
        x[c] = x[c].astype(object).where(x[c].notna(), "__missing__")
    train, test = plan.assignment == 0, plan.assignment == 2
    if kind == "hgb":
        for c in cats:
            x[c] = x[c].astype("category")
        model: Any = HistGradientBoostingClassifier(
            categorical_features="from_dtype", random_state=seed
        )
    else:
        prep = ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), nums),
            ]
        )
        model = make_pipeline(prep, LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(x[train], plan.y[train])
    return np.asarray(model.predict(x[test]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per model")
    args = parser.parse_args()

    from datawheel.data.sources import load_source
    from datawheel.data.split import plan_split

    print(f"{'table':<10} {'rows':>5} {'model':<16} {'accuracy':>18} {'macro F1':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        for table, (source, label) in _tables(Path(tmp)).items():
            loaded = load_source(source, label=label)
            frame = loaded.frame
            features = [c for c in frame.columns if c != label]
            classes = sorted(frame[label].unique())
            plan = plan_split(frame, label=label, features=features, classes=classes)
            y_test = plan.y[plan.assignment == 2]
            runs: dict[str, list[tuple[float, float]]] = {}
            for seed in range(args.seeds):
                preds = {
                    "datawheel mlp": _datawheel(plan, seed),
                    "sklearn hgb": _sklearn("hgb", frame, plan, seed),
                    "sklearn logreg": _sklearn("logreg", frame, plan, seed),
                }
                for name, pred in preds.items():
                    runs.setdefault(name, []).append(_scores(y_test, pred, len(classes)))
            for name, got in runs.items():
                acc, f1 = np.asarray(got).T
                print(
                    f"{table:<10} {len(frame):>5} {name:<16} "
                    f"{acc.mean():.4f} [{acc.min():.3f},{acc.max():.3f}] "
                    f"{f1.mean():.4f} [{f1.min():.3f},{f1.max():.3f}]"
                )
            print(f"{'':<10} test rows {len(y_test)}; categorical: {', '.join(loaded.categorical)}")


if __name__ == "__main__":
    main()
