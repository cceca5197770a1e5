"""A served model: an exported TorchScript version from the registry, checksum-verified.

Only ``model.ts`` and ``transform.json`` are needed: no training code. ``predict``
returns class probabilities for raw feature rows (the transform is inside the model).
``drift_reference.json``, when the version has it, is the live drift reference
(:mod:`datawheel.serving.drift_baseline` rebuilds it for a version without one).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datawheel import registry
from datawheel.data.transform import Transform
from datawheel.data.versions import get_version
from datawheel.monitoring.baseline import REFERENCE_FILE, DriftReference
from datawheel.serving.drift_baseline import served_reference
from datawheel.serving.signature import Signature, signature_of
from datawheel.storage import Store
from datawheel.training.export import load_exported

__all__ = ["ServedModel", "load_served"]


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    checksum: str
    classes: list[str]
    n_features: int
    module: Any  # torch.jit.ScriptModule
    load_seconds: float
    features: tuple[str, ...]
    device: str
    signature: Signature  # what it takes on the wire, how it describes itself
    drift_reference: DriftReference | None = None  # None: live drift is off for this version
    drift_note: str = ""  # where the reference came from, or why there is none

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [n, n_classes], for raw float32 rows [n, n_features]."""
        with torch.inference_mode():
            logits: torch.Tensor = self.module(torch.from_numpy(rows).to(self.device))
            return np.asarray(torch.softmax(logits.float(), dim=1).cpu().numpy())

    def labels(self, probabilities: np.ndarray) -> list[str]:
        return [self.classes[i] for i in probabilities.argmax(axis=1)]


def _dataset_source(store: Store, card: dict[str, Any]) -> str | None:
    """Where the version's training data came from: its dataset version's source, or its
    first ancestor's that was not a harvest; None when that cannot be read (the metadata
    then says less, the model serves all the same)."""
    name, version = card.get("dataset"), card.get("dataset_version")
    try:
        for _ in range(100):
            if not isinstance(name, str) or not isinstance(version, str):
                return None
            manifest = get_version(store, name, version).manifest
            source = str(manifest.get("source") or "")
            if not source.startswith("harvest:"):
                return source
            version = manifest.get("parent")
    except Exception:  # a missing or unreadable dataset: only the description is poorer
        return None
    return None


def load_served(
    store: Store, name: str, ref: str = "champion", *, warmup_rows: int = 64
) -> ServedModel:
    """Resolve ``ref`` (alias or ``vN``), fetch with checksum verification, load, warm up."""
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mv = registry.resolve(store, name, ref)
    with tempfile.TemporaryDirectory(prefix="datawheel-serve-") as tmp:
        registry.fetch(store, mv, tmp, only=("model.ts", "transform.json", REFERENCE_FILE))
        module = load_exported(Path(tmp, "model.ts"), device)
        transform = Transform.load(Path(tmp, "transform.json"))
        model = ServedModel(
            name,
            mv.version,
            str(mv.card["checksum"]),
            list(transform.classes),
            transform.n_features,
            module,
            0.0,
            tuple(transform.features),
            device,
            signature_of(
                transform, _dataset_source(store, mv.card) if transform.image_shape else None
            ),
        )
        rng = np.random.default_rng(0)
        categorical = [model.signature.column[f] for f in model.signature.codes]
        for n in (1, warmup_rows):  # first calls pay TorchScript's profiling/optimization passes
            rows = rng.normal(size=(n, model.n_features)).astype(np.float32)
            rows[:, categorical] = 0.0  # the "other" category: a code the model knows
            model.predict(rows)
        found = served_reference(store, mv, Path(tmp), transform, model.predict)
    return replace(
        model,
        load_seconds=time.perf_counter() - start,
        drift_reference=found.reference,
        drift_note=found.note,
    )
