"""The serving state: the model being served and what a request needs to be answered.

:class:`Serving` holds the current model, the dynamic batcher, the prediction ledger, the
metrics, the prediction index and the live drift window
(:class:`~datawheel.monitoring.live.LiveDrift`). It runs each coalesced batch on the
inference thread (predict, give every row a signed id, write the ledger, count the rows
into the drift window), records
feedback for an id any replica issued, and hot-swaps the model. It knows nothing of HTTP:
the routes, limits and auth are :class:`~datawheel.serving.app.ServingApp`'s.

Nothing is answered before it is in the ledger: a batch or a label whose ``append`` fails
raises :class:`~datawheel.serving.ledger.LedgerUnavailable` (answered 503) and is not
remembered, so the client's retry is recorded like a first try.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datawheel.monitoring.live import LiveDrift, LiveDriftConfig
from datawheel.serving.batcher import DynamicBatcher
from datawheel.serving.ids import PredictionIds, is_legacy_id
from datawheel.serving.ledger import Feedback, Ledger, LedgerUnavailable, PredictionBatch
from datawheel.serving.model import ServedModel
from datawheel.serving.predictions import FeedbackOutcome, PredictionIndex
from datawheel.serving.protocol import ProtocolError, brief
from datawheel.serving.telemetry import ServingMetrics

__all__ = ["BatchResult", "Serving"]

log = logging.getLogger("datawheel.serve")
_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class BatchResult:
    """What one model call answered, row for row: the version, probabilities, labels, ids."""

    version: str
    probabilities: np.ndarray
    labels: list[str]
    ids: list[str]


def _live_drift(model: ServedModel, config: LiveDriftConfig) -> LiveDrift | None:
    """The drift window of ``model``, or None (logged) when it has no reference."""
    where = f"{model.name}:{model.version}"
    if model.drift_reference is None:
        log.warning(
            "live drift is off for %s (no drift gauges for it): %s", where, model.drift_note
        )
        return None
    drift = LiveDrift(model.drift_reference, model.features, model.classes, config)
    skipped = f"; not monitored: {', '.join(drift.skipped)}" if drift.skipped else ""
    log.warning(
        "live drift for %s: %d features against %s, predicted classes against %s%s",
        where,
        len(drift.features),
        model.drift_note,
        drift.prediction_source,
        skipped,
    )
    return drift


def _reason(exc: Exception) -> str:
    """``ENOSPC: No space left on device`` for an OSError, else the error's text (one line)."""
    code = errno.errorcode.get(exc.errno or 0) if isinstance(exc, OSError) else None
    if code and isinstance(exc, OSError) and exc.strerror:
        return f"{code}: {exc.strerror}"
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _no_classes(version: str) -> list[str]:
    raise LookupError(f"no registry to look {version} up in")


class Serving:
    """Everything a request needs: the current model, batcher, ledger, metrics, index.

    ``model`` is swapped by assignment (atomic); a batch holds on to the model it
    started with, so in-flight requests finish on the old version. ``ids`` signs the
    prediction ids (a key of this process alone when not given: then only this process
    can verify them); ``classes_of(version)`` gives another version's classes, to name
    the predicted label of feedback for a prediction that version made elsewhere.
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
        ids: PredictionIds | None = None,
        classes_of: Callable[[str], list[str]] = _no_classes,
        drift: LiveDriftConfig | None = None,
    ) -> None:
        self.model = model
        self.drift_config = drift or LiveDriftConfig()
        self.ledger = ledger
        self.metrics = metrics
        self.index = index if index is not None else PredictionIndex()
        self.ids = ids if ids is not None else PredictionIds(model.name, os.urandom(32))
        self._classes_of = classes_of
        self._classes: dict[str, list[str]] = {model.version: list(model.classes)}
        self._feedback_lock = threading.Lock()  # check, append, record: one label at a time
        self._drift_lock = threading.Lock()  # a swap and a drift export, one at a time
        self._drift_failed = False
        self._failure_logged, self._failures_unlogged = -float("inf"), 0
        self.batcher: DynamicBatcher[BatchResult] = DynamicBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_latency_ms=max_latency_ms,
            on_batch=metrics.batch_rows.labels(model.name).observe,
        )
        metrics.serving(model.version, model.checksum, model.load_seconds, model.variant)
        # (version, its drift window): one attribute, so a batch never pairs one version's
        # model with another's window
        self._window: tuple[str, LiveDrift | None] = (
            model.version,
            _live_drift(model, self.drift_config),
        )

    def swap(self, model: ServedModel) -> None:
        old = self.model.version
        self._classes[model.version] = list(model.classes)
        drift = _live_drift(model, self.drift_config)
        with self._drift_lock:
            self._window = (model.version, drift)
            self.model = model
            if old != model.version:
                self.metrics.drop_drift(old)
        self.metrics.serving(model.version, model.checksum, model.load_seconds, model.variant)
        self.metrics.swaps.labels(model.name).inc()

    @property
    def drift(self) -> LiveDrift | None:
        """The drift window of the version being served (None: live drift is off)."""
        return self._window[1]

    def drift_score(self) -> float | None:
        """Export the drift gauges of the version being served; its input drift score
        (the worst feature's PSI), or None when its live drift is off."""
        with self._drift_lock:  # a swap between reading and exporting would revive old labels
            version, drift = self._window
            if drift is None:
                return None
            return self.metrics.live_drift(version, drift.scores(), self.drift_config.feature_cap)

    def _append(self, records: Sequence[Feedback] | PredictionBatch) -> None:
        """``ledger.append``; whatever makes it fail is a LedgerUnavailable (a 503)."""
        try:
            self.ledger.append(records)
        except LedgerUnavailable as exc:
            self._log_failure(exc)
            raise
        except Exception as exc:  # any other failure to write means the same: not recorded
            unavailable = LedgerUnavailable(
                _reason(exc), self.ledger.spool_dir, "retry; if it persists, see the server log"
            )
            self._log_failure(unavailable)
            raise unavailable from exc

    def _log_failure(self, exc: Exception) -> None:
        """Log a failed ledger write at most every 10 s; the ones between are counted."""
        now = time.monotonic()
        if now - self._failure_logged < _LOG_EVERY_S:
            self._failures_unlogged += 1
            return
        more = f" ({self._failures_unlogged} more since)" if self._failures_unlogged else ""
        self._failure_logged, self._failures_unlogged = now, 0
        log.error("answering 503, nothing recorded: %s%s", exc, more)

    def _run_batch(self, rows: np.ndarray) -> BatchResult:
        """On the inference thread: predict, sign the ids, and write the ledger (durably)."""
        model = self.model
        version, drift = self._window
        start = time.perf_counter()
        probabilities = model.predict(rows)
        best = probabilities.argmax(axis=1)
        indices: list[int] = best.tolist()
        classes = model.classes
        labels = [classes[i] for i in indices]
        ts = time.time()
        ids = self.ids.issue(model.version, ts, indices)
        latency_ms = (time.perf_counter() - start) * 1000
        self._append(
            PredictionBatch(
                ids,
                ts,
                model.name,
                model.version,
                rows,
                labels,
                probabilities,
                latency_ms,
                model.variant,
            )
        )
        if drift is not None and version == model.version:
            self._observe(drift, rows, best)
        counter = self.metrics.predictions
        for label in set(labels):
            counter.labels(model.name, model.version, label).inc(labels.count(label))
        return BatchResult(model.version, probabilities, labels, ids)

    def _observe(self, drift: LiveDrift, rows: np.ndarray, best: np.ndarray) -> None:
        """Count a batch into the drift window; a failure there never fails the batch."""
        try:
            drift.observe(rows, best)
        except Exception:
            if not self._drift_failed:
                self._drift_failed = True
                log.exception("live drift failed on a batch (logged once; the batch is served)")

    def _version_classes(self, version: str) -> list[str]:
        """The classes of ``version`` (cached; looked up in the registry the first time)."""
        classes = self._classes.get(version)
        if classes is None:
            try:
                classes = list(self._classes_of(version))
            except Exception as exc:
                raise ProtocolError(
                    503,
                    f"cannot look up the classes of {self.model.name}:{version}, which made "
                    f"this prediction, to record the label: {' '.join(str(exc).split())[:300]}"
                    "; retry",
                ) from exc
            self._classes[version] = classes
        return classes

    def _prediction(self, pid: str) -> tuple[str, str]:
        """The version that made prediction ``pid`` and the label it predicted; else 404."""
        issued = self.ids.verify(pid)
        if issued is not None:
            classes = self._version_classes(issued.version)
            if issued.class_index < len(classes):
                return issued.version, classes[issued.class_index]
        elif is_legacy_id(pid) and (found := self.index.get(pid)) is not None:
            return found
        raise ProtocolError(
            404,
            f"no prediction with id {brief(pid)}: {self.model.name!r} servers did not issue it "
            "(mistyped, altered or signed with another key), or it is an id of the earlier "
            "format that this server does not know",
        )

    def feedback(self, pid: str, label: str) -> dict[str, Any]:
        """Record ``label`` for prediction ``pid`` (made by any replica) in the ledger."""
        version, predicted = self._prediction(pid)
        classes = self.model.classes  # the label space feedback is collected in...
        if label not in classes and label not in self._classes.get(version, ()):
            # ...or the one of the version that predicted
            raise ProtocolError(
                422, f"label {brief(label)} is not one of the model's classes {classes}"
            )
        name = self.model.name
        with self._feedback_lock:
            if self.index.label(pid) == label:
                outcome = FeedbackOutcome(version, predicted, False, label == predicted)
            else:
                self._append([Feedback(pid, time.time(), name, version, label, predicted)])
                outcome = self.index.record(pid, version, predicted, label)
                result = "correct" if outcome.correct else "incorrect"
                self.metrics.feedback.labels(name, version, result).inc()
                accuracy = self.index.live_accuracy(version)
                if accuracy is not None:
                    self.metrics.live_accuracy.labels(name, version).set(accuracy)
        return {
            "id": pid,
            "label": label,
            "version": version,
            "predicted": predicted,
            "correct": outcome.correct,
            "duplicate": not outcome.changed,
        }
