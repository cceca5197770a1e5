"""The demo's before/after summary: live accuracy, drift, dataset and model lineage, reports."""

from __future__ import annotations

import time
from typing import Any

from datawheel.flywheel.demo_traffic import Wave

__all__ = ["print_summary"]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _drift_line(store: str, ref: str) -> str:
    from datawheel.errors import DatawheelError
    from datawheel.orchestration.drift_report import run_drift

    try:
        run = run_drift(store, model=ref, since="1h")
    except DatawheelError as exc:
        return f"not compared ({exc})"
    r = run.report
    verdict = "DRIFT" if r.dataset_drift else "no drift"
    return f"{verdict}: {len(r.drifted_features)} of {len(r.features)} features ({run.current})"


def _aliases(store: Any, model: str) -> dict[str, str]:
    from datawheel import registry

    out: dict[str, str] = {}
    for alias in registry.ALIASES:
        try:
            out.setdefault(registry.resolve(store, model, alias).version, alias)
        except Exception:  # an alias not set (or unreadable) just shows no alias
            continue
    return out


def print_summary(
    store_uri: str,
    model: str,
    before: Wave,
    after: Wave,
    before_version: str,
    after_version: str,
    started: float,
) -> None:
    from datawheel import registry
    from datawheel.data import versions as datasets
    from datawheel.storage import location, open_store

    st = open_store(store_uri)
    _say()
    _say("== the flywheel, before and after")
    _say(f"live accuracy      {before.accuracy:7.1%}  ->  {after.accuracy:.1%}")
    _say(f"served version     {before_version:>7}  ->  {after_version}")
    _say(
        f"drift of {model}:{before_version}  {_drift_line(store_uri, f'{model}:{before_version}')}"
    )
    mv = registry.resolve(st, model, "champion")
    dataset = str(mv.card.get("dataset", model))
    _say()
    _say(f"dataset {dataset}: versions, oldest first")
    for dv in datasets.list_versions(st, dataset):
        lin = dv.manifest.get("lineage") or {}
        if lin:
            what = (
                f"parent {lin.get('parent')}, +{lin.get('labels', 0)} production labels "
                f"({lin.get('corrections', 0)} corrections, {lin.get('confirmations', 0)} "
                f"confirmations, {lin.get('conflicts', 0)} conflicts), reason: "
                f"{lin.get('reason') or '-'}"
            )
        else:
            what = f"ingested from {dv.manifest.get('source')}"
        _say(f"  {dv.version}  {dv.manifest.get('rows')} rows  {what}")
    _say()
    _say(f"model {model}: versions")
    aliases = _aliases(st, model)
    for v in registry.list_versions(st, model):
        acc = v.metrics.get("test_accuracy")
        shown = f"{acc:.4f}" if acc is not None else "-"
        _say(
            f"  {v.version}  {aliases.get(v.version, '-'):>10}  test_accuracy {shown}  "
            f"dataset {v.card.get('dataset')}@{v.card.get('dataset_version')}  "
            f"decision {v.card.get('decision')}: {v.card.get('reason')}"
        )
        _say(f"      report: {location(st, f'models/{model}/versions/{v.version}/report.html')}")
    _say()
    _say(f"demo finished in {time.monotonic() - started:.0f} s")
