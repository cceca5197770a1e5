"""Ingest step: read the source and write it as a candidate dataset version.

The candidate is invisible to every list and to later steps until the validate step
commits it. Content that is already committed is found again and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datawheel.data import versions as datasets
from datawheel.orchestration.step import log, pipeline_step
from datawheel.storage import open_store

__all__ = ["ingest_step"]


@pipeline_step
def ingest_step(
    store: str, source: str, dataset: str, label: str, image_size: int, manifest_path: str
) -> dict[str, Any]:
    """Read the source and write a candidate version; write its manifest to the artifact."""
    st = open_store(store)
    dv = datasets.ingest(st, source, name=dataset, label=label, image_size=image_size)
    Path(manifest_path).write_text(json.dumps(dv.manifest, indent=2, allow_nan=False))
    state = "committed already" if datasets.is_committed(st, dv.name, dv.version) else "candidate"
    log(
        f"dataset {dv.name}@{dv.version} ({state}): {dv.manifest['rows']} rows, "
        f"{len(dv.features)} features, {len(dv.classes)} classes"
    )
    return {"name": dv.name, "version": dv.version, "rows": dv.manifest["rows"]}
