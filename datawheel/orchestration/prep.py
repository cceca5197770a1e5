"""Prep step: split a dataset version and fit the transform on its training rows."""

from __future__ import annotations

from datawheel.data import versions as datasets
from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import open_store

__all__ = ["prep_step"]


@pipeline_step
def prep_step(
    store: str, dataset: str, version: str, split_seed: int, out_dir: str
) -> dict[str, int]:
    """Stratified split and the transform fitted on the training rows."""
    from datawheel.data.split import split_frame, write_splits

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
