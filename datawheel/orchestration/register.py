"""Register step: store the model version with its card and point an alias at it.

Which alias the version gets follows the evaluation's decision:

* ``reject`` -> ``challenger``, always: a rejected model is never rolled out. Asking for
  any other alias with a rejection is refused before anything is written.
* ``promote`` without canaries -> ``champion`` (compare-and-swap, expecting the champion
  the evaluation compared against); the servers following it hot-swap.
* ``promote`` with canaries -> ``candidate``: only ``datawheel deploy canary`` rolls it
  out, and it moves the champion if the canary passes. The champion must still be the one
  the evaluation compared against (checked here, and again when the canary starts); the
  candidate record itself moves by compare-and-swap. With no champion yet there is nothing
  to run a canary against: the first model becomes champion directly.

"With canaries" is the ``canary`` parameter OR the model's store setting
(``models/NAME/deploy.json``, :mod:`datawheel.registry.deploy_settings`).

A re-run that trained the same model again (the same weights and transform, e.g. from the
checkpoint cache) registers nothing: the version that holds it is reused and the summary
says ``reused``; if that version is the champion or the candidate it keeps that alias
rather than becoming its own challenger.

The card records ``evaluated_against`` (the champion the evaluation compared with, which
the canary checks) and, for a dataset version made by a harvest, ``trigger``: the reason
in its lineage (why the flywheel ran).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datawheel import registry
from datawheel.data.versions import get_version
from datawheel.errors import DatawheelError
from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import Store, location, open_store

__all__ = ["register_step", "target_alias"]


def target_alias(alias: str, decision: str, canary: bool, champion_seen: str | None) -> str:
    """The alias a registered model gets (see the module docstring)."""
    if decision != "promote":
        if alias != "challenger":
            raise DatawheelError(
                f"the evaluation decided {decision!r}, so the model can only become the "
                f"challenger, not the {alias}: a rejected model is never rolled out",
                "register it with alias 'challenger' (the pipeline's reject branch does)",
            )
        return "challenger"
    if alias == "candidate" or (alias == "champion" and canary):
        return "candidate" if champion_seen is not None else "champion"
    return alias


def _trigger(st: Store, dataset: str, version: str) -> str | None:
    """Why the dataset version was made, when a harvest made it (its lineage's reason)."""
    try:
        lineage = get_version(st, dataset, version).manifest.get("lineage")
    except DatawheelError:  # not in the store (a test, a foreign version): no trigger
        return None
    reason = lineage.get("reason") if isinstance(lineage, dict) else None
    return str(reason) if reason else None


def _check_champion(st: Store, name: str, seen: str | None) -> None:
    """A candidate is only worth a canary against the champion it was compared with."""
    record = registry.get_alias(st, name, "champion")
    now = record["version"] if record else None
    if now != seen:
        raise registry.AliasMovedError(
            f"{name}@champion points at {now or 'nothing'}, not {seen or 'nothing'} as the "
            "evaluation saw: it moved after the decision was made",
            "re-run the evaluation against the current champion",
        )


def _held_by(st: Store, name: str, version: str) -> str | None:
    """``champion`` or ``candidate`` when that alias points at ``version``, else None."""
    for alias in ("champion", "candidate"):
        record = registry.get_alias(st, name, alias)
        if record and record["version"] == version:
            return alias
    return None


def _point(st: Store, name: str, version: str, alias: str, ev: dict[str, Any]) -> None:
    seen = ev.get("champion_version")
    if alias == "champion":  # only if it is still the one the evaluation compared against
        registry.promote(st, name, version, alias=alias, reason=ev["reason"], expect=seen)
    elif alias == "candidate":
        current = registry.get_alias(st, name, "candidate")
        champion = registry.get_alias(st, name, "champion")
        if (current and current["version"] == version) or (
            champion and champion["version"] == version  # a retry after the canary passed
        ):
            return
        _check_champion(st, name, seen)
        registry.promote(
            st, name, version, alias=alias, reason=f"candidate: {ev['reason']}", expect=registry.ANY
        )
    else:
        registry.promote(st, name, version, alias=alias, reason=ev["reason"], expect=registry.ANY)


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
    canary: bool = False,
) -> str:
    """Register the model (with its HTML report, if any) and point an alias at it:
    ``champion``, or ``candidate`` when the deployment uses canaries, for a promotion;
    ``challenger`` for a rejection.

    Returns the run summary as JSON.
    """
    model_name = model_name or dataset
    ev = json.loads(evaluation)
    st = open_store(store)
    use_canary = canary or registry.read_settings(st, model_name).canary
    target = target_alias(alias, ev["decision"], use_canary, ev.get("champion_version"))
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
        "evaluated_against": ev.get("champion_version"),
    }
    if ev.get("variants"):  # measured by the evaluate step on its machine; serve --variant auto
        card["variants"] = ev["variants"]
        card["serving_variant"] = ev.get("serving_variant") or {"name": "torchscript"}
    if trigger := _trigger(st, dataset, dataset_version):
        card["trigger"] = trigger
    report = Path(report_path) if report_path else None
    extra = {"report.html": report} if report and report.is_file() else {}
    mv = registry.register(st, model_name, model_dir, card=card, extra_files=extra)
    held = _held_by(st, model_name, mv.version) if mv.reused else None
    if held:  # the same model again: it keeps what it is, it does not become its own rival
        target = held
        log(f"{model_name}:{mv.version} already holds this model (the same weights and "
            f"transform) and is the {held}: reused it, registered nothing new")  # fmt: skip
    else:
        _point(st, model_name, mv.version, target, ev)
        verb = "reused" if mv.reused else "registered"
        same = " (it already held this model: the same weights and transform)" if mv.reused else ""
        log(f"{verb} {model_name}:{mv.version} as {target}{same}")
    if target == "candidate":
        log(f"roll it out with 'datawheel deploy canary --model {model_name}'")
    summary = {
        "dataset": dataset,
        "dataset_version": dataset_version,
        "model": model_name,
        "model_version": mv.version,
        "alias": target,
        "reused": mv.reused,
        "canary": use_canary,
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
