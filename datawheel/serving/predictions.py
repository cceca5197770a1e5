"""What the server remembers about feedback, for idempotency and live accuracy.

The latest label of each recently labelled prediction id (bounded, oldest forgotten first),
with the version that made the prediction and the predicted label; ``live_accuracy`` is
computed over those, so a corrected correction is counted once. It also maps ids of the
earlier format (:func:`~datawheel.serving.ids.is_legacy_id`), which carry nothing, to
their version and predicted label, for the ids this process knows; ids of the current
format say that themselves and need no entry.
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
        self._legacy: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._labels: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._correct: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._legacy)

    def add(self, ids: list[str], version: str, labels: list[str]) -> None:
        """Remember predictions whose ids do not say their version and label (legacy)."""
        with self._lock:
            for pid, label in zip(ids, labels, strict=True):
                self._legacy[pid] = (version, label)
            while len(self._legacy) > self.capacity:
                self._legacy.popitem(last=False)

    def get(self, pid: str) -> tuple[str, str] | None:
        """The version and predicted label of a prediction remembered by :meth:`add`."""
        return self._legacy.get(pid)

    def label(self, pid: str) -> str | None:
        """The latest label recorded for ``pid``, if it is still remembered."""
        found = self._labels.get(pid)
        return found[2] if found is not None else None

    def _count(self, version: str, predicted: str, label: str, sign: int) -> None:
        self._total[version] = self._total.get(version, 0) + sign
        self._correct[version] = self._correct.get(version, 0) + sign * int(label == predicted)

    def record(self, pid: str, version: str, predicted: str, label: str) -> FeedbackOutcome:
        """Record ``label`` for prediction ``pid`` (made by ``version``, which predicted
        ``predicted``); ``changed`` is False when it was already the latest label."""
        correct = label == predicted
        with self._lock:
            previous = self._labels.get(pid)
            if previous is not None and previous[2] == label:
                return FeedbackOutcome(previous[0], previous[1], False, previous[1] == label)
            if previous is not None:
                self._count(*previous, sign=-1)
            self._labels[pid] = (version, predicted, label)
            self._labels.move_to_end(pid)
            self._count(version, predicted, label, sign=1)
            while len(self._labels) > self.capacity:
                _, old = self._labels.popitem(last=False)
                self._count(*old, sign=-1)
            return FeedbackOutcome(version, predicted, True, correct)

    def live_accuracy(self, version: str) -> float | None:
        total = self._total.get(version, 0)
        return self._correct.get(version, 0) / total if total else None
