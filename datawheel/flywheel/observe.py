"""What the watcher looks at: one :class:`~datawheel.flywheel.rules.Observation` of a model.

* the drift verdict of the champion's recent ledger window, exactly as ``datawheel drift
  --model NAME@champion --since WINDOW`` computes it (its drift reference against the rows
  it served, :mod:`datawheel.orchestration.drift_inputs`);
* live accuracy: the champion's labelled predictions in the window, the latest label per
  prediction id, confirmed when the label equals the predicted class;
* new labels: prediction ids labelled (any version) after the last run started;
* optionally Prometheus (``--prometheus``): the served drift score and live accuracy
  gauges, used where the ledger gave no verdict.

A signal that cannot be read (no champion, no rows in the window, a corrupt segment, an
unreachable Prometheus) is left empty with a one-line note: the rule that needs it stays
quiet, the watcher keeps running.
"""

from __future__ import annotations

import math
from typing import Any

from datawheel.errors import DatawheelError
from datawheel.flywheel.rules import Observation
from datawheel.storage import Store

__all__ = ["DRIFT_SCORE_THRESHOLD", "observe_model", "prometheus_signals"]

# the PSI above which DatawheelInputDrift fires (manifests/monitoring/prometheusrule.yaml)
DRIFT_SCORE_THRESHOLD = 0.25


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _drift(store: Store, model: str, window_s: float, window: str, now: float) -> dict[str, Any]:
    from datawheel.orchestration.drift_inputs import ledger_window, model_reference
    from datawheel.orchestration.drift_report import compare_samples

    ref, mv = model_reference(store, f"{model}@champion")
    cur = ledger_window(store, mv, ref.features, window_s, now=now, span=window)
    report = compare_samples(ref, cur)
    return {
        "drift": bool(report.dataset_drift),
        "drifted_features": tuple(report.drifted_features),
        "rows": int(report.current_rows),
    }


def _feedback(
    store: Store, model: str, version: str | None, window_s: float, now: float, since: float | None
) -> dict[str, Any]:
    from datawheel.serving.ledger import read_ledger

    fb = read_ledger(store, model=model, kind="feedback")
    fb = fb[fb["ts"] <= now]
    new = fb if since is None else fb[fb["ts"] > since]
    out: dict[str, Any] = {"new_labels": int(new["id"].nunique())}
    latest = fb.sort_values("ts", kind="stable").drop_duplicates("id", keep="last")
    recent = latest[(latest["ts"] >= now - window_s) & (latest["version"] == version)]
    if version is not None and not recent.empty:
        confirmed = recent["label"].astype(str) == recent["predicted"].astype(str)
        out.update(labels=len(recent), accuracy=float(confirmed.mean()))
    return out


def prometheus_signals(url: str, model: str, window: str) -> dict[str, Any]:
    """The served gauges: worst-feature PSI and live accuracy with its label count."""
    from datawheel.deploy.prom import Prometheus

    prom = Prometheus(url)
    sel = f'model="{model}"'
    score = prom.query(f"max(datawheel_input_drift_score{{{sel}}})")
    accuracy = prom.query(f"avg(datawheel_live_accuracy_ratio{{{sel}}})")
    labels = prom.query(f"sum(increase(datawheel_feedback_total{{{sel}}}[{window}]))")
    out: dict[str, Any] = {}
    if score and not math.isnan(score[0][1]):
        out["drift_score"] = score[0][1]
    if accuracy and not math.isnan(accuracy[0][1]) and labels and not math.isnan(labels[0][1]):
        out.update(accuracy=accuracy[0][1], labels=round(labels[0][1]))
    return out


def observe_model(
    store: Store,
    model: str,
    *,
    now: float,
    window_s: float,
    window: str,
    labels_since: float | None,
    prometheus: str = "",
) -> Observation:
    """One look at ``model``'s champion, its ledger window and its feedback."""
    from datawheel import registry

    notes: list[str] = []
    version: str | None = None
    try:
        version = registry.resolve(store, model, "champion").version
    except DatawheelError as exc:
        notes.append(f"no champion: {_line(exc)}")
    seen: dict[str, Any] = {}
    if version is not None:
        try:
            seen.update(_drift(store, model, window_s, window, now))
        except Exception as exc:  # no rows in the window, no reference, a corrupt segment
            notes.append(f"no drift verdict: {_line(exc)}")
    try:
        seen.update(_feedback(store, model, version, window_s, now, labels_since))
    except Exception as exc:  # a corrupt feedback segment
        notes.append(f"no feedback: {_line(exc)}")
    if prometheus:
        try:
            prom = prometheus_signals(prometheus, model, window)
        except DatawheelError as exc:
            notes.append(f"no Prometheus signals: {_line(exc)}")
            prom = {}
        if "drift" not in seen and "drift_score" in prom:
            seen["drift"] = prom["drift_score"] > DRIFT_SCORE_THRESHOLD
            notes.append(f"drift from Prometheus: worst feature PSI {prom['drift_score']:.3f}")
        if "accuracy" not in seen and "accuracy" in prom:
            seen.update(accuracy=prom["accuracy"], labels=prom["labels"])
            notes.append("live accuracy from Prometheus")
    return Observation(
        model=model, version=version, now=now, window=window, notes=tuple(notes), **seen
    )
