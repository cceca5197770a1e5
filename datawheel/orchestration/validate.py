"""Validate step: check a dataset version against its reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datawheel.data import versions as datasets
from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import open_store

__all__ = ["validate_step"]


@pipeline_step
def validate_step(store: str, dataset: str, version: str, report_path: str) -> dict[str, Any]:
    """Check the version against the dataset's reference; fail on hard anomalies."""
    from datawheel.data.validation import reference_for, validate

    st = open_store(store)
    dv = datasets.get_version(st, dataset, version)
    reference = reference_for(st, dataset) or dv
    report = validate(dv, reference)
    Path(report_path).write_text(report.markdown())
    log(report.summary())
    if not report.ok and dv.version != reference.version:
        datasets.quarantine(st, dv, report.markdown())
    report.raise_if_hard()
    return {"ok": report.ok, "warnings": len(report.anomalies)}
