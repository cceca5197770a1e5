"""What the server remembers about recent predictions, for feedback and live accuracy.

A bounded map from prediction id to the version that made it and the predicted
label, plus the latest feedback label per id; ``live_accuracy`` is computed over the
latest label of each id, so a corrected correction is counted once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FeedbackOutcome", "PredictionIndex"]


@dataclass(frozen=True)
class FeedbackOutcome:
    version: str
    predicted: str
    changed: bool  # False when the same label was already recorded (idempotent repeat)
    correct: bool


class PredictionIndex:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._predictions: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._labels: dict[str, str] = {}
        self._correct: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._predictions)

    def add(self, ids: list[str], version: str, labels: list[str]) -> None:
        with self._lock:
            for pid, label in zip(ids, labels, strict=True):
                self._predictions[pid] = (version, label)
            while len(self._predictions) > self.capacity:
                old, (old_version, old_pred) = self._predictions.popitem(last=False)
                self._forget_label(old, old_version, old_pred)

    def get(self, pid: str) -> tuple[str, str] | None:
        return self._predictions.get(pid)

    def _forget_label(self, pid: str, version: str, predicted: str) -> None:
        label = self._labels.pop(pid, None)
        if label is not None:
            self._total[version] -= 1
            self._correct[version] -= int(label == predicted)

    def record(self, pid: str, label: str) -> FeedbackOutcome | None:
        """Record a label for prediction ``pid``; None if the id is unknown."""
        with self._lock:
            found = self._predictions.get(pid)
            if found is None:
                return None
            version, predicted = found
            previous = self._labels.get(pid)
            if previous == label:
                return FeedbackOutcome(version, predicted, False, label == predicted)
            self._forget_label(pid, version, predicted)
            self._labels[pid] = label
            self._total[version] = self._total.get(version, 0) + 1
            self._correct[version] = self._correct.get(version, 0) + int(label == predicted)
            return FeedbackOutcome(version, predicted, True, label == predicted)

    def live_accuracy(self, version: str) -> float | None:
        total = self._total.get(version, 0)
        return self._correct.get(version, 0) / total if total else None
