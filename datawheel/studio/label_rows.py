"""Correcting a dataset row: the row goes through the model server like any other traffic.

A row id is ``row:<dataset>:<version>:<index>`` (from the label-issue queue). Labelling one
sends the row's features to the server as a prediction (named inputs, one per feature, so
a categorical feature travels as its category) and then posts the corrected label as
feedback for the prediction id the server returned. Both land in the ledger; the flywheel's
harvest then merges the labelled row into the next dataset version, where a parent row with
the same features takes the newest label (``conflict, newest label wins``), with lineage.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from datawheel.data import versions as ds
from datawheel.flywheel.harvest import current_dataset
from datawheel.studio.context import Studio
from datawheel.studio.review_queue import remember_label

__all__ = ["label_row", "parse_row_id"]

_ROW = re.compile(r"^row:([A-Za-z0-9][A-Za-z0-9._-]{0,127}):([0-9a-f]{16}):([0-9]{1,9})$")


def parse_row_id(row_id: str) -> tuple[str, str, int]:
    """(dataset, version, index), or a 400 that shows the form."""
    m = _ROW.match(row_id)
    if m is None:
        raise HTTPException(
            400,
            f"{row_id[:80]!r} is not a dataset row id: use row:<dataset>:<version>:<index>, "
            "e.g. row:digits:0123456789abcdef:17, as the label-issue queue gives it",
        )
    return m.group(1), m.group(2), int(m.group(3))


def _row_inputs(frame_row: Any, dv: ds.DatasetVersion) -> list[dict[str, Any]]:
    """The v2 named inputs of one row: FP32 numbers (null when missing), BYTES categories."""
    vocab = dv.categories
    out = []
    for f in dv.features:
        v = frame_row[f]
        missing = v is None or (isinstance(v, float | np.floating) and not np.isfinite(v))
        if f in vocab:
            out.append(
                {
                    "name": f,
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [None if missing else str(v)],
                }
            )
        else:
            out.append(
                {
                    "name": f,
                    "shape": [1],
                    "datatype": "FP32",
                    "data": [None if missing else float(v)],
                }
            )
    return out


async def label_row(studio: Studio, row_id: str, label: str) -> dict[str, Any]:
    """Send row ``row_id`` through the server and label the prediction ``label``."""
    name, version, index = parse_row_id(row_id)
    if studio.client is None:
        raise HTTPException(409, "no model server: start the studio with --serve-url")
    current = await run_in_threadpool(current_dataset, studio.store, studio.model)
    if name != current.name:
        raise HTTPException(
            400,
            f"row {row_id} is from dataset {name!r}, but model {studio.model} learns from "
            f"{current.name!r}: label rows of {current.name!r}",
        )
    if not ds.is_committed(studio.store, name, version):
        raise HTTPException(
            404,
            f"dataset {name}@{version} is not in the store (any more): reload the review page "
            "for the current version's rows",
        )
    dv = await run_in_threadpool(ds.get_version, studio.store, name, version)
    label = label.strip()
    if label not in dv.classes:
        raise HTTPException(400, f"label {label[:40]!r} is not one of the classes {dv.classes}")
    frame = await run_in_threadpool(_frame, studio, dv)
    if index >= len(frame):
        raise HTTPException(400, f"{name}@{version} has {len(frame)} rows: there is no row {index}")
    row = frame.iloc[index]
    answer = await run_in_threadpool(studio.client.infer, {"inputs": _row_inputs(row, dv)})
    ids = (answer.get("parameters") or {}).get("prediction_ids") or []
    if not ids:
        raise HTTPException(502, "the model server answered without a prediction id")
    feedback = await run_in_threadpool(studio.client.feedback, str(ids[0]), label)
    remember_label(studio, str(ids[0]), label)
    remember_label(studio, row_id, label)
    return {
        "id": row_id,
        "prediction_id": ids[0],
        "label": label,
        "given": str(row[dv.label]),
        "predicted": feedback.get("predicted"),
        "version": feedback.get("version"),
        "dataset": name,
        "dataset_version": version,
    }


def _frame(studio: Studio, dv: ds.DatasetVersion) -> Any:
    cache: dict[str, Any] = studio.cache.setdefault("label_rows_frames", {})
    key = f"{dv.name}@{dv.version}"
    if key not in cache:
        if len(cache) > 4:
            cache.clear()
        cache[key] = ds.read_frame(studio.store, dv)
    return cache[key]
