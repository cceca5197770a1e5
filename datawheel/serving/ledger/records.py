"""What the ledger holds: one :class:`Prediction` per served row, one :class:`Feedback` per label.

The Arrow schemas of both kinds (the WAL payloads and the Parquet segments) are derived
from the dataclass fields, so a field added here is a column everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

__all__ = ["KINDS", "SCHEMAS", "Feedback", "Prediction", "PredictionBatch"]


@dataclass(frozen=True)
class Prediction:
    """One served row."""

    id: str
    ts: float  # seconds since the epoch; its UTC date picks the partition
    model: str
    version: str
    inputs: list[float]
    label: str
    probabilities: list[float]
    latency_ms: float


@dataclass(frozen=True)
class Feedback:
    """A label for an earlier prediction."""

    id: str
    ts: float
    model: str
    version: str
    label: str
    predicted: str


@dataclass(frozen=True)
class PredictionBatch:
    """The rows of one model call, kept as arrays: framed without per-row Python objects."""

    ids: list[str]
    ts: float
    model: str
    version: str
    inputs: np.ndarray  # [n, n_features]
    labels: list[str]
    probabilities: np.ndarray  # [n, n_classes]
    latency_ms: float


_ARROW_TYPES = {"str": pa.string(), "float": pa.float64(), "list[float]": pa.list_(pa.float64())}

#: The Arrow schema of each ledger kind: the record's fields, in order.
SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([(f.name, _ARROW_TYPES[str(f.type)]) for f in fields(cls)])
    for kind, cls in (("predictions", Prediction), ("feedback", Feedback))
}
#: The ledger kinds, as named in store keys and by ``read_ledger(kind=...)``.
KINDS: tuple[str, ...] = tuple(SCHEMAS)
