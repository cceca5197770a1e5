"""The three retraining rules, as pure functions over one observation of a served model.

* **drift**: the drift engine's verdict on the recent ledger window of the champion;
* **accuracy**: live accuracy (feedback labels that confirm the prediction) below a floor,
  once at least ``min_labels`` labels arrived in the window;
* **labels**: ``new_labels`` or more labels arrived since the last run started.

Each rule returns a :class:`Trigger` (why a run should start, and the key that makes "the
same reason" the same: :mod:`datawheel.flywheel.run_state` claims a key at most once) or None.
Nothing here reads a store or a clock: :mod:`datawheel.flywheel.controller` builds the
:class:`Observation`, these functions decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from datawheel.errors import DatawheelError

__all__ = [
    "Observation",
    "Thresholds",
    "Trigger",
    "accuracy_rule",
    "bucket",
    "drift_rule",
    "evaluate",
    "labels_rule",
]


@dataclass(frozen=True)
class Thresholds:
    """When each rule holds. ``drift=False`` turns the drift rule off; ``new_labels=0`` the
    labels rule."""

    drift: bool = True
    accuracy_below: float = 0.8
    min_labels: int = 50
    new_labels: int = 1000

    def __post_init__(self) -> None:
        if not (0.0 < self.accuracy_below <= 1.0) or math.isnan(self.accuracy_below):
            raise DatawheelError(
                f"accuracy threshold {self.accuracy_below} is not in (0, 1]",
                "pass --accuracy-below as a fraction, e.g. 0.8",
            )
        if self.min_labels < 1:
            raise DatawheelError(
                f"--min-labels {self.min_labels} must be at least 1",
                "pass how many labels live accuracy needs before it counts, e.g. 50",
            )
        if self.new_labels < 0:
            raise DatawheelError(
                f"--new-labels {self.new_labels} is negative", "pass 0 (off) or a count"
            )


@dataclass(frozen=True)
class Observation:
    """What the watcher saw of one model at one time (``now``, seconds since the epoch)."""

    model: str
    version: str | None  # the champion's version, None if the model has none
    now: float
    window: str = "1h"  # the ledger window, as a person wrote it
    drift: bool | None = None  # None: no verdict (no rows in the window, or no reference)
    drifted_features: tuple[str, ...] = ()
    rows: int = 0  # served rows of the champion in the window
    labels: int = 0  # labelled predictions of the champion in the window
    accuracy: float | None = None  # confirmed / labels, None without labels
    new_labels: int = 0  # labels (any version) since the last run started
    notes: tuple[str, ...] = field(default_factory=tuple)  # why a signal is missing


@dataclass(frozen=True)
class Trigger:
    """A reason to start the flywheel pipeline.

    ``key`` names the reason: two triggers with one key are the same reason and start at
    most one run. ``reason`` is what a person reads (the pipeline's ``reason`` parameter).
    """

    rule: str  # "drift", "accuracy", "labels" or "alert"
    key: str
    reason: str


def bucket(now: float, cooldown_s: float) -> int:
    """The cooldown period ``now`` falls in: a reason repeats at most once per period (and
    the cooldown itself keeps runs apart). 0 when there is no cooldown."""
    return int(now // cooldown_s) if cooldown_s > 0 else 0


def drift_rule(obs: Observation, th: Thresholds, cooldown_s: float = 0.0) -> Trigger | None:
    if not th.drift or obs.drift is not True or obs.version is None:
        return None
    shown = ", ".join(obs.drifted_features[:5])
    more = f" and {len(obs.drifted_features) - 5} more" if len(obs.drifted_features) > 5 else ""
    return Trigger(
        "drift",
        f"drift:{obs.model}:{obs.version}:{bucket(obs.now, cooldown_s)}",
        f"drift: {len(obs.drifted_features)} feature(s) drifted ({shown}{more}) in "
        f"{obs.model}:{obs.version}'s ledger, last {obs.window}, {obs.rows} rows",
    )


def accuracy_rule(obs: Observation, th: Thresholds, cooldown_s: float = 0.0) -> Trigger | None:
    if obs.version is None or obs.accuracy is None or obs.labels < th.min_labels:
        return None
    if not obs.accuracy < th.accuracy_below:
        return None
    return Trigger(
        "accuracy",
        f"accuracy:{obs.model}:{obs.version}:{bucket(obs.now, cooldown_s)}",
        f"live accuracy {obs.accuracy:.3f} < {th.accuracy_below:g} over {obs.labels} labels "
        f"of {obs.model}:{obs.version}, last {obs.window}",
    )


def labels_rule(obs: Observation, th: Thresholds, since_run: str = "start") -> Trigger | None:
    """``since_run``: the id of the last run (the labels are counted from its start), so the
    same labels never start a second run."""
    if th.new_labels <= 0 or obs.new_labels < th.new_labels:
        return None
    return Trigger(
        "labels",
        f"labels:{obs.model}:after:{since_run}",
        f"{obs.new_labels} new labels for {obs.model} since "
        f"{'the last run' if since_run != 'start' else 'the start'} (threshold {th.new_labels})",
    )


def evaluate(
    obs: Observation, th: Thresholds, *, cooldown_s: float = 0.0, since_run: str = "start"
) -> list[Trigger]:
    """Every rule that holds, most urgent first (accuracy, drift, labels)."""
    fired = (
        accuracy_rule(obs, th, cooldown_s),
        drift_rule(obs, th, cooldown_s),
        labels_rule(obs, th, since_run),
    )
    return [t for t in fired if t is not None]
