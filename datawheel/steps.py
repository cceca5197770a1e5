"""What each pipeline step does, between KFP artifact paths and the library.

Component bodies in ``components/`` are one call into this module, so every line
of step logic runs under plain pytest. Each step is wrapped by :func:`_step`:
it prints the seconds spent in the body (the CLI subtracts them from the wall
time to report KFP's overhead), and turns a :class:`DatawheelError` into a
one-line message and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

import numpy as np

from datawheel import datasets, registry
from datawheel.errors import DatawheelError
from datawheel.store import open_store

__all__ = [
    "ERROR_FILE_ENV",
    "MetricsSink",
    "checkpoint_dir_for",
    "evaluate_step",
    "ingest_step",
    "log",
    "lr_grid",
    "pick_best",
    "prep_step",
    "register_step",
    "train_step",
    "validate_step",
]

ERROR_FILE_ENV = "DATAWHEEL_ERROR_FILE"
CHECKPOINT_ENV = "DATAWHEEL_CHECKPOINT_DIR"
P = ParamSpec("P")
R = TypeVar("R")


class MetricsSink(Protocol):
    """What a KFP ``Metrics`` artifact offers; tests pass a plain object."""

    def log_metric(self, metric: str, value: float) -> None: ...


def log(message: str) -> None:
    """A progress line; the CLI shows lines with this prefix while a run goes."""
    print(f"[datawheel] {message}", flush=True)


def _step(fn: Callable[P, R]) -> Callable[P, R]:
    name = fn.__name__.removesuffix("_step")

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except DatawheelError as exc:
            message = f"{name}: {exc}"
            print(f"[datawheel] error: {message}", file=sys.stderr, flush=True)
            error_file = os.environ.get(ERROR_FILE_ENV)
            if error_file:
                with open(error_file, "a", encoding="utf-8") as f:
                    f.write(message + "\n")
            raise SystemExit(1) from None
        finally:
            log(f"step={name} body_seconds={time.perf_counter() - start:.3f}")

    return wrapper


@_step
def ingest_step(
    store: str, source: str, dataset: str, label: str, image_size: int, manifest_path: str
) -> dict[str, Any]:
    """Read the source and commit a dataset version; write its manifest to the artifact."""
    dv = datasets.ingest(
        open_store(store), source, name=dataset, label=label, image_size=image_size
    )
    Path(manifest_path).write_text(json.dumps(dv.manifest, indent=2))
    log(
        f"dataset {dv.name}@{dv.version}: {dv.manifest['rows']} rows, "
        f"{len(dv.features)} features, {len(dv.classes)} classes"
    )
    return {"name": dv.name, "version": dv.version, "rows": dv.manifest["rows"]}


@_step
def validate_step(store: str, dataset: str, version: str, report_path: str) -> dict[str, Any]:
    """Check the version against the dataset's reference; fail on hard anomalies."""
    from datawheel.validation import reference_for, validate

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


@_step
def prep_step(
    store: str, dataset: str, version: str, split_seed: int, out_dir: str
) -> dict[str, int]:
    """Stratified split and the transform fitted on the training rows."""
    from datawheel.prep import split_frame, write_splits

    st = open_store(store)
    dv = datasets.get_version(st, dataset, version)
    splits = split_frame(
        datasets.read_frame(st, dv),
        label=dv.label,
        features=dv.features,
        classes=dv.classes,
        image_shape=dv.manifest.get("image_shape"),
        seed=split_seed,
    )
    write_splits(splits, out_dir)
    sizes = {
        "train_rows": len(splits.y_train),
        "val_rows": len(splits.y_val),
        "test_rows": len(splits.y_test),
    }
    log(
        f"split {sizes['train_rows']}/{sizes['val_rows']}/{sizes['test_rows']} "
        f"(split seed {split_seed})"
    )
    return sizes


def lr_grid(learning_rate: float, sweep: str) -> list[float]:
    """The learning rates to train: the sweep's comma-separated list, else the single one."""
    try:
        rates = [float(x) for x in sweep.split(",") if x.strip()]
    except ValueError as exc:
        raise DatawheelError(
            f"sweep_learning_rates {sweep!r} is not a comma-separated list of numbers",
            "pass e.g. --param sweep_learning_rates=0.001,0.003,0.01",
        ) from exc
    rates = rates or [learning_rate]
    if any(r <= 0 for r in rates):
        raise DatawheelError(f"learning rates {rates} must be positive", "pass rates > 0")
    return rates


def pick_best(val_accuracies: list[float], model_uris: list[str]) -> str:
    """The model URI with the best validation accuracy (the first one on ties)."""
    if not val_accuracies or len(val_accuracies) != len(model_uris):
        raise DatawheelError("no sweep results to choose from", "check the train steps' logs")
    best = int(np.argmax(np.asarray(val_accuracies, np.float64)))
    log(f"sweep: best of {len(model_uris)} has val_accuracy={val_accuracies[best]:.4f}")
    return model_uris[best]


def _fingerprint(splits_dir: str, config: dict[str, Any]) -> str:
    h = hashlib.sha256(Path(splits_dir, "splits.npz").read_bytes())
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()[:16]


def checkpoint_dir_for(splits_dir: str, config: dict[str, Any], root: str = "") -> Path:
    """Where a training step keeps its per-epoch checkpoint, stable across re-runs."""
    base = root or os.environ.get(CHECKPOINT_ENV) or str(Path.home() / ".cache/datawheel/ckpt")
    return Path(base) / _fingerprint(splits_dir, config)


@_step
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
) -> dict[str, float]:
    """Fit, export (TorchScript + int8), and leave everything serving needs in ``model_dir``."""
    from datawheel.export import export_model
    from datawheel.prep import load_splits
    from datawheel.train import TrainConfig, fit

    config = TrainConfig(
        model_kind=model_kind, epochs=epochs, batch_size=batch_size, lr=learning_rate, seed=seed
    )
    config.validate()
    splits = load_splits(splits_dir)
    tf = splits.transform
    image_shape = tuple(tf.image_shape) if tf.image_shape else None
    init_state = _transfer_state(store, transfer_from) if transfer_from else None
    ckpt = checkpoint_dir_for(
        splits_dir, {**vars(config), "transfer_from": transfer_from}, checkpoint_root
    )
    result = fit(
        tf.apply(splits.x_train),
        splits.y_train,
        tf.apply(splits.x_val),
        splits.y_val,
        n_classes=len(tf.classes),
        image_shape=image_shape,  # type: ignore[arg-type]
        config=config,
        checkpoint_dir=ckpt,
        init_state=init_state,
        freeze=bool(transfer_from),
        log=log,
    )
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_model(
        result.model,
        mean=np.asarray(tf.mean, np.float32),
        std=np.asarray(tf.std, np.float32),
        out_dir=out,
    )
    tf.save(out / "transform.json")
    info = {
        "config": vars(config),
        "metrics": result.metrics,
        "history": result.history,
        "device": result.device,
        "transfer_from": transfer_from,
    }
    (out / "train.json").write_text(json.dumps(info, indent=2))
    for name, value in result.metrics.items():
        metrics.log_metric(name, float(value))
    return {k: float(v) for k, v in result.metrics.items()}


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


def _predict(model_path: Path, x: np.ndarray) -> np.ndarray:
    import torch

    from datawheel.export import load_exported

    module = load_exported(model_path)
    with torch.inference_mode():
        logits: torch.Tensor = module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return np.asarray(logits.argmax(1).numpy())


@_step
def evaluate_step(
    store: str,
    model_name: str,
    dataset: str,
    splits_dir: str,
    model_dir: str,
    margin: float,
    report_path: str,
    metrics: MetricsSink,
    seed: int = 0,
    html_path: str = "",
) -> dict[str, Any]:
    """Score the challenger (float and int8) and compare it with the champion on the test rows.

    Writes the Markdown report to ``report_path`` and, when ``html_path`` is given, the
    HTML report with training curves and the confusion matrix.
    """
    model_name = model_name or dataset
    from datawheel.evaluate import (
        Evaluation,
        as_dict,
        classification_metrics,
        compare,
        report_markdown,
    )
    from datawheel.prep import load_splits

    splits = load_splits(splits_dir)
    classes = splits.transform.classes
    y_true = splits.y_test
    pred = _predict(Path(model_dir, "model.ts"), splits.x_test)
    scores, per_class, confusion = classification_metrics(y_true, pred, classes)
    int8_acc = float(np.mean(_predict(Path(model_dir, "model_int8.ts"), splits.x_test) == y_true))
    correct_old, champion = _champion_correct(store, model_name, splits)
    comparison = compare(
        pred == y_true, correct_old, margin=margin, seed=seed, champion_version=champion
    )
    ev = Evaluation(
        classes, scores, per_class, confusion, comparison, extra={"int8_accuracy": int8_acc}
    )
    Path(report_path).write_text(report_markdown(ev, model=model_name, dataset=dataset))
    if html_path:
        from datawheel.report import evaluation_html

        history = json.loads(Path(model_dir, "train.json").read_text()).get("history", [])
        page = evaluation_html(
            model=model_name,
            dataset=dataset,
            decision=comparison.decision,
            reason=comparison.reason,
            metrics={**scores, **ev.extra},
            history=history,
            classes=classes,
            confusion=confusion,
        )
        Path(html_path).write_text(page)
    for name, value in {**scores, **ev.extra}.items():
        metrics.log_metric(name, value)
    log(
        f"test accuracy={scores['accuracy']:.4f} macro_f1={scores['macro_f1']:.4f} "
        f"int8={int8_acc:.4f}; decision: {comparison.decision} ({comparison.reason})"
    )
    return {**as_dict(ev), "classes": classes, "confusion": confusion}


def _champion_correct(
    store: str, model_name: str, splits: Any
) -> tuple[np.ndarray | None, str | None]:
    st = open_store(store)
    if registry.get_alias(st, model_name, "champion") is None:
        return None, None
    mv = registry.resolve(st, model_name, "champion")
    with tempfile.TemporaryDirectory() as tmp:
        registry.fetch(st, mv, tmp)
        from datawheel.transform import Transform

        champ_tf = Transform.load(Path(tmp, "transform.json"))
        if champ_tf.features != splits.transform.features:
            log(f"champion {mv.version} was trained on other features; comparing as if absent")
            return None, None
        pred = _predict(Path(tmp, "model.ts"), splits.x_test)
    champ_labels = np.asarray(champ_tf.classes)[pred]
    true_labels = np.asarray(splits.transform.classes)[splits.y_test]
    return champ_labels == true_labels, mv.version


@_step
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
    registry.promote(st, model_name, mv.version, alias=alias, reason=ev["reason"])
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
        "metrics": metrics,
        "report": _report_location(st, f"models/{model_name}/versions/{mv.version}/report.html")
        if extra
        else None,
    }
    return json.dumps(summary, sort_keys=True)


def _report_location(st: Any, key: str) -> str:
    """A path a person can open for a local store, else the store URI of the report."""
    from datawheel.store import LocalStore

    return str(st.root / key) if isinstance(st, LocalStore) else f"{st.uri.rstrip('/')}/{key}"
