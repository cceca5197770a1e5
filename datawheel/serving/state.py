"""The serving state: the model being served and what a request needs to be answered.

:class:`Serving` holds the current model, the dynamic batcher, the prediction ledger, the
metrics, the prediction index and the input drift monitor. It runs each coalesced batch
on the inference thread (predict, give every row an id, write the ledger, remember the
ids), records feedback, and hot-swaps the model. It knows nothing of HTTP: the routes,
limits and auth are :class:`~datawheel.serving.app.ServingApp`'s.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from datawheel.monitoring.drift import DriftMonitor
from datawheel.serving.batcher import DynamicBatcher
from datawheel.serving.ledger import Feedback, Ledger, PredictionBatch
from datawheel.serving.model import ServedModel
from datawheel.serving.predictions import PredictionIndex
from datawheel.serving.protocol import ProtocolError
from datawheel.serving.telemetry import ServingMetrics

__all__ = ["BatchResult", "Serving"]


@dataclass(frozen=True)
class BatchResult:
    """What one model call answered, row for row: the version, probabilities, labels, ids."""

    version: str
    probabilities: np.ndarray
    labels: list[str]
    ids: list[str]


def _drift_monitor(model: ServedModel) -> DriftMonitor:
    return DriftMonitor(list(model.feature_mean), list(model.feature_std))


class Serving:
    """Everything a request needs: the current model, batcher, ledger, metrics, index.

    ``model`` is swapped by assignment (atomic); a batch holds on to the model it
    started with, so in-flight requests finish on the old version.
    """

    def __init__(
        self,
        model: ServedModel,
        ledger: Ledger,
        metrics: ServingMetrics,
        *,
        max_batch_size: int = 64,
        max_latency_ms: float = 2.0,
        index: PredictionIndex | None = None,
    ) -> None:
        self.model = model
        self.ledger = ledger
        self.metrics = metrics
        self.index = index if index is not None else PredictionIndex()
        self.batcher: DynamicBatcher[BatchResult] = DynamicBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_latency_ms=max_latency_ms,
            on_batch=metrics.batch_rows.labels(model.name).observe,
        )
        metrics.serving(model.version, model.checksum, model.load_seconds)
        self.drift = _drift_monitor(model)

    def swap(self, model: ServedModel) -> None:
        old = self.model.version
        self.drift = _drift_monitor(model)
        self.model = model
        self.metrics.serving(model.version, model.checksum, model.load_seconds)
        self.metrics.swaps.labels(model.name).inc()
        if old != model.version:
            with contextlib.suppress(KeyError):
                self.metrics.drift.remove(model.name, old)

    def drift_score(self) -> float:
        """Update and return the drift gauge of the version being served."""
        model, score = self.model, self.drift.score()
        self.metrics.drift.labels(model.name, model.version).set(score)
        return score

    def _run_batch(self, rows: np.ndarray) -> BatchResult:
        """On the inference thread: predict, remember, and write the ledger (durably)."""
        model, drift = self.model, self.drift
        start = time.perf_counter()
        probabilities = model.predict(rows)
        labels = model.labels(probabilities)
        raw = os.urandom(16 * len(labels)).hex()  # one call for the whole batch's ids
        ids = [raw[k : k + 32] for k in range(0, len(raw), 32)]
        latency_ms = (time.perf_counter() - start) * 1000
        self.ledger.append(
            PredictionBatch(
                ids, time.time(), model.name, model.version, rows, labels, probabilities, latency_ms
            )
        )
        self.index.add(ids, model.version, labels)
        drift.observe(rows)
        counter = self.metrics.predictions
        for label in set(labels):
            counter.labels(model.name, model.version, label).inc(labels.count(label))
        return BatchResult(model.version, probabilities, labels, ids)

    def feedback(self, pid: str, label: str) -> dict[str, Any]:
        found = self.index.get(pid)
        if found is None:
            raise ProtocolError(404, f"no prediction with id {pid!r} (unknown or too old)")
        classes = self.model.classes  # the label space feedback is collected in
        if label not in classes:
            raise ProtocolError(422, f"label {label!r} is not one of the model's classes {classes}")
        outcome = self.index.record(pid, label)
        assert outcome is not None
        name = self.model.name
        if outcome.changed:
            self.ledger.append(
                [Feedback(pid, time.time(), name, outcome.version, label, outcome.predicted)]
            )
            result = "correct" if outcome.correct else "incorrect"
            self.metrics.feedback.labels(name, outcome.version, result).inc()
            accuracy = self.index.live_accuracy(outcome.version)
            if accuracy is not None:
                self.metrics.live_accuracy.labels(name, outcome.version).set(accuracy)
        return {
            "id": pid,
            "label": label,
            "predicted": outcome.predicted,
            "correct": outcome.correct,
            "duplicate": not outcome.changed,
        }
