"""Validate step: commit the candidate version, or reject it and fail the run.

Every failure here is about the data, so it is deterministic: the step is not retried on
a cluster (see ``RETRIED_STEPS``), and its one-line error names the anomalies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import open_store

__all__ = ["validate_step"]


@pipeline_step
def validate_step(store: str, dataset: str, version: str, report_path: str) -> dict[str, Any]:
    """Check the candidate (absolute checks, then against the reference); commit or reject."""
    from datawheel.data.gate import admit

    admission = admit(open_store(store), dataset, version)
    report = admission.report
    Path(report_path).write_text(report.markdown())
    log(report.summary())
    log(f"dataset {dataset}@{version}: {admission.outcome} (report: {admission.report_key})")
    report.raise_if_hard()
    return {"ok": report.ok, "warnings": len(report.anomalies), "outcome": admission.outcome}
