"""The server's metrics that the canary gate reads: feedback counted per version, from 0."""

from __future__ import annotations

from prometheus_client import generate_latest

from datawheel.serving.telemetry import ServingMetrics


def _value(metrics: ServingMetrics, sample: str) -> float | None:
    text = generate_latest(metrics.registry).decode()
    lines = [ln for ln in text.splitlines() if ln.startswith(sample + " ")]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else None


def _feedback(version: str, outcome: str) -> str:
    return f'datawheel_feedback_total{{model="digits",outcome="{outcome}",version="{version}"}}'


def test_a_served_versions_feedback_series_exist_at_zero_so_increase_counts_the_first() -> None:
    metrics = ServingMetrics("digits")
    assert _value(metrics, _feedback("v1", "correct")) is None
    metrics.serving("v1", "abc", 0.1)
    assert _value(metrics, _feedback("v1", "correct")) == 0.0
    assert _value(metrics, _feedback("v1", "incorrect")) == 0.0
    metrics.feedback.labels("digits", "v1", "correct").inc()
    metrics.serving("v2", "def", 0.1)  # a hot swap: v1's labels still count, v2's start at 0
    assert _value(metrics, _feedback("v1", "correct")) == 1.0
    assert _value(metrics, _feedback("v2", "incorrect")) == 0.0
