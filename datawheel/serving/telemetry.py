"""The server's Prometheus metrics, named by Prometheus conventions.

The registry is injected (``registry=...``) so every server, and every test, owns a
fresh one. Exported names (all prefixed ``datawheel_``):

========================================  =========  ==================================
requests_total{model,version,endpoint,code}  counter   every HTTP request, by status code
request_duration_seconds{model,version,endpoint} histogram request latency
requests_in_flight{model}                    gauge     requests being handled now
inference_batch_rows{model}                  histogram rows per coalesced model call
predictions_total{model,version,class}       counter   predicted classes
feedback_total{model,version,outcome}        counter   labels received (correct/incorrect)
live_accuracy_ratio{model,version}           gauge     accuracy over labelled feedback
model_load_seconds{model,version}            gauge     fetch + verify + load + warm-up time
model_info{model,version,checksum,variant}   gauge     1 for the version being served
model_load_failures_total{model}             counter   versions refused (corrupt/unloadable)
model_swaps_total{model}                     counter   hot swaps to a new version
ledger_backlog_records{model}                gauge     ledger records not yet in the store
ledger_lost_records_total{model}             counter   spooled records that can never upload
input_drift_score{model,version}             gauge     worst feature's PSI over the window
feature_drift_psi{model,version,feature}     gauge     PSI per feature (32 by name + _other)
prediction_drift_score{model,version}        gauge     PSI of the predicted-class mix
drift_window_rows{model,version}             gauge     rows in the live drift window
========================================  =========  ==================================

``model_info``'s ``checksum`` is the version's (its card's, as the registry names it) and
``variant`` the file that answers (torchscript, onnx, onnx-int8 or student).

``feedback_total``'s ``version`` is the version that made the prediction, whichever
replica takes the feedback; ``outcome`` is ``correct`` (the label confirmed it) or
``incorrect`` (it corrected it). Both series of a version the server serves exist from
the moment it serves it, at 0, so that ``increase()`` counts the first label too; the
canary gate (:mod:`datawheel.deploy.prom`) reads live accuracy per version from them.

The drift gauges (:mod:`datawheel.monitoring.live`) are NaN until the window holds enough
rows, and absent for a version whose live drift is off (no reference). ``feature`` labels
are bounded: the first ``feature_cap`` features of the model by name, the rest as one
``feature="_other"`` series holding the largest PSI among them.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from datawheel.monitoring.live import LiveScores

__all__ = ["ServingMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "datawheel_"
        self.requests = Counter(
            p + "requests",
            "HTTP requests handled",
            ["model", "version", "endpoint", "code"],
            registry=r,
        )
        self.latency = Histogram(
            p + "request_duration_seconds",
            "HTTP request latency",
            ["model", "version", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            p + "requests_in_flight", "Requests being handled", ["model"], registry=r
        )
        self.batch_rows = Histogram(
            p + "inference_batch_rows",
            "Rows per coalesced model call",
            ["model"],
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            p + "predictions", "Predicted classes", ["model", "version", "class"], registry=r
        )
        self.feedback = Counter(
            p + "feedback", "Feedback labels received", ["model", "version", "outcome"], registry=r
        )
        self.live_accuracy = Gauge(
            p + "live_accuracy_ratio",
            "Accuracy over labelled feedback",
            ["model", "version"],
            registry=r,
        )
        self.load_seconds = Gauge(
            p + "model_load_seconds",
            "Model fetch+verify+load+warm-up",
            ["model", "version"],
            registry=r,
        )
        self.info = Gauge(
            p + "model_info",
            "The version being served (value 1) and the variant that answers",
            ["model", "version", "checksum", "variant"],
            registry=r,
        )
        self.load_failures = Counter(
            p + "model_load_failures", "Model versions refused", ["model"], registry=r
        )
        self.swaps = Counter(p + "model_swaps", "Hot swaps to a new version", ["model"], registry=r)
        self.ledger_backlog = Gauge(
            p + "ledger_backlog_records",
            "Ledger records not yet in the store",
            ["model"],
            registry=r,
        )
        self.ledger_lost = Counter(
            p + "ledger_lost_records",
            "Spooled ledger records skipped because their WAL file was deleted or unreadable",
            ["model"],
            registry=r,
        )
        self.drift = Gauge(
            p + "input_drift_score",
            "Input drift: the largest per-feature PSI (datawheel_feature_drift_psi) of the "
            "live window against the training split; NaN until the window has enough rows",
            ["model", "version"],
            registry=r,
        )
        self.feature_drift = Gauge(
            p + "feature_drift_psi",
            "PSI of one feature over the live window against the training split's quantile "
            'bins; the features beyond the cap are one series, feature="_other" (their max)',
            ["model", "version", "feature"],
            registry=r,
        )
        self.prediction_drift = Gauge(
            p + "prediction_drift_score",
            "PSI of the predicted-class distribution over the live window against the "
            "model's predictions on its test split (or the training labels)",
            ["model", "version"],
            registry=r,
        )
        self.drift_rows = Gauge(
            p + "drift_window_rows",
            "Rows in the live drift window",
            ["model", "version"],
            registry=r,
        )
        self.in_flight.labels(model)
        self.load_failures.labels(model)
        self.swaps.labels(model)
        self.ledger_backlog.labels(model)
        self.ledger_lost.labels(model)
        self._lost_exported = 0
        self._served: tuple[str, str, str] | None = None
        self._drift_features: dict[str, set[str]] = {}  # version -> feature labels exported

    def ledger(self, backlog: int, lost: int) -> None:
        """Export the ledger's backlog and its running count of lost records."""
        self.ledger_backlog.labels(self.model).set(backlog)
        if lost > self._lost_exported:
            self.ledger_lost.labels(self.model).inc(lost - self._lost_exported)
            self._lost_exported = lost

    def serving(
        self, version: str, checksum: str, load_seconds: float, variant: str = "torchscript"
    ) -> None:
        """Mark ``version`` (its ``variant``) as the one served (and the previous one as not)."""
        if self._served is not None:
            self.info.remove(self.model, *self._served)
        self._served = (version, checksum, variant)
        self.info.labels(self.model, version, checksum, variant).set(1)
        for outcome in ("correct", "incorrect"):  # at 0: increase() then counts the first label
            self.feedback.labels(self.model, version, outcome)
        self.load_seconds.labels(self.model, version).set(load_seconds)

    def live_drift(self, version: str, scores: LiveScores, cap: int) -> float:
        """Export one reading of ``version``'s drift window; the input drift score."""
        worst = scores.worst()
        self.drift.labels(self.model, version).set(worst)
        self.drift_rows.labels(self.model, version).set(scores.rows)
        if scores.prediction is not None:
            self.prediction_drift.labels(self.model, version).set(scores.prediction)
        exported = self._drift_features.setdefault(version, set())
        for feature, value in scores.labelled(cap):
            self.feature_drift.labels(self.model, version, feature).set(value)
            exported.add(feature)
        return worst

    def drop_drift(self, version: str) -> None:
        """Remove every drift series of ``version`` (it is no longer served)."""
        for gauge in (self.drift, self.drift_rows, self.prediction_drift):
            with contextlib.suppress(KeyError):
                gauge.remove(self.model, version)
        for feature in self._drift_features.pop(version, set()):
            with contextlib.suppress(KeyError):
                self.feature_drift.remove(self.model, version, feature)
