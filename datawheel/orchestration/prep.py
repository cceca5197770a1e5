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
    Rows the manifest lists in ``production_rows`` (a harvested version) are split by the
    same hash as the others and flagged in ``splits.npz`` as ``test_production``.
    """
    from datawheel.data.split import plan_split, write_splits

    st = open_store(store)
    dv = datasets.get_version(st, dataset, version)
    frame = datasets.read_frame(st, dv)
    production = datasets.production_mask(dv.manifest, len(frame))
    plan = plan_split(
        frame,
        label=dv.label,
        features=dv.features,
        classes=dv.classes,
        seed=split_seed,
        production=production,
    )
    del frame
    report = plan.report()
    if report_path:
        Path(report_path).write_text(report.markdown(f"{dv.name}@{dv.version}"))
    log(report.summary())
    for warning in report.warnings:
        log(f"warning: {warning}")
    splits = plan.splits(dv.manifest.get("image_shape"))  # raises if training cannot use it
    write_splits(splits, out_dir)
    production_test = int(splits.test_production.sum())
    if production.any():
        log(
            f"{int(production.sum())} production rows, {production_test} of them in test "
            f"(the production slice of {len(splits.y_test)} test rows)"
        )
    sizes = report.sizes
    return {
        "train_rows": sizes["train"],
        "val_rows": sizes["val"],
        "test_rows": sizes["test"],
        "split_warnings": len(report.warnings),
        "production_test_rows": production_test,
    }
