"""Read a served version's traffic from Prometheus: a tiny HTTP API client plus the PromQL.

Only the instant-query endpoint (``GET /api/v1/query``) is used, with the standard library.
The queries read the metrics every ``datawheel serve`` exports, selected by the ``version``
label the server puts on them, so two versions behind one Service are told apart without
knowing which pod is which::

    sum(increase(datawheel_requests_total{model="m",version="v3",endpoint="infer"}[2m]))
    sum(increase(datawheel_requests_total{model="m",version="v3",endpoint="infer",code=~"5.."}[2m]))
    histogram_quantile(0.99, sum by (le) (rate(
        datawheel_request_duration_seconds_bucket{model="m",version="v3",endpoint="infer"}[2m])))

and, for live accuracy, the labels users sent back for the version's predictions (the
``version`` label of feedback is the version that made the prediction, whichever replica
took the feedback) since the canary started, ``R`` seconds ago::

    sum by (outcome) (increase(datawheel_feedback_total{model="m",version="v3"}[Rs]))
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from datawheel.deploy.canary_policy import Observation
from datawheel.errors import DatawheelError

__all__ = ["Prometheus", "PrometheusError", "feedback_counts", "observe", "validate_window"]

_WINDOW_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


class PrometheusError(DatawheelError):
    """Prometheus could not be reached or did not answer a query."""


def validate_window(window: str) -> str:
    """``window`` if it is a PromQL duration such as ``2m`` or ``1m30s``."""
    if not _WINDOW_RE.match(window):
        raise DatawheelError(
            f"query window {window!r} is not a PromQL duration",
            "pass a duration such as 30s, 2m or 1m30s",
        )
    return window


class Prometheus:
    """Instant queries against one Prometheus server."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise PrometheusError(
                f"Prometheus URL {url!r} is not an http(s) URL",
                "pass --prometheus http://HOST:9090",
            )
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant vector, evaluated at Unix time ``at`` (default: now): (labels, value)
        per series; NaN values are kept as NaN."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:  # 400/422/503 carry a JSON error
            raise PrometheusError(
                f"Prometheus at {self.url} answered {exc.code} to {promql!r}: {_error_of(exc)}",
                "check the query window and the --prometheus URL",
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(
                f"cannot reach Prometheus at {self.url}: {reason}",
                "pass --prometheus with a reachable server, for example after "
                "'kubectl -n monitoring port-forward svc/prometheus-operated 9090'",
            ) from None
        try:
            doc = json.loads(raw)
            if doc["status"] != "success":
                raise ValueError(doc.get("error", doc["status"]))
            data = doc["data"]
            if data["resultType"] == "scalar":
                return [({}, float(data["result"][1]))]
            if data["resultType"] != "vector":
                raise ValueError(f"result type {data['resultType']!r}, not an instant vector")
            return [(dict(s["metric"]), float(s["value"][1])) for s in data["result"]]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} gave an unusable answer to {promql!r}: {exc}",
                "point --prometheus at a Prometheus server (its HTTP API, /api/v1/query)",
            ) from None

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The sum of the vector's values; None when it is empty or NaN (no samples)."""
        values = [v for _, v in self.query(promql, at)]
        total = sum(values)
        return None if not values or math.isnan(total) else total


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


def _label_value(value: str) -> str:
    return json.dumps(value)  # a PromQL string literal: quotes and backslashes escaped


def _selector(model: str, version: str, matchers: str) -> str:
    sel = f"model={_label_value(model)},version={_label_value(version)}"
    if matchers.strip():
        sel += "," + matchers.strip().strip(",")
    return sel


def feedback_counts(
    prom: Prometheus,
    model: str,
    version: str,
    since_s: float,
    *,
    matchers: str = "",
    at: float | None = None,
) -> tuple[float, float]:
    """(labels, of which correct) received for ``model:version``'s predictions over the
    ``since_s`` seconds ending at ``at``."""
    at = time.time() if at is None else at
    span = f"{max(1, math.ceil(since_s))}s"
    counts = prom.query(
        "sum by (outcome) (increase(datawheel_feedback_total"
        f"{{{_selector(model, version, matchers)}}}[{span}]))",
        at,
    )
    by_outcome = {labels.get("outcome", ""): v for labels, v in counts if not math.isnan(v)}
    correct = by_outcome.get("correct", 0.0)
    return correct + by_outcome.get("incorrect", 0.0), correct


def observe(
    prom: Prometheus,
    model: str,
    version: str,
    window: str,
    *,
    matchers: str = "",
    at: float | None = None,
    labels_since_s: float | None = None,
) -> Observation:
    """Inference requests, 5xx answers and p99 latency of ``model:version`` over ``window``
    ending at Unix time ``at`` (default: now).

    All three queries are evaluated at the same instant, so the errors are a subset of the
    requests (a scrape landing between two queries would otherwise skew the ratio).
    ``matchers`` are extra label matchers (``namespace="datawheel"``) for a Prometheus that
    scrapes more than one deployment of the same model. With ``labels_since_s``, the
    feedback labels of the version's predictions over that many seconds are counted too
    (:func:`feedback_counts`), for live accuracy.
    """
    at = time.time() if at is None else at
    validate_window(window)
    sel = _selector(model, version, matchers) + ',endpoint="infer"'
    requests = prom.value(f"sum(increase(datawheel_requests_total{{{sel}}}[{window}]))", at)
    errors = prom.value(
        f'sum(increase(datawheel_requests_total{{{sel},code=~"5.."}}[{window}]))', at
    )
    p99 = prom.value(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(datawheel_request_duration_seconds_bucket{{{sel}}}[{window}])))",
        at,
    )
    labels, correct = (
        (0.0, 0.0)
        if labels_since_s is None
        else feedback_counts(prom, model, version, labels_since_s, matchers=matchers, at=at)
    )
    return Observation(
        requests=requests or 0.0, errors=errors or 0.0, p99_s=p99, labels=labels, correct=correct
    )
