"""A small real store for harvest tests: a committed dataset, a registered model, a ledger.

The dataset ``toy`` (4 features, classes a/b/c) is ingested and validated by the real
gate; model ``toy`` is registered by the real registry with a real ``transform.json`` (its
``model.ts`` is a stand-in: a harvest reads the transform, never the network). Ledger
segments are written with the ledger's own ``write_segments`` and ids issued by the real
:class:`PredictionIds`, exactly as a server writes them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.data.gate import admit
from datawheel.data.sources import Loaded
from datawheel.data.transform import Transform
from datawheel.serving.ids import PredictionIds
from datawheel.serving.ledger.records import SCHEMAS
from datawheel.serving.ledger.segments import write_segments
from datawheel.storage import Store

FEATURES = ["f0", "f1", "f2", "f3"]
CLASSES = ["a", "b", "c"]
DAY = 1_780_000_000.0  # 2026-05-28, a fixed day for the ledger's partitions
_KEY = b"harvest-tests-key-0123456789abcdef"


def toy_frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.random((rows, len(FEATURES))).astype(np.float32), columns=FEATURES)
    frame["label"] = [CLASSES[i % len(CLASSES)] for i in range(rows)]
    return frame


def register_version(
    store: Store, tmp: Path, features: list[str], classes: list[str] = CLASSES
) -> str:
    """Register a version of model ``toy`` whose inputs are ``features`` in that order."""
    folder = tmp / f"model-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / "model.ts").write_bytes(os.urandom(32))  # a distinct checksum per version
    n = len(features)
    Transform(features, classes, [0.5] * n, [0.3] * n).save(folder / "transform.json")
    latest = ds.latest_version(store, "toy")
    card = {"dataset": "toy", "dataset_version": latest.version if latest else ""}
    return registry.register(store, "toy", folder, card=card).version


def toy_store(store: Store, tmp: Path, rows: int = 60) -> ds.DatasetVersion:
    """Dataset ``toy`` committed, model ``toy`` v1 (the dataset's feature order) champion."""
    candidate = ds.ingest_frame(store, Loaded(toy_frame(rows), "label", "test:toy"), name="toy")
    admission = admit(store, "toy", candidate.version)
    assert admission.outcome == "committed", admission.report.summary()
    version = register_version(store, tmp, FEATURES)
    registry.promote(store, "toy", version, alias="champion")
    return admission.version


@dataclass
class Ledger:
    """Writes prediction and feedback segments the way a server's ledger does."""

    store: Store
    model: str = "toy"
    ids: PredictionIds = field(default_factory=lambda: PredictionIds("toy", _KEY))

    def _segment(self, ts: float) -> str:
        return f"{int(ts * 1e9)}-{uuid.uuid4().hex[:8]}"

    def predict(
        self, x: np.ndarray, predicted: list[str], *, ts: float = DAY, version: str = "v1"
    ) -> list[str]:
        """Record one served batch; the prediction ids."""
        index = [CLASSES.index(p) if p in CLASSES else 0 for p in predicted]
        pids = self.ids.issue(version, ts, index)
        n = len(pids)
        table = pa.table(
            {
                "id": pids,
                "ts": [ts] * n,
                "model": [self.model] * n,
                "version": [version] * n,
                "inputs": [list(map(float, row)) for row in np.asarray(x, np.float64)],
                "label": predicted,
                "probabilities": [[1.0 / len(CLASSES)] * len(CLASSES)] * n,
                "latency_ms": [1.0] * n,
                "variant": ["torchscript"] * n,
            },
            schema=SCHEMAS["predictions"],
        )
        write_segments(self.store, "predictions", [table], self._segment(ts))
        return pids

    def label(
        self,
        pids: list[str],
        labels: list[str],
        predicted: list[str],
        *,
        ts: float = DAY + 60,
        version: str = "v1",
    ) -> None:
        """Record feedback for ``pids``, as one segment."""
        n = len(pids)
        table = pa.table(
            {
                "id": pids,
                "ts": [ts + i * 1e-3 for i in range(n)],
                "model": [self.model] * n,
                "version": [version] * n,
                "label": labels,
                "predicted": predicted,
            },
            schema=SCHEMAS["feedback"],
        )
        write_segments(self.store, "feedback", [table], self._segment(ts))


def new_rows(n: int, seed: int = 1) -> np.ndarray:
    """Rows in the dataset's range that are not in it."""
    return np.random.default_rng(seed).random((n, len(FEATURES))).astype(np.float32)
