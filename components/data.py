"""Data components: ingest, validate, prep."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from datawheel.deploy.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest(
    store: str,
    source: str,
    dataset_name: str,
    label: str,
    image_size: int,
    dataset: Output[Dataset],
) -> NamedTuple("IngestOutputs", [("name", str), ("version", str)]):
    """Read the source and write a content-addressed candidate, invisible until validated."""
    from collections import namedtuple

    from datawheel.orchestration.ingest import ingest_step

    out = ingest_step(store, source, dataset_name, label, image_size, dataset.path)
    dataset.metadata.update(out)
    return namedtuple("IngestOutputs", ["name", "version"])(out["name"], out["version"])


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate(store: str, dataset_name: str, version: str, report: Output[Markdown]) -> bool:
    """Check the candidate (absolute rules, then the reference); commit it or reject it."""
    from datawheel.orchestration.validate import validate_step

    return bool(validate_step(store, dataset_name, version, report.path)["ok"])


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prep(
    store: str,
    dataset_name: str,
    version: str,
    split_seed: int,
    splits: Output[Dataset],
    report: Output[Markdown],
):
    """Split each row by its content hash, report the split, fit the transform on train."""
    from datawheel.orchestration.prep import prep_step

    splits.metadata.update(
        prep_step(store, dataset_name, version, split_seed, splits.path, report.path)
    )
