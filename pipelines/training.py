"""The training pipeline: ingest -> validate -> prep -> train (sweep) -> compress -> evaluate ->
register.

Pure DSL, no logic: every step is a component in datawheel.components.
"""

from datawheel.components.data import ingest, prep, validate
from datawheel.components.evaluation import evaluate
from datawheel.components.registry import register
from datawheel.components.training import compress as compress_model
from datawheel.components.training import lr_grid, pick_best, train
from datawheel.pipelines.platform import on_cluster
from kfp import dsl
from kfp.dsl import Model

SWEEP_PARALLELISM = 4  # sweep trials trained at once


@dsl.pipeline(
    name="datawheel-training",
    description="Ingest, validate, prep, train, compress, evaluate against the champion, register.",
)
def training(
    source: str = "digits",
    store: str = "file://.datawheel",
    dataset_name: str = "",
    label: str = "label",
    image_size: int = 16,
    model_name: str = "",
    model_kind: str = "mlp",
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 0.001,
    seed: int = 0,
    split_seed: int = 0,
    sweep_learning_rates: str = "",
    margin: float = 0.0,
    transfer_from: str = "",
    compress: str = "auto",
    distill_temperature: float = 4.0,
    distill_alpha: float = 0.7,
    accuracy_tolerance: float = 0.005,
    latency_budget_ms: float = 0.0,
) -> str:
    data = ingest(
        store=store, source=source, dataset_name=dataset_name, label=label, image_size=image_size
    )
    data.set_display_name("ingest")
    on_cluster(data, "ingest")
    checked = on_cluster(
        validate(store=store, dataset_name=data.outputs["name"], version=data.outputs["version"]),
        "validate",
    )
    splits = prep(
        store=store,
        dataset_name=data.outputs["name"],
        version=data.outputs["version"],
        split_seed=split_seed,
    ).after(checked)
    on_cluster(splits, "prep")
    grid = on_cluster(
        lr_grid(learning_rate=learning_rate, sweep_learning_rates=sweep_learning_rates), "lr-grid"
    )
    with dsl.ParallelFor(grid.output, parallelism=SWEEP_PARALLELISM) as lr:
        trained = train(
            splits=splits.outputs["splits"],
            model_kind=model_kind,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            seed=seed,
            store=store,
            transfer_from=transfer_from,
        )
        on_cluster(trained, "train")
    best = on_cluster(
        pick_best(
            val_accuracies=dsl.Collected(trained.outputs["val_accuracy"]),
            model_uris=dsl.Collected(trained.outputs["model_uri"]),
        ),
        "pick-best",
    )
    chosen = dsl.importer(artifact_uri=best.output, artifact_class=Model, reimport=False)
    shrunk = compress_model(
        splits=splits.outputs["splits"],
        model=chosen.output,
        mode=compress,
        temperature=distill_temperature,
        alpha=distill_alpha,
        seed=seed,
    )
    on_cluster(shrunk, "compress")
    scored = evaluate(
        store=store,
        model_name=model_name,
        dataset_name=data.outputs["name"],
        margin=margin,
        seed=seed,
        splits=splits.outputs["splits"],
        model=shrunk.outputs["compressed"],
        accuracy_tolerance=accuracy_tolerance,
        latency_budget_ms=latency_budget_ms,
    )
    on_cluster(scored, "evaluate")
    with dsl.If(scored.outputs["decision"] == "promote", name="promote"):
        champion = register(
            store=store,
            model_name=model_name,
            dataset_name=data.outputs["name"],
            dataset_version=data.outputs["version"],
            evaluation=scored.outputs["evaluation"],
            alias="champion",
            model=shrunk.outputs["compressed"],
            report=scored.outputs["html_report"],
        )
        on_cluster(champion, "register")
    with dsl.Else(name="reject"):
        challenger = register(
            store=store,
            model_name=model_name,
            dataset_name=data.outputs["name"],
            dataset_version=data.outputs["version"],
            evaluation=scored.outputs["evaluation"],
            alias="challenger",
            model=shrunk.outputs["compressed"],
            report=scored.outputs["html_report"],
        )
        on_cluster(challenger, "register")
    return dsl.OneOf(champion.output, challenger.output)
