"""Train step: fit on the training split, export, and leave what serving needs.

Beside the model files it writes ``drift_reference.json``: the training split summarised
for drift (:func:`~datawheel.monitoring.baseline.build_reference`, with the training labels
and the exported model's predicted classes on the test split). The register step uploads
it with the model, checksummed in the card; the server's live drift gauges compare against it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datawheel import registry
from datawheel.errors import DatawheelError
from datawheel.orchestration.checkpoint_store import (
    CHECKPOINT_FILE,
    StoreCheckpoints,
    is_store_target,
)
from datawheel.orchestration.step import MetricsSink, log, pipeline_step
from datawheel.storage import open_store
from datawheel.storage.files import sha256_bytes, sha256_file
from datawheel.storage.settings import S3Settings, local_store_path, store_uri

if TYPE_CHECKING:
    from datawheel.data.split import Splits

__all__ = ["CHECKPOINT_ENV", "checkpoint_dir_for", "train_step"]

CHECKPOINT_ENV = "DATAWHEEL_CHECKPOINT_DIR"


def _fingerprint(splits_dir: str, config: dict[str, Any], store: str) -> str:
    split = Path(splits_dir)
    data = {
        "store": _store_key(store),
        "splits": sha256_file(split / "splits.npz"),
        "transform": sha256_file(split / "transform.json"),
        "config": config,
    }
    return sha256_bytes(json.dumps(data, sort_keys=True).encode())[:16]


def _store_key(store: str) -> str:
    """The store a run trains for, as one string: an absolute folder for a local store, the
    endpoint and bucket for S3 (never shown: it only goes into the hash)."""
    uri = store_uri(store or None)
    path = local_store_path(uri)
    if path is not None:
        return f"file://{Path(path).expanduser().resolve()}"
    try:
        endpoint = S3Settings.from_env().endpoint
    except DatawheelError:  # the store is opened, and the settings refused, elsewhere
        endpoint = ""
    return f"{endpoint} {uri.rstrip('/')}"


def _checkpoint_base(root: str) -> str:
    return root or os.environ.get(CHECKPOINT_ENV) or str(Path.home() / ".cache/datawheel/ckpt")


def checkpoint_dir_for(
    splits_dir: str, config: dict[str, Any], root: str = "", store: str = ""
) -> Path:
    """Where a training step keeps its per-epoch checkpoint, stable across re-runs of the
    same data (split and transform), config and store; a run for another store or dataset
    never resumes this one's checkpoint. (For a store target, see :func:`_store_mirror`.)"""
    return Path(_checkpoint_base(root)) / _fingerprint(splits_dir, config, store)


def _store_mirror(
    splits_dir: str, config: dict[str, Any], base: str, store: str, local: Path
) -> StoreCheckpoints:
    """The mirror of this run's checkpoint in the store ``base`` names (``store``: the run's
    own, else a store URI), already pulled into ``local``."""
    target = open_store((store or None) if base == "store" else base)
    mirror = StoreCheckpoints(
        target, f"checkpoints/{_fingerprint(splits_dir, config, store)}", log=log
    )
    mirror.pull(local)
    return mirror


@pipeline_step
def train_step(
    splits_dir: str,
    model_dir: str,
    metrics: MetricsSink,
    *,
    model_kind: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    store: str = "",
    transfer_from: str = "",
    checkpoint_root: str = "",
    warm_start_from: str = "",
) -> dict[str, float]:
    """Fit, export (TorchScript, ONNX, ONNX int8), leave all serving needs in ``model_dir``.

    ``transfer_from`` (a model ref) starts from that model with its backbone frozen;
    ``warm_start_from`` starts from it and fine-tunes every layer (the flywheel's default,
    from the champion). A warm start that cannot apply (no such model yet, another model
    kind or feature count) trains from scratch and says why.
    """
    from datawheel.data.split import load_splits
    from datawheel.training.export import export_model
    from datawheel.training.loop import TrainConfig

    config = TrainConfig(
        model_kind=model_kind, epochs=epochs, batch_size=batch_size, lr=learning_rate, seed=seed
    )
    config.validate()
    splits = load_splits(splits_dir)
    tf = splits.transform
    image_shape = tuple(tf.image_shape) if tf.image_shape else None
    init_state = _transfer_state(store, transfer_from) if transfer_from else None
    warm_from = ""
    if warm_start_from and init_state is None:
        init_state, warm_from = _warm_state(store, warm_start_from, config, splits)
    fit_config = {**vars(config), "transfer_from": transfer_from, "warm_start_from": warm_from}
    base = _checkpoint_base(checkpoint_root)
    if not is_store_target(base):
        ckpt = checkpoint_dir_for(splits_dir, fit_config, checkpoint_root, store)
        result = _fit(splits, tf, image_shape, config, ckpt, init_state, transfer_from, None)
    else:  # train against a scratch folder, mirrored to the store
        with tempfile.TemporaryDirectory(prefix="datawheel-ckpt-") as scratch:
            mirror = _store_mirror(splits_dir, fit_config, base, store, Path(scratch))
            result = _fit(
                splits, tf, image_shape, config, Path(scratch), init_state, transfer_from,
                mirror.push,
            )  # fmt: skip
            mirror.push(Path(scratch) / CHECKPOINT_FILE, final=True)
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    exported = export_model(
        result.model,
        mean=np.asarray(tf.mean, np.float32),
        std=np.asarray(tf.std, np.float32),
        out_dir=out,
        calibration=splits.x_train,
    )
    tf.save(out / "transform.json")
    _write_drift_reference(splits, out)
    info = {
        "config": vars(config),
        "metrics": result.metrics,
        "history": result.history,
        "device": result.device,
        "transfer_from": transfer_from,
        "warm_start_from": warm_from,
        "int8_method": exported.int8_method,
    }
    (out / "train.json").write_text(json.dumps(info, indent=2))
    for name, value in result.metrics.items():
        metrics.log_metric(name, float(value))
    return {k: float(v) for k, v in result.metrics.items()}


def _fit(
    splits: Splits,
    tf: Any,
    image_shape: Any,
    config: Any,
    ckpt: Path,
    init_state: dict[str, Any] | None,
    transfer_from: str,
    on_checkpoint: Callable[[Path], None] | None,
) -> Any:
    """The training loop on the splits, checkpointing into ``ckpt`` (``on_checkpoint`` after
    each epoch's checkpoint)."""
    from datawheel.training.loop import fit

    result = fit(
        tf.apply(splits.x_train),
        splits.y_train,
        tf.apply(splits.x_val),
        splits.y_val,
        n_classes=len(tf.classes),
        image_shape=image_shape,
        config=config,
        checkpoint_dir=ckpt,
        init_state=init_state,
        freeze=bool(transfer_from),
        log=log,
        categorical=tf.cardinalities(),
        on_checkpoint=on_checkpoint,
    )
    return result


def _write_drift_reference(splits: Splits, out: Path) -> None:
    """``drift_reference.json``: the train split, its labels, and what the exported model
    (``model.ts``, as served) predicts on the test split."""
    import torch

    from datawheel.monitoring.baseline import REFERENCE_FILE, build_reference
    from datawheel.training.export import load_exported

    tf = splits.transform
    classes = list(tf.classes)
    module = load_exported(out / "model.ts")
    predicted: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(splits.x_test), 4096):
            rows = torch.from_numpy(np.ascontiguousarray(splits.x_test[start : start + 4096]))
            predicted += [classes[i] for i in module(rows.float()).argmax(dim=1).tolist()]
    reference = build_reference(
        splits.x_train,
        list(tf.features),
        labels=[classes[i] for i in splits.y_train],
        predictions=predicted or None,
        categorical=list(tf.categories),  # their codes, as served: the categories' counts
    )
    reference.save(out / REFERENCE_FILE)
    log(
        f"drift reference: {reference.rows} train rows, {len(reference.features)} features, "
        f"{len(predicted)} test-split predictions"
    )


def _warm_state(
    store: str, ref: str, config: Any, splits: Splits
) -> tuple[dict[str, Any] | None, str]:
    """The weights of model ``ref`` to fine-tune from, and ``NAME:vN``; (None, "") with the
    reason logged when there is no such model or its shape differs from this run's."""
    import torch

    from datawheel.data.transform import Transform

    name, alias = registry.parse_ref(ref)
    st = open_store(store)
    try:
        mv = registry.resolve(st, name, alias)
    except DatawheelError as exc:
        log(f"warm start: {exc.problem}; training from scratch")
        return None, ""
    card_kind = mv.card.get("model_kind")
    n_features = len(splits.transform.features)
    if card_kind != config.model_kind:
        log(
            f"warm start: {name}:{mv.version} is a {card_kind}, this run trains a "
            f"{config.model_kind}; training from scratch"
        )
        return None, ""
    with tempfile.TemporaryDirectory() as tmp:
        registry.fetch(st, mv, tmp)
        state: dict[str, Any] = torch.load(
            Path(tmp, "model.pt"), map_location="cpu", weights_only=True
        )
        theirs = (
            Transform.load(Path(tmp, "transform.json"))
            if "transform.json" in mv.card.get("files", {})
            else None
        )
    ours = splits.transform
    if theirs is not None and (theirs.features, theirs.categories) != (
        ours.features,
        ours.categories,
    ):
        log(
            f"warm start: {name}:{mv.version} was trained on other features or categories "
            "(its first layer would read these rows wrongly); training from scratch"
        )
        return None, ""
    first = next(
        (v for k, v in state.items() if k.startswith("backbone.") and v.is_floating_point()), None
    )
    if config.model_kind == "mlp" and first is not None and first.shape[-1] != n_features:
        log(
            f"warm start: {name}:{mv.version} takes {first.shape[-1]} features, this split "
            f"has {n_features}; training from scratch"
        )
        return None, ""
    log(f"warm start: fine-tuning every layer of {name}:{mv.version}")
    return state, f"{name}:{mv.version}"


def _transfer_state(store: str, ref: str) -> dict[str, Any]:
    import torch

    name, alias = registry.parse_ref(ref)
    st = open_store(store)
    mv = registry.resolve(st, name, alias)
    with tempfile.TemporaryDirectory() as tmp:
        registry.fetch(st, mv, tmp)
        state: dict[str, Any] = torch.load(
            Path(tmp, "model.pt"), map_location="cpu", weights_only=True
        )
    log(f"transfer: starting from {name}:{mv.version}, backbone frozen")
    return state
