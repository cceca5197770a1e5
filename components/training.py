"""Training components: the learning-rate grid, train, the sweep's pick, and compress."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from datawheel.deploy.images import CPU_IMAGE, TRAIN_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def lr_grid(learning_rate: float, sweep_learning_rates: str) -> list:
    """The sweep's learning rates, or just ``learning_rate`` when no sweep is asked for."""
    from datawheel.orchestration.sweep import lr_grid as grid

    return grid(learning_rate, sweep_learning_rates)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train(
    splits: Input[Dataset],
    model_kind: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    store: str,
    transfer_from: str,
    model: Output[Model],
    metrics: Output[Metrics],
    warm_start: bool = False,
    model_name: str = "",
) -> NamedTuple("TrainOutputs", [("val_accuracy", float), ("model_uri", str)]):
    """Fit on the training split (CUDA when present), export TorchScript + int8; with
    ``warm_start``, fine-tune from ``model_name``'s champion when there is one."""
    from collections import namedtuple

    from datawheel.orchestration.train import train_step

    result = train_step(
        splits.path,
        model.path,
        metrics,
        model_kind=model_kind,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        store=store,
        transfer_from=transfer_from,
        warm_start_from=f"{model_name}@champion" if warm_start and model_name else "",
    )
    model.metadata.update(result)
    return namedtuple("TrainOutputs", ["val_accuracy", "model_uri"])(
        result["val_accuracy"], model.uri
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def pick_best(val_accuracies: list, model_uris: list) -> str:
    """The URI of the sweep's model with the best validation accuracy."""
    from datawheel.orchestration.sweep import pick_best as pick

    return pick(val_accuracies, model_uris)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def compress(
    splits: Input[Dataset],
    model: Input[Model],
    mode: str,
    temperature: float,
    alpha: float,
    seed: int,
    compressed: Output[Model],
    metrics: Output[Metrics],
) -> bool:
    """Copy the model folder; with ``mode`` on (or auto and a model over the size
    threshold), add a distilled student (student.pt/.ts/.onnx/.json). True when it did."""
    from datawheel.orchestration.compress import compress_step

    result = compress_step(
        splits.path,
        model.path,
        compressed.path,
        metrics,
        mode=mode,
        temperature=temperature,
        alpha=alpha,
        seed=seed,
    )
    compressed.metadata.update(model.metadata)  # the teacher's training metrics
    compressed.metadata.update({k: v for k, v in result.items() if isinstance(v, (int, float))})
    return bool(result["compressed"])
