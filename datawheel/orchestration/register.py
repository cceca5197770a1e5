"""Register step: store the model version with its card and point an alias at it."""

from __future__ import annotations

import json
from pathlib import Path

from datawheel import registry
from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import location, open_store

__all__ = ["register_step"]


@pipeline_step
def register_step(
    store: str,
    model_name: str,
    model_dir: str,
    dataset: str,
    dataset_version: str,
    evaluation: str,
    alias: str,
    report_path: str = "",
) -> str:
    """Register the model (with its HTML report, if any) and point ``alias`` at it.

    Returns the run summary as JSON.
    """
    model_name = model_name or dataset
    ev = json.loads(evaluation)
    train = json.loads(Path(model_dir, "train.json").read_text())
    metrics = {
        **train["metrics"],
        **{f"test_{k}": v for k, v in {**ev["metrics"], **ev.get("extra", {})}.items()},
    }
    card = {
        "dataset": dataset,
        "dataset_version": dataset_version,
        "metrics": metrics,
        "model_kind": train["config"]["model_kind"],
        "config": train["config"],
        "device": train["device"],
        "transfer_from": train.get("transfer_from", ""),
        "decision": ev["decision"],
        "reason": ev["reason"],
    }
    st = open_store(store)
    report = Path(report_path) if report_path else None
    extra = {"report.html": report} if report and report.is_file() else {}
    mv = registry.register(st, model_name, model_dir, card=card, extra_files=extra)
    # The champion only moves if it is still the one the evaluation compared against.
    expect = ev.get("champion_version") if alias == "champion" else registry.ANY
    registry.promote(st, model_name, mv.version, alias=alias, reason=ev["reason"], expect=expect)
    log(f"registered {model_name}:{mv.version} as {alias}")
    summary = {
        "dataset": dataset,
        "dataset_version": dataset_version,
        "model": model_name,
        "model_version": mv.version,
        "alias": alias,
        "decision": ev["decision"],
        "reason": ev["reason"],
        "champion_version": ev.get("champion_version"),
        "ci_low": ev.get("ci_low"),
        "ci_high": ev.get("ci_high"),
        "metrics": metrics,
        "report": location(st, f"models/{model_name}/versions/{mv.version}/report.html")
        if extra
        else None,
    }
    return json.dumps(summary, sort_keys=True)
