"""The drift reference a served version is compared with, found (or rebuilt) at load.

A version exported by this code carries ``drift_reference.json`` (its training split
summarised by :func:`~datawheel.monitoring.baseline.build_reference`, with the model's
predicted classes on its test split), checksummed in the card like every other file.

A version exported before that has none. Then the reference is rebuilt from the version's
dataset (the card's ``dataset`` and ``dataset_version``) in the store: the rows are split
again with the default split seed (0), and the rebuilt training split is accepted only if
the transform fitted on it matches the version's ``transform.json`` (so it is the split
the model was trained on); the model's predictions on the rebuilt test split give the
prediction reference. If any of that fails, live drift is off for the version, with the
reason: nothing is exported for it, rather than gauges against a made-up reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datawheel.data.transform import Transform
from datawheel.monitoring.baseline import REFERENCE_FILE, DriftReference, build_reference
from datawheel.registry import ModelVersion
from datawheel.storage import Store

__all__ = ["REBUILD_SPLIT_SEED", "ServedReference", "served_reference"]

REBUILD_SPLIT_SEED = 0  # the pipeline's default split seed; the card does not record it


@dataclass(frozen=True)
class ServedReference:
    reference: DriftReference | None  # None: live drift is off for this version
    note: str  # where it came from, or why there is none (one line, for the log)


def _rebuild(
    store: Store,
    mv: ModelVersion,
    transform: Transform,
    predict: Callable[[np.ndarray], np.ndarray],
) -> ServedReference:
    from datawheel.data import versions as datasets
    from datawheel.data.split import TEST, TRAIN, plan_split
    from datawheel.data.transform import fit_transform

    name, version = mv.card.get("dataset"), mv.card.get("dataset_version")
    if not name or not version:
        return ServedReference(None, "its card names no dataset version to rebuild it from")
    dv = datasets.get_version(store, str(name), str(version))
    if dv.features != transform.features:
        return ServedReference(None, f"dataset {name}@{version} has other features than the model")
    plan = plan_split(
        datasets.read_frame(store, dv),
        label=dv.label,
        features=dv.features,
        classes=dv.classes,
        seed=REBUILD_SPLIT_SEED,
    )
    train = plan.x[plan.assignment == TRAIN]
    refit = fit_transform(train, dv.features, dv.classes, categories=plan.categories)
    same = (
        len(train) > 0
        and all(
            np.allclose(a, b, rtol=1e-5, atol=1e-6)
            for a, b in ((refit.mean, transform.mean), (refit.std, transform.std))
        )
        and refit.categories == dict(transform.categories)
    )
    if not same:
        return ServedReference(
            None,
            f"the train split of {name}@{version} with split seed {REBUILD_SPLIT_SEED} does not "
            "reproduce the model's transform (trained with another split seed?)",
        )
    test = plan.x[plan.assignment == TEST]
    classes = list(transform.classes)
    predicted = [classes[i] for i in predict(test).argmax(axis=1)] if len(test) else None
    labels = [plan.classes[i] for i in plan.y[plan.assignment == TRAIN]]
    reference = build_reference(
        train, dv.features, labels=labels, predictions=predicted, categorical=list(plan.categories)
    )
    return ServedReference(
        reference,
        f"rebuilt from the train split of dataset {name}@{version} ({len(train)} rows; the "
        f"version was exported without {REFERENCE_FILE})",
    )


def served_reference(
    store: Store,
    mv: ModelVersion,
    folder: Path,
    transform: Transform,
    predict: Callable[[np.ndarray], np.ndarray],
) -> ServedReference:
    """The reference of ``mv``: ``folder/drift_reference.json`` (fetched and verified), else
    rebuilt from its dataset; never raises (a failure turns live drift off, with the reason)."""
    path = folder / REFERENCE_FILE
    try:
        if path.is_file():
            reference = DriftReference.load(path)
            return ServedReference(reference, f"{REFERENCE_FILE} ({reference.rows} train rows)")
        return _rebuild(store, mv, transform, predict)
    except Exception as exc:  # a reference problem must never stop the model from serving
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return ServedReference(None, f"no usable reference: {reason}")
