"""Harvest step: the model's labeled production rows become a candidate dataset version.

The flywheel pipeline's first step. :func:`datawheel.flywheel.harvest.harvest` joins the
ledger's predictions with their feedback and writes a candidate (the validate step after it
commits or rejects it, as for any ingested version). ``created`` is false when the window
holds no new labels: the pipeline then ends after this step, saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datawheel.orchestration.step import MetricsSink, log, pipeline_step
from datawheel.storage import open_store

__all__ = ["harvest_step"]


@pipeline_step
def harvest_step(
    store: str,
    model_name: str,
    since: str,
    until: str,
    reason: str,
    report_path: str,
    metrics: MetricsSink,
) -> dict[str, Any]:
    """Harvest ``model_name``'s ledger window ``[since, until)`` (ISO-8601 or epoch seconds;
    empty: from the start / until now); write the Markdown report; return the result."""
    from datawheel.flywheel.harvest import harvest, parse_time

    result = harvest(
        open_store(store),
        model_name,
        since=parse_time(since) if since.strip() else None,
        until=parse_time(until) if until.strip() else None,
        reason=reason,
        validate=False,
    )
    out = result.to_json()
    Path(report_path).write_text(_markdown(out, result.message, reason))
    for key in ("labeled_rows", "corrections", "confirmations", "conflicts"):
        metrics.log_metric(key, float(out[key]))
    log(result.message)
    return {**out, "name": out["dataset"]}


def _markdown(out: dict[str, Any], message: str, reason: str) -> str:
    rows = "\n".join(f"| {k} | {out[k]} |" for k in out)
    why = f"Started because: {reason}\n\n" if reason else ""
    return (
        f"# Harvest of {out['dataset']}\n\n{why}{message}\n\n| field | value |\n|---|---|\n{rows}\n"
        f"\n```json\n{json.dumps(out, indent=2)}\n```\n"
    )


@pipeline_step
def unchanged_summary(store: str, model_name: str, dataset: str, version: str) -> str:
    """The run summary when the harvest found nothing new: the champion stays, untouched."""
    from datawheel import registry

    st = open_store(store)
    try:
        champion = registry.resolve(st, model_name, "champion")
        model_version, metrics = champion.version, champion.metrics
    except Exception:  # no champion yet: nothing serves, nothing to keep
        model_version, metrics = "-", {}
    reason = "no new labels in the ledger window: nothing to retrain on"
    log(f"{model_name}: {reason}; champion {model_version} stays")
    summary = {
        "dataset": dataset,
        "dataset_version": version,
        "model": model_name,
        "model_version": model_version,
        "alias": "champion",
        "decision": "unchanged",
        "reason": reason,
        "metrics": metrics,
        "report": None,
    }
    return json.dumps(summary, sort_keys=True)


def alias_for(decision: str) -> str:
    """``champion`` for a promote decision, ``challenger`` for anything else: a model the
    evaluator did not promote is never given an alias that serves."""
    return "champion" if decision == "promote" else "challenger"
