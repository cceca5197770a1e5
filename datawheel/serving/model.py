"""A served model: one variant of a registered version, checksum-verified.

Only the variant's file (``model.ts``, ``model.onnx``, ``model_int8.onnx`` or
``student.onnx``; see :mod:`datawheel.serving.variants`) and ``transform.json`` are
needed: no training code. ``predict`` returns class probabilities for raw feature rows
(the transform is inside the model).
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

from datawheel import registry
from datawheel.data.transform import Transform
from datawheel.data.versions import get_version
from datawheel.monitoring.baseline import REFERENCE_FILE, DriftReference
from datawheel.serving.drift_baseline import served_reference
from datawheel.serving.signature import Signature, signature_of
from datawheel.serving.variants import AUTO, Runner, load_runner, pick_variant, variant_files
from datawheel.storage import Store

__all__ = ["ServedModel", "load_served"]


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    checksum: str
    classes: list[str]
    n_features: int
    runner: Runner  # the loaded variant: raw rows -> probabilities
    load_seconds: float
    features: tuple[str, ...]
    device: str
    signature: Signature  # what it takes on the wire, how it describes itself
    drift_reference: DriftReference | None = None  # None: live drift is off for this version
    drift_note: str = ""  # where the reference came from, or why there is none
    variant: str = "torchscript"  # which file answers (serving/variants.py)
    runtime: str = "torchscript"  # what runs it: torchscript or onnxruntime
    platform: str = "pytorch_torchscript"  # the v2 metadata's name for the runtime
    file_checksum: str = ""  # SHA-256 of the variant's file, as the card lists it

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [n, n_classes], for raw float32 rows [n, n_features]."""
        return self.runner(rows)

    def metadata(self) -> Any:
        """The ``GET /v2/models/NAME`` document."""
        return self.signature.metadata(
            self.name,
            self.version,
            self.classes,
            self.checksum,
            served={
                "variant": self.variant,
                "runtime": self.runtime,
                "platform": self.platform,
                "file_checksum": self.file_checksum,
                "device": self.device,
            },
        )

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
    store: Store,
    name: str,
    ref: str = "champion",
    *,
    variant: str = AUTO,
    warmup_rows: int = 64,
) -> ServedModel:
    """Resolve ``ref`` (alias or ``vN``), pick ``variant`` (``auto``: the card's choice),
    fetch its file with checksum verification, load, warm up. A version without the
    variant raises a DatawheelError naming the variants it has."""
    start = time.perf_counter()
    mv = registry.resolve(store, name, ref)
    chosen = pick_variant(mv.card, variant)
    files = variant_files(mv.card, chosen)
    with tempfile.TemporaryDirectory(prefix="datawheel-serve-") as tmp:
        registry.fetch(store, mv, tmp, only=(*files, "transform.json", REFERENCE_FILE))
        runner, device = load_runner(chosen, Path(tmp))
        transform = Transform.load(Path(tmp, "transform.json"))
        model = ServedModel(
            name,
            mv.version,
            str(mv.card["checksum"]),
            list(transform.classes),
            transform.n_features,
            runner,
            0.0,
            tuple(transform.features),
            device,
            signature_of(
                transform, _dataset_source(store, mv.card) if transform.image_shape else None
            ),
            variant=chosen.name,
            runtime=chosen.runtime,
            platform=chosen.platform,
            file_checksum=str(mv.card["files"][chosen.file]),
        )
        rng = np.random.default_rng(0)
        categorical = [model.signature.column[f] for f in model.signature.codes]
        for n in (1, warmup_rows):  # first calls pay the runtime's profiling/optimization
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
