"""Drift verdicts: the configuration, per-feature results, the dataset rule and the report.

:func:`judge` turns every feature's statistics (:class:`~datawheel.monitoring.feature_drift.
Measured`) into a :class:`FeatureDrift` after one Benjamini-Hochberg correction across all
the features' p-values, ranks them by severity and applies the dataset rule (see
:mod:`datawheel.monitoring.engine` for the rule in words).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from datawheel.errors import DatawheelError
from datawheel.monitoring import stats
from datawheel.monitoring.feature_drift import Measured

__all__ = ["DriftConfig", "DriftReport", "FeatureDrift", "judge", "judge_classes", "rule_text"]


@dataclass(frozen=True)
class DriftConfig:
    bins: int = 10  # PSI bins at reference quantiles
    alpha: float = 0.05  # Benjamini-Hochberg false-discovery rate for KS / chi-square
    psi_threshold: float = 0.1
    w1_threshold: float = 0.1  # Wasserstein-1 divided by the reference std
    js_threshold: float = 0.1  # Jensen-Shannon distance, base 2
    missing_threshold: float = 0.1  # absolute change of a feature's missing rate
    dataset_share: float = 0.0  # dataset drift: share of drifted features >= this, and >= 1
    min_rows: int = 20  # fewer non-missing current values: statistics, no verdict
    eps: float = 1e-4  # PSI floor for empty bins
    grid_points: int = 10_000  # KS/W1 grid per numeric feature (streaming bound ~ 1/this)
    batch_rows: int = 262_144  # Parquet rows per streamed batch
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))

    def __post_init__(self) -> None:
        checks = [
            (self.bins >= 2, "bins must be at least 2"),
            (0 < self.alpha < 1, "alpha must be in (0, 1)"),
            (0 <= self.dataset_share <= 1, "dataset_share must be in [0, 1]"),
            (self.min_rows >= 1, "min_rows must be at least 1"),
            (self.grid_points >= 10, "grid_points must be at least 10"),
            (self.batch_rows >= 1, "batch_rows must be at least 1"),
            (
                min(self.psi_threshold, self.w1_threshold, self.js_threshold) > 0,
                "thresholds must be positive",
            ),
        ]
        for ok, problem in checks:
            if not ok:
                raise DatawheelError(f"drift configuration: {problem}", "fix the setting")


def _clean(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # "numeric" | "categorical" | "prediction" | "label"
    test: str  # "psi" | "wasserstein" | "jensen_shannon" | "missing_rate"
    statistic: float | None
    p_value: float | None  # KS (numeric) or chi-square; None where there is no test
    threshold: float
    drifted: bool
    psi: float | None = None
    notes: str = ""
    p_adjusted: float | None = None  # Benjamini-Hochberg
    ks: float | None = None
    ks_error: float | None = None
    wasserstein: float | None = None
    w1_error: float | None = None
    chi2: float | None = None
    js: float | None = None
    missing_reference: float = 0.0  # missing rates
    missing_current: float = 0.0
    new_categories: dict[str, int] = field(default_factory=dict)
    rows: int = 0  # non-missing current values
    verdict: bool = True  # False: too few values to judge
    severity: float = 0.0  # statistic / threshold, for ranking
    histogram: dict[str, list[Any]] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        head = ["name", "test", "statistic", "p_value", "threshold", "drifted"]
        return _clean({k: d[k] for k in head} | {k: v for k, v in d.items() if k not in head})  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DriftReport:
    features: list[FeatureDrift]  # drifted first, then by severity
    drifted_features: list[str]
    dataset_drift: bool
    rule: str
    reference_rows: int
    current_rows: int
    prediction: FeatureDrift | None = None
    label: FeatureDrift | None = None
    notes: list[str] = field(default_factory=list)
    config: DriftConfig = field(default_factory=DriftConfig)

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def to_json_dict(self) -> dict[str, Any]:
        """``{"features": [{"name", "test", "statistic", "p_value", "threshold",
        "drifted", ...}], "drifted_features", "dataset_drift", "reference_rows",
        "current_rows"}`` plus the rule, notes, prediction and label drift: standard JSON."""
        return {
            "features": [f.to_json_dict() for f in self.features],
            "drifted_features": list(self.drifted_features),
            "dataset_drift": self.dataset_drift,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "share_drifted": self.share_drifted,
            "rule": self.rule,
            "notes": list(self.notes),
            "prediction_drift": self.prediction.to_json_dict() if self.prediction else None,
            "label_drift": self.label.to_json_dict() if self.label else None,
            "config": _clean(asdict(self.config)),
        }


def rule_text(cfg: DriftConfig) -> str:
    dataset = (
        "the dataset drifts when any one feature drifts"
        if cfg.dataset_share == 0
        else f"the dataset drifts when at least {cfg.dataset_share:.0%} of features drift"
    )
    return (
        f"a numeric feature drifts when KS is significant after Benjamini-Hochberg at "
        f"FDR {cfg.alpha:g} and PSI >= {cfg.psi_threshold:g} or Wasserstein-1/std >= "
        f"{cfg.w1_threshold:g}; a categorical one when chi-square is significant after the "
        f"same correction and Jensen-Shannon >= {cfg.js_threshold:g}; either when its "
        f"missing rate moves by >= {cfg.missing_threshold:g} (p <= {cfg.alpha:g}); "
        f"{dataset}; fewer than {cfg.min_rows} current values get no verdict"
    )


def _rate(part: int, rest: int) -> float:
    return part / (part + rest) if part + rest else 0.0


def _feature(m: Measured, rejected: bool, adjusted: float, cfg: DriftConfig) -> FeatureDrift:
    ref = m.ref
    notes = list(m.notes)
    verdict = m.rows >= cfg.min_rows and m.p_value is not None
    miss_ref, miss_cur = _rate(ref.missing, ref.rows), _rate(m.missing, m.rows)
    missing_drift, p_missing = False, None
    if abs(miss_cur - miss_ref) >= 0.005:
        notes.append(f"missing rate {miss_ref:.1%} in the reference, {miss_cur:.1%} now")
    if abs(miss_cur - miss_ref) >= cfg.missing_threshold and m.rows + m.missing >= cfg.min_rows:
        _, p_missing = stats.chi_square([ref.rows, ref.missing], [m.rows, m.missing])
        missing_drift = p_missing <= cfg.alpha
    if ref.kind == "numeric":
        psi_r = (m.psi or 0.0) / cfg.psi_threshold
        w_r = (m.wasserstein or 0.0) / cfg.w1_threshold
        test, statistic, threshold = (
            ("psi", m.psi, cfg.psi_threshold)
            if psi_r >= w_r
            else ("wasserstein", m.wasserstein, cfg.w1_threshold)
        )
        effect = max(psi_r, w_r) >= 1.0
    else:
        test, statistic, threshold = "jensen_shannon", m.js, cfg.js_threshold
        effect = (m.js or 0.0) >= cfg.js_threshold
    distribution = bool(verdict and rejected and effect)
    p_value = m.p_value
    if missing_drift and not distribution:
        test, statistic, threshold, p_value = (
            "missing_rate",
            abs(miss_cur - miss_ref),
            cfg.missing_threshold,
            p_missing,
        )
    if 0 < m.rows < cfg.min_rows:
        notes.append(f"only {m.rows} current values: too small for a verdict")
    severity = (statistic or 0.0) / threshold if verdict or missing_drift else 0.0
    return FeatureDrift(
        ref.name,
        ref.kind,
        test,
        statistic,
        p_value,
        threshold,
        distribution or missing_drift,
        m.psi,
        "; ".join(notes),
        None if math.isnan(adjusted) else float(adjusted),
        m.ks,
        m.ks_error,
        m.wasserstein,
        m.w1_error,
        m.chi2,
        m.js,
        miss_ref,
        miss_cur,
        dict(m.new_categories),
        m.rows,
        verdict,
        float(severity) if math.isfinite(severity) else 0.0,
        dict(m.histogram),
    )


def judge(
    measured: list[Measured], rows: int, cfg: DriftConfig
) -> tuple[list[FeatureDrift], bool, str, list[str]]:
    """(features ranked by severity, dataset drift, the rule, report notes)."""
    p = np.array(
        [
            m.p_value if m.p_value is not None and m.rows >= cfg.min_rows else np.nan
            for m in measured
        ],
        np.float64,
    )
    rejected = stats.benjamini_hochberg(p, cfg.alpha)
    adjusted = stats.bh_adjusted(p)
    out = [_feature(m, bool(rejected[i]), adjusted[i], cfg) for i, m in enumerate(measured)]
    out.sort(key=lambda f: (not f.drifted, -f.severity, f.name))
    drifted = sum(f.drifted for f in out)
    dataset = drifted > 0 and drifted / max(len(out), 1) >= cfg.dataset_share
    notes = []
    if rows < cfg.min_rows:
        notes.append(
            f"the current sample has {rows} row{'s' if rows != 1 else ''}: too small for a "
            f"verdict (at least {cfg.min_rows} are needed); statistics are shown, nothing "
            "is called drifted"
        )
    return out, dataset, rule_text(cfg), notes


def judge_classes(
    name: str,
    rows: int,
    chi2: float | None,
    p: float | None,
    js: float | None,
    new: dict[str, int],
    hist: dict[str, list[Any]],
    cfg: DriftConfig,
) -> FeatureDrift:
    """Prediction or label drift: chi-square p <= alpha and Jensen-Shannon >= threshold."""
    verdict = rows >= cfg.min_rows and p is not None
    drifted = bool(verdict and p is not None and p <= cfg.alpha and (js or 0.0) >= cfg.js_threshold)
    notes = [] if verdict else [f"only {rows} current values: too small for a verdict"]
    if new:
        notes.append(f"{len(new)} classes absent from the reference: {sorted(new)[:5]}")
    return FeatureDrift(
        name,
        name,
        "jensen_shannon",
        js,
        p,
        cfg.js_threshold,
        drifted,
        notes="; ".join(notes),
        chi2=chi2,
        js=js,
        new_categories=new,
        rows=rows,
        verdict=verdict,
        severity=(js or 0.0) / cfg.js_threshold,
        histogram=hist,
    )
