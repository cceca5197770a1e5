"""The flywheel pipeline: harvest -> validate -> drift-report -> prep -> train -> compress ->
evaluate -> register (promote or reject).

Production labels become the next dataset version and the model is retrained on it, by
default fine-tuning the champion's weights. Pure DSL, no logic: every step is a component in
datawheel.components. The evaluator's decision picks the alias the register step sets
(``champion``, or ``challenger`` for a rejected model, which is never rolled out). When the
ledger window holds no new labels the run ends after the harvest with the decision
``unchanged``.
"""

from datawheel.components.data import prep, validate
from datawheel.components.evaluation import evaluate
from datawheel.components.flywheel import decision_alias, harvest, unchanged
from datawheel.components.monitoring import drift_report
from datawheel.components.registry import register
from datawheel.components.training import compress as compress_model
from datawheel.components.training import train
from datawheel.pipelines.platform import on_cluster
from kfp import dsl


@dsl.pipeline(
    name="datawheel-flywheel",
    description="Harvest production labels into a dataset version, retrain, compress, register.",
)
def flywheel(
    store: str = "file://.datawheel",
    model_name: str = "digits",
    since: str = "",
    until: str = "",
    reason: str = "manual",
    warm_start: bool = True,
    model_kind: str = "mlp",
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 0.001,
    seed: int = 0,
    split_seed: int = 0,
    margin: float = 0.0,
    drift_window: str = "24h",
    canary: bool = False,
    production_tolerance: float = 0.0,
    compress: str = "auto",
    distill_temperature: float = 4.0,
    distill_alpha: float = 0.7,
    accuracy_tolerance: float = 0.005,
    latency_budget_ms: float = 0.0,
) -> str:
    new = harvest(store=store, model_name=model_name, since=since, until=until, reason=reason)
    on_cluster(new, "harvest")
    with dsl.If(new.outputs["created"] == True, name="new-labels"):  # noqa: E712 (KFP DSL)
        checked = on_cluster(
            validate(store=store, dataset_name=new.outputs["name"], version=new.outputs["version"]),
            "validate",
        )
        drift = drift_report(
            store=store,
            reference="",
            current="",
            model=model_name,
            since=drift_window,
            label="",
            required=False,
        ).after(checked)
        on_cluster(drift, "drift-report")
        splits = prep(
            store=store,
            dataset_name=new.outputs["name"],
            version=new.outputs["version"],
            split_seed=split_seed,
        ).after(checked)
        on_cluster(splits, "prep")
        trained = train(
            splits=splits.outputs["splits"],
            model_kind=model_kind,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            store=store,
            transfer_from="",
            warm_start=warm_start,
            model_name=model_name,
        )
        on_cluster(trained, "train")
        shrunk = compress_model(
            splits=splits.outputs["splits"],
            model=trained.outputs["model"],
            mode=compress,
            temperature=distill_temperature,
            alpha=distill_alpha,
            seed=seed,
        )
        on_cluster(shrunk, "compress")
        scored = evaluate(
            store=store,
            model_name=model_name,
            dataset_name=new.outputs["name"],
            margin=margin,
            seed=seed,
            splits=splits.outputs["splits"],
            model=shrunk.outputs["compressed"],
            production_tolerance=production_tolerance,
            accuracy_tolerance=accuracy_tolerance,
            latency_budget_ms=latency_budget_ms,
        )
        on_cluster(scored, "evaluate")
        alias = on_cluster(decision_alias(decision=scored.outputs["decision"]), "decision-alias")
        alias.set_display_name("promote-or-reject")
        registered = register(
            store=store,
            model_name=model_name,
            dataset_name=new.outputs["name"],
            dataset_version=new.outputs["version"],
            evaluation=scored.outputs["evaluation"],
            alias=alias.output,
            model=shrunk.outputs["compressed"],
            report=scored.outputs["html_report"],
            canary=canary,
        )
        on_cluster(registered, "register")
    with dsl.Else(name="no-new-labels"):
        same = on_cluster(
            unchanged(
                store=store,
                model_name=model_name,
                dataset_name=new.outputs["name"],
                version=new.outputs["version"],
            ),
            "unchanged",
        )
    return dsl.OneOf(registered.output, same.output)
