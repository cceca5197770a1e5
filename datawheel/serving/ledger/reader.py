"""Reading the ledger back: every prediction and feedback label the servers stored.

:func:`read_ledger` is the one entry point for whatever consumes the ledger (the server
rebuilding its prediction index after a restart, a harvest joining labels to predictions).
What it returns, for one model:

* ``kind="predictions"``: one row per served row, the :class:`Prediction` fields: ``id``
  (unique: a re-uploaded WAL file overwrites its own segments), ``ts`` (seconds since
  the epoch), ``model``, ``version`` (the model version that answered), ``inputs`` (the
  feature row, as the server received it), ``label`` (the predicted class name),
  ``probabilities`` (one per class, in the model's class order), ``latency_ms`` and
  ``variant`` (the exported file that answered: torchscript, onnx, onnx-int8 or student;
  ``torchscript`` for a row stored before servers recorded it);
* ``kind="feedback"``: one row per label given, the :class:`Feedback` fields: ``id`` (of
  the prediction), ``ts``, ``model``, ``version`` (that made the prediction), ``label``
  (the label given) and ``predicted``. A label that was changed later appears once per
  change; the row with the latest ``ts`` is the current one. Repeating the same label
  adds no row.

Rows are sorted by ``ts``; ``date`` (a UTC day, ``YYYY-MM-DD``) reads that day's
partition only. Only what has been uploaded is read: records still in a server's spool
(see ``Ledger.backlog``) appear once they are flushed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import SCHEMAS
from datawheel.serving.ledger.segments import segment_prefix, with_added_columns
from datawheel.storage import Store

__all__ = ["read_ledger"]


def read_ledger(
    store: Store,
    *,
    model: str,
    kind: str = "predictions",
    date: str | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """All ledger rows of ``model`` (one UTC ``date`` if given) as a DataFrame sorted by ts.

    Columns are the :class:`Prediction` or :class:`Feedback` fields (or ``columns``, in
    that order); ``inputs`` and ``probabilities`` hold one float64 array per row. No rows
    give an empty frame with those columns. A bad ``kind``, ``date``, column or model name
    raises a DatawheelError.
    """
    prefix = segment_prefix(kind, model, date)
    schema = SCHEMAS[kind]
    names = list(columns) if columns is not None else schema.names
    if unknown := set(names) - set(schema.names):
        raise DatawheelError(f"unknown {kind} columns {sorted(unknown)}", f"use {schema.names}")
    read = sorted({*names, "ts"}, key=schema.names.index)
    tables = [
        pq.read_table(pa.BufferReader(store.get_bytes(key)), columns=read, schema=schema)
        for key in store.list(prefix)
        if key.endswith(".parquet")
    ]
    table = pa.concat_tables(tables) if tables else schema.empty_table().select(read)
    table = with_added_columns(kind, table).select(read)  # an older segment's nulls
    frame: pd.DataFrame = table.sort_by("ts").select(names).to_pandas()
    return frame
