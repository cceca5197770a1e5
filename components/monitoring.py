"""Monitoring component: the drift report (Markdown, HTML and Metrics for the dashboard)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from datawheel.deploy.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def drift_report(
    store: str,
    reference: str,
    current: str,
    model: str,
    since: str,
    label: str,
    report: Output[Markdown],
    html_report: Output[HTML],
    metrics: Output[Metrics],
    required: bool = True,
) -> NamedTuple("DriftOutputs", [("dataset_drift", bool), ("summary", str)]):
    """Compare ``current`` with ``reference`` (dataset NAME@VERSION or CSV/Parquet URIs), or
    with ``model`` set (and the samples empty) the model's training-split reference with its
    ledger window of ``since``; the verdict, and the report without histograms as JSON.
    ``required`` false: a comparison that cannot be made is reported, not a failed run."""
    import json
    from collections import namedtuple

    from datawheel.orchestration.drift_report import drift_report_step

    out = drift_report_step(
        store,
        reference,
        current,
        model,
        since,
        label,
        report.path,
        html_report.path,
        metrics,
        required=required,
    )
    return namedtuple("DriftOutputs", ["dataset_drift", "summary"])(
        bool(out["dataset_drift"]), json.dumps(out)
    )
