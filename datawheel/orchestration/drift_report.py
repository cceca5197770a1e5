"""Drift report step: compare a reference with a current sample and write the reports.

Two ways to name what is compared (see :mod:`datawheel.orchestration.drift_inputs`):

* ``reference`` and ``current``: each a dataset ``NAME@VERSION`` in the store or a
  CSV/Parquet file or URI (``label`` names a column that is not a feature);
* ``model`` (``NAME``, ``NAME@alias``, ``NAME:vN``): the version's drift reference (its
  training split) against the rows it served in the last ``since`` (a ledger window), with
  prediction drift (served classes against its test-split predictions) and label drift
  (feedback against the training labels).

:func:`run_drift` is what ``datawheel drift`` and the ``drift-report`` component share;
:func:`drift_report_step` writes the Markdown, HTML and KFP metrics of one comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from datawheel.errors import DatawheelError
from datawheel.monitoring.engine import compare
from datawheel.monitoring.verdict import DriftConfig, DriftReport, FeatureDrift
from datawheel.orchestration.drift_inputs import (
    Sample,
    check_features,
    ledger_window,
    load_sample,
    model_reference,
    parse_since,
)
from datawheel.orchestration.step import MetricsSink, log, pipeline_step

__all__ = ["DriftRun", "drift_markdown", "drift_report_step", "run_drift", "write_reports"]


@dataclass(frozen=True)
class DriftRun:
    report: DriftReport
    reference: str  # names, for people
    current: str
    notes: list[str]


def _store(uri: str | None) -> Any:
    from datawheel.storage import open_store

    return open_store(uri or None)


def compare_samples(
    reference: Sample, current: Sample, config: DriftConfig | None = None
) -> DriftReport:
    """Check the feature columns match, then compare (a Parquet current streams)."""
    features = check_features(reference, current)
    ref: Any = (
        reference.data[features] if isinstance(reference.data, pd.DataFrame) else reference.data
    )
    cur: Any = current.data[features] if isinstance(current.data, pd.DataFrame) else current.data
    return compare(
        ref,
        cur,
        config=config,
        features=features,
        reference_labels=reference.labels,
        reference_predictions=reference.predictions,
        current_labels=current.labels,
        current_predictions=current.predictions,
    )


def run_drift(
    store: str | None,
    reference: str = "",
    current: str = "",
    *,
    model: str = "",
    since: str = "24h",
    label: str = "",
    config: DriftConfig | None = None,
) -> DriftRun:
    """Load both sides and compare them (see the module docstring)."""
    if model:
        if reference or current:
            raise DatawheelError(
                "pass either REFERENCE and CURRENT or --model, not both",
                "drop the samples to compare the model's reference with its ledger window",
            )
        window = parse_since(since)
        st = _store(store)
        ref, mv = model_reference(st, model)
        cur = ledger_window(st, mv, ref.features, window, span=since)
        return DriftRun(compare_samples(ref, cur, config), ref.name, cur.name, ref.notes)
    if not reference or not current:
        raise DatawheelError(
            "nothing to compare", "pass REFERENCE and CURRENT samples, or --model NAME[@alias]"
        )
    ref = load_sample(reference, store, label=label)
    cur = load_sample(current, store, label=label or ref.label_column, stream=True)
    if not label and cur.label_column and not ref.label_column:
        ref = load_sample(reference, store, label=cur.label_column)
    return DriftRun(compare_samples(ref, cur, config), ref.name, cur.name, [])


def _cell(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x).replace("|", "\\|")


def _row(f: FeatureDrift) -> str:
    state = "**DRIFT**" if f.drifted else ("no" if f.verdict else "no verdict")
    cells = [f.name, f.kind, f.test, f.statistic, f.p_value, f.p_adjusted, f.threshold, f.psi]
    return "| " + " | ".join(_cell(c) for c in cells) + f" | {state} | {_cell(f.notes or '')} |"


def drift_markdown(run: DriftRun) -> str:
    """The report as Markdown (the KFP UI renders it): verdict, rule, every feature."""
    r = run.report
    verdict = "DATASET DRIFT" if r.dataset_drift else "no dataset drift"
    head = "| feature | kind | test | statistic | p-value | BH-adjusted | threshold | psi |"
    lines = [
        f"# Drift: {verdict}",
        "",
        f"{len(r.drifted_features)} of {len(r.features)} features drifted. Reference "
        f"`{run.reference}` ({r.reference_rows:,} rows), current `{run.current}` "
        f"({r.current_rows:,} rows).",
        "",
        f"Rule: {r.rule}.",
        *[f"\n{note}." for note in [*run.notes, *r.notes]],
        "",
    ]
    if r.drifted_features:
        lines += ["Drifted: " + ", ".join(f"`{n}`" for n in r.drifted_features), ""]
    classes = [f for f in (r.prediction, r.label) if f is not None]
    table = [f"{head} drifted | notes |", "|---" * 10 + "|"]
    if classes:
        lines += ["## Predictions and labels", "", *table, *map(_row, classes), ""]
    lines += ["## Features, by severity", "", *table, *map(_row, r.features)]
    return "\n".join(lines) + "\n"


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DatawheelError(
            f"cannot write the report to {path} ({exc.strerror or exc})",
            "pass a path in a folder that exists and is writable",
        ) from None


def write_reports(
    run: DriftRun,
    *,
    report_path: str = "",
    html_path: str = "",
    metrics: MetricsSink | None = None,
    title: str = "Drift report",
) -> None:
    """Markdown, HTML (self-contained) and metrics of one comparison, each where asked."""
    from datawheel.monitoring.report_html import drift_html

    r = run.report
    if report_path:
        _write(report_path, drift_markdown(run))
    if html_path:
        page = drift_html(r, title=title, reference_name=run.reference, current_name=run.current)
        _write(html_path, page)
    if metrics is not None:
        values = {
            "dataset_drift": float(r.dataset_drift),
            "drifted_features": float(len(r.drifted_features)),
            "share_drifted": r.share_drifted,
            "worst_severity": max((f.severity for f in r.features), default=0.0),
            "reference_rows": float(r.reference_rows),
            "current_rows": float(r.current_rows),
        }
        for key, f in (("prediction", r.prediction), ("label", r.label)):
            if f is not None and f.statistic is not None:
                values[f"{key}_drift_js"] = float(f.statistic)
        for name, value in values.items():
            metrics.log_metric(name, value)


@pipeline_step
def drift_report_step(
    store: str,
    reference: str,
    current: str,
    model: str,
    since: str,
    label: str,
    report_path: str,
    html_path: str,
    metrics: MetricsSink,
    required: bool = True,
) -> dict[str, Any]:
    """Compare, write the Markdown/HTML/metrics, and return the summary (no histograms).

    With ``required`` false (the flywheel's report, informative only), a comparison that
    cannot be made (no ledger rows in the window, say) writes reports saying why and
    returns ``{"dataset_drift": False, "skipped": why}`` instead of failing the run.
    """
    try:
        run = run_drift(store, reference, current, model=model, since=since, label=label)
    except DatawheelError as exc:
        if required:
            raise
        why = str(exc)
        log(f"drift: not compared ({why})")
        if report_path:
            _write(report_path, f"# Drift: not compared\n\n{why}\n")
        if html_path:
            _write(html_path, f"<!doctype html><title>Drift</title><p>Not compared: {why}</p>")
        metrics.log_metric("dataset_drift", 0.0)
        return {"dataset_drift": False, "skipped": why}
    write_reports(run, report_path=report_path, html_path=html_path, metrics=metrics)
    r = run.report
    log(
        f"drift: {len(r.drifted_features)}/{len(r.features)} features drifted, dataset drift "
        f"{'yes' if r.dataset_drift else 'no'} ({run.reference} vs {run.current})"
    )
    out = r.to_json_dict()
    for f in out["features"]:
        f.pop("histogram", None)
    out.update(reference=run.reference, current=run.current)
    return out
