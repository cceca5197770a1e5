"""The ledger in the store: Parquet segments, one folder per kind, model and UTC day.

    ledger/{predictions,feedback}/model=M/date=YYYY-MM-DD/S.parquet

``S`` is the name of the WAL file the rows came from (``<time_ns>-<hex8>``), so uploading
a WAL file again after a crash overwrites its segments instead of duplicating rows. The
writer (:mod:`.writer`) encodes segments (:func:`encode_segments`, local work: a failure
there is the file's, never the store's) and puts them; the reader (:mod:`.reader`) lists
and reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import ADDED_COLUMNS, SCHEMAS
from datawheel.storage import Store, validate_name

__all__ = ["encode_segments", "segment_prefix", "with_added_columns", "write_segments"]

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def segment_prefix(kind: str, model: str, date: str | None = None) -> str:
    """The store prefix of ``model``'s ``kind`` segments (of one UTC ``date`` if given)."""
    if kind not in SCHEMAS:
        raise DatawheelError(f"ledger kind {kind!r} is unknown", "use predictions or feedback")
    if date is not None and not _DATE_RE.match(date):
        raise DatawheelError(f"ledger date {date!r} is not YYYY-MM-DD", "pass e.g. 2024-05-31")
    prefix = f"ledger/{kind}/model={validate_name(model, 'model name')}"
    return prefix + (f"/date={date}" if date else "")


def with_added_columns(kind: str, table: pa.Table) -> pa.Table:
    """``table`` with every column added to ``kind`` since it was written (a WAL frame or
    segment of an earlier server) filled in, and nulls in them replaced, by the value
    :data:`~datawheel.serving.ledger.records.ADDED_COLUMNS` gives older rows."""
    for name, value in ADDED_COLUMNS[kind].items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
        elif table.column(name).null_count:
            at = table.column_names.index(name)
            table = table.set_column(at, name, pc.fill_null(table.column(name), value))
    return table


def encode_segments(kind: str, parts: list[pa.Table], segment: str) -> list[tuple[str, bytes]]:
    """The rows of ``parts`` (tables with ``kind``'s columns) as ``(key, Parquet bytes)``
    of the segments named ``segment``: one per model and UTC day of their ``ts``."""
    if not parts:
        return []
    schema = SCHEMAS[kind]
    table = pa.concat_tables(
        [with_added_columns(kind, t).select(schema.names).cast(schema) for t in parts]
    )
    out = []
    for model, date, part in _partitions(table):
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink, compression="zstd")
        key = f"ledger/{kind}/model={model}/date={date}/{segment}.parquet"
        out.append((key, sink.getvalue().to_pybytes()))
    return out


def write_segments(store: Store, kind: str, parts: list[pa.Table], segment: str) -> None:
    """Put the segments :func:`encode_segments` makes of ``parts`` in ``store``."""
    for key, data in encode_segments(kind, parts, segment):
        store.put_bytes(key, data)


def _partitions(table: pa.Table) -> Iterator[tuple[str, str, pa.Table]]:
    """``(model, YYYY-MM-DD, rows)`` for each model and UTC day in ``table``."""
    models = np.asarray(table.column("model").to_pylist(), dtype=object)
    days = np.floor(table.column("ts").to_numpy() / 86400.0).astype(np.int64)
    for model, day in sorted(set(zip(models.tolist(), days.tolist(), strict=True))):
        rows = (models == model) & (days == day)
        part = table if rows.all() else table.filter(pa.array(rows))
        yield model, str(np.datetime64(day, "D")), part
