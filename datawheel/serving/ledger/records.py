"""What the ledger holds: one :class:`Prediction` per served row, one :class:`Feedback` per label.

The Arrow schemas of both kinds (the WAL payloads and the Parquet segments) are derived
from the dataclass fields, so a field added here is a column everywhere. A column added
later has its value for older records in :data:`ADDED_COLUMNS`: ``variant`` (which
exported file answered) is ``torchscript`` for a row written before servers recorded it,
the only variant they served then.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

__all__ = ["ADDED_COLUMNS", "KINDS", "SCHEMAS", "Feedback", "Prediction", "PredictionBatch"]

LEGACY_VARIANT = "torchscript"  # what answered every row written before "variant" existed


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
    variant: str = LEGACY_VARIANT  # the served variant (torchscript, onnx, onnx-int8, student)


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
    variant: str = LEGACY_VARIANT


_ARROW_TYPES = {"str": pa.string(), "float": pa.float64(), "list[float]": pa.list_(pa.float64())}

#: The Arrow schema of each ledger kind: the record's fields, in order.
SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([(f.name, _ARROW_TYPES[str(f.type)]) for f in fields(cls)])
    for kind, cls in (("predictions", Prediction), ("feedback", Feedback))
}
#: Per kind, the columns added after segments were first written, and their value in an
#: older segment (or WAL frame) that lacks them.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "predictions": {"variant": LEGACY_VARIANT},
    "feedback": {},
}
#: The ledger kinds, as named in store keys and by ``read_ledger(kind=...)``.
KINDS: tuple[str, ...] = tuple(SCHEMAS)
