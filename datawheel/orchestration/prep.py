"""Prep step: split a dataset version, report the split, fit the transform on its training rows."""

from __future__ import annotations

from pathlib import Path

from datawheel.data import versions as datasets
from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import open_store

__all__ = ["prep_step"]


@pipeline_step
def prep_step(
    store: str,
    dataset: str,
    version: str,
    split_seed: int,
    out_dir: str,
    report_path: str = "",
) -> dict[str, int]:
    """Split by each row's content hash, write the prep report, fit the transform on train.

    The report (Markdown, at ``report_path`` if given) is written before the split is
    checked, so a dataset that training cannot use still leaves a report saying why.
    """
    from datawheel.data.split import plan_split, write_splits

    st = open_store(store)
    dv = datasets.get_version(st, dataset, version)
    plan = plan_split(
        datasets.read_frame(st, dv),
        label=dv.label,
        features=dv.features,
        classes=dv.classes,
        seed=split_seed,
    )
    report = plan.report()
    if report_path:
        Path(report_path).write_text(report.markdown(f"{dv.name}@{dv.version}"))
    log(report.summary())
    for warning in report.warnings:
        log(f"warning: {warning}")
    splits = plan.splits(dv.manifest.get("image_shape"))  # raises if training cannot use it
    write_splits(splits, out_dir)
    sizes = report.sizes
    return {
        "train_rows": sizes["train"],
        "val_rows": sizes["val"],
        "test_rows": sizes["test"],
        "split_warnings": len(report.warnings),
    }
