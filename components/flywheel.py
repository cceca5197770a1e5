"""Flywheel components: harvest the ledger into a candidate dataset version."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from datawheel.deploy.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def harvest(
    store: str,
    model_name: str,
    since: str,
    until: str,
    reason: str,
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("HarvestOutputs", [("name", str), ("version", str), ("created", bool)]):
    """Join the model's ledger predictions with their feedback into a candidate version of
    its dataset (parent rows + labeled production rows); ``created`` is false when the
    window holds no new labels."""
    from collections import namedtuple

    from datawheel.orchestration.harvest_step import harvest_step

    out = harvest_step(store, model_name, since, until, reason, report.path, metrics)
    return namedtuple("HarvestOutputs", ["name", "version", "created"])(
        out["name"], out["version"], bool(out["created"])
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def unchanged(store: str, model_name: str, dataset_name: str, version: str) -> str:
    """The run summary when the harvest found no new labels: the champion stays."""
    from datawheel.orchestration.harvest_step import unchanged_summary

    return unchanged_summary(store, model_name, dataset_name, version)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def decision_alias(decision: str) -> str:
    """The alias the evaluator's decision earns: ``champion`` for promote (the register step
    makes it ``candidate`` when the deployment uses canaries), else ``challenger``."""
    from datawheel.orchestration.harvest_step import alias_for

    return alias_for(decision)
