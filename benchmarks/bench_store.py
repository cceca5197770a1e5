"""What the ledger benchmarks share: a committed dataset ``bench`` with a stand-in champion on
it (the harvest and the review queue read the card and transform, never the network), and
a float matrix as an Arrow list column, the way ledger segments hold rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["list_column", "stand_in_champion"]


def stand_in_champion(
    store: Any, work: Path, frame: pd.DataFrame, classes: list[str], note: str
) -> str:
    """Commit ``frame`` (its ``label`` column the class) as dataset ``bench`` and register
    model ``bench`` v1, champion, trained on it (a stand-in ``model.ts`` saying ``note``).
    Returns the dataset version."""
    from datawheel import registry
    from datawheel.data import versions as ds
    from datawheel.data.gate import admit
    from datawheel.data.sources import Loaded
    from datawheel.data.transform import Transform

    features = [c for c in frame.columns if c != "label"]
    candidate = ds.ingest_frame(store, Loaded(frame, "label", "bench"), name="bench")
    assert admit(store, "bench", candidate.version).outcome == "committed"
    model_dir = work / "model"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "model.ts").write_bytes(f"stand-in: {note}".encode())
    n = len(features)
    Transform(features, classes, [0.3] * n, [0.3] * n).save(model_dir / "transform.json")
    card = {"dataset": "bench", "dataset_version": candidate.version}
    mv = registry.register(store, "bench", model_dir, card=card)
    registry.promote(store, "bench", mv.version, alias="champion")
    return str(candidate.version)


def list_column(x: np.ndarray) -> pa.Array:
    n, w = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * w, w, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1).astype(np.float64)))
