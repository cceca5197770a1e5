"""Join the ledger's feedback labels to the predictions they label, segment by segment.

Why pyarrow and not DuckDB: every byte of the ledger goes through the :class:`Store`
seam (``file://`` or ``s3://`` with the platform's own settings and conditional writes),
and DuckDB would need its own S3 credentials and httpfs extension to read it, plus a new
dependency of ~50 MB in every image. The join itself is small on one side: the labels of
a window (100k ids) against a stream of prediction segments (1M rows), so a vectorized
semi-join (``pyarrow.compute.is_in`` on each segment's ``id`` column) is all it needs,
with the segment's bytes fetched through the Store and decoded by ``pyarrow.parquet``.
Only the matching prediction rows are kept, so memory grows with the labels, never with
the predictions; a segment whose ids match no label never has its ``inputs`` decoded.

A segment that cannot be read as the ledger's Parquet (truncated, garbage, wrong columns)
is skipped and named in ``skipped``; a segment that vanished between the listing and the
read likewise. A store that fails (unreachable, refusing) is a :class:`DatawheelError`:
nothing has been written by then, so the harvest can simply run again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datawheel.errors import DatawheelError
from datawheel.serving.ledger.records import SCHEMAS
from datawheel.serving.ledger.segments import segment_prefix
from datawheel.storage import KeyNotFoundError, Store, StoreError

__all__ = ["Joined", "Labels", "join_predictions", "read_labels", "store_failure"]

_DAY_S = 86400.0
# VERSION.TIME(ms, hex).CLASS.NONCE.TAG: see datawheel.serving.ids
_ID_TIME = re.compile(r"^v[1-9][0-9]*\.([0-9a-f]{1,12})\.")
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, KeyError, TypeError)


@dataclass
class Labels:
    """The current label of each prediction id labelled in the window (latest ``ts`` wins)."""

    frame: pd.DataFrame  # id, ts, version, label, predicted: one row per id, sorted by ts
    received: int  # feedback rows in the window, label changes included
    segments: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Joined:
    """The predictions that have a label, with it: one block per (version, input width)."""

    blocks: dict[tuple[str, int], tuple[pd.DataFrame, np.ndarray]]  # (meta, inputs [n, w])
    predictions_seen: int
    unmatched: int  # labels whose prediction is not in the ledger segments read
    segments: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def store_failure(store: Store, doing: str, exc: BaseException) -> DatawheelError:
    """The one-line error for a store that failed mid-harvest."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DatawheelError(
        f"the store {store.uri} failed while {doing} ({detail}); no dataset version was committed",
        "check that the store is reachable and writable, then run the harvest again "
        "(it is idempotent: the same labels give the same version)",
    )


def _day(ts: float) -> str:
    return str(np.datetime64(math.floor(ts / _DAY_S), "D"))


def _keys(store: Store, kind: str, model: str, first: str | None, last: str) -> list[str]:
    """The segment keys of ``kind`` whose UTC day is in ``[first, last]``, sorted."""
    prefix = segment_prefix(kind, model)
    try:
        listed = store.list(prefix)
    except (StoreError, OSError) as exc:
        raise store_failure(store, f"listing {prefix}", exc) from None
    out = []
    for key in listed:
        parts = key.split("/")
        if len(parts) != 5 or not parts[3].startswith("date=") or not key.endswith(".parquet"):
            continue
        day = parts[3][len("date=") :]
        if (first is None or day >= first) and day <= last:
            out.append(key)
    return sorted(out)


def _fetch(store: Store, key: str, skipped: list[dict[str, str]]) -> pq.ParquetFile | None:
    """The segment as a Parquet file, or None (and a note in ``skipped``) if unreadable."""
    try:
        data = store.get_bytes(key)
    except KeyNotFoundError:
        skipped.append({"key": key, "error": "vanished between listing and reading"})
        return None
    except (StoreError, OSError) as exc:
        raise store_failure(store, f"reading {key}", exc) from None
    try:
        return pq.ParquetFile(pa.BufferReader(data))
    except _READ_ERRORS as exc:
        skipped.append({"key": key, "error": _why(exc)})
        return None


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _read(
    file: pq.ParquetFile, kind: str, columns: Sequence[str], key: str, skipped: list[dict[str, str]]
) -> pa.Table | None:
    """``columns`` of a segment, cast to the ledger schema; None if it does not fit it."""
    schema = SCHEMAS[kind]
    want = pa.schema([schema.field(c) for c in columns])
    try:
        return file.read(columns=list(columns)).select(list(columns)).cast(want)
    except _READ_ERRORS as exc:
        skipped.append({"key": key, "error": _why(exc)})
        return None


def read_labels(store: Store, model: str, since: float | None, until: float) -> Labels:
    """Feedback of ``model`` with ``since <= ts < until``: the latest label per id."""
    cols = ["id", "ts", "version", "label", "predicted"]
    first = _day(since) if since is not None else None
    keys = _keys(store, "feedback", model, first, _day(until))
    parts: list[pa.Table] = []
    read: list[str] = []
    skipped: list[dict[str, str]] = []
    for key in keys:
        file = _fetch(store, key, skipped)
        table = _read(file, "feedback", cols, key, skipped) if file is not None else None
        if table is None:
            continue
        read.append(key)
        ts = table.column("ts")
        keep = pc.less(ts, until)
        if since is not None:
            keep = pc.and_(keep, pc.greater_equal(ts, since))
        parts.append(table.filter(keep))
    table = pa.concat_tables(parts) if parts else SCHEMAS["feedback"].empty_table().select(cols)
    frame = table.to_pandas()
    received = len(frame)
    # Stable: of two labels with the same ts, the one read later (a later segment) wins.
    frame = frame.sort_values("ts", kind="stable").drop_duplicates("id", keep="last")
    return Labels(frame.reset_index(drop=True), received, read, skipped)


def _first_day(ids: pa.Array) -> str | None:
    """The earliest UTC day (minus one, for clock skew) any of ``ids`` was issued on;
    None when some id does not say (an id of the older format): read every day."""
    earliest = math.inf
    for pid in ids.to_pylist():
        m = _ID_TIME.match(pid)
        if m is None:
            return None
        earliest = min(earliest, int(m.group(1), 16) / 1000.0)
    return _day(earliest - _DAY_S) if math.isfinite(earliest) else None


def join_predictions(store: Store, model: str, labels: Labels, until: float) -> Joined:
    """The prediction rows of the labelled ids, read segment by segment from the store.

    Predictions come before their labels, so only the days from the earliest id's issue
    to ``until`` are read.
    """
    wanted = pa.array(labels.frame["id"].to_numpy(dtype=object), pa.string())
    joined = Joined({}, 0, 0)
    if len(wanted) == 0:
        return joined
    cols = ["id", "version", "label", "inputs"]
    pieces: list[pa.Table] = []
    for key in _keys(store, "predictions", model, _first_day(wanted), _day(until)):
        file = _fetch(store, key, joined.skipped)
        ids = _read(file, "predictions", ["id"], key, joined.skipped) if file else None
        if file is None or ids is None:
            continue
        hit = pc.is_in(ids.column("id"), value_set=wanted)
        found = pc.sum(hit).as_py() or 0
        if found:  # only now decode the inputs
            table = _read(file, "predictions", cols, key, joined.skipped)
            if table is None:
                continue
            pieces.append(table.filter(hit))
        joined.segments.append(key)
        joined.predictions_seen += ids.num_rows
    empty = SCHEMAS["predictions"].empty_table().select(cols)
    matched = pa.concat_tables(pieces) if pieces else empty
    _blocks(joined, matched, labels)
    return joined


def _blocks(joined: Joined, matched: pa.Table, labels: Labels) -> None:
    """Attach each matched prediction's label; group the rows by (version, input width)."""
    ids = matched.column("id").to_numpy(zero_copy_only=False).astype(object)
    inputs = matched.column("inputs").combine_chunks()
    widths = pc.fill_null(pc.list_value_length(inputs), 0).to_numpy(zero_copy_only=False)
    # A prediction id counts once even if re-uploaded; a row without inputs cannot be used.
    usable = ~pd.Series(ids).duplicated().to_numpy() & (widths > 0)
    matched = matched.filter(pa.array(usable))
    fb = labels.frame
    at = pc.index_in(matched.column("id"), value_set=pa.array(fb["id"].to_numpy(dtype=object)))
    where = at.to_numpy(zero_copy_only=False).astype(np.int64)
    joined.unmatched = len(fb) - matched.num_rows
    inputs = matched.column("inputs").combine_chunks()
    widths = widths[usable]
    versions = matched.column("version").to_numpy(zero_copy_only=False).astype(object)
    meta = pd.DataFrame(
        {
            "id": matched.column("id").to_numpy(zero_copy_only=False).astype(object),
            "version": versions,
            "predicted": matched.column("label").to_numpy(zero_copy_only=False).astype(object),
            "label": fb["label"].to_numpy(dtype=object)[where],
            "ts": fb["ts"].to_numpy(dtype=np.float64)[where],
        }
    )
    for version, width in sorted(set(zip(versions.tolist(), widths.tolist(), strict=True))):
        rows = np.flatnonzero((versions == version) & (widths == width))
        block = pc.take(inputs, pa.array(rows))
        x = block.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), int(width))
        joined.blocks[(str(version), int(width))] = (meta.iloc[rows].reset_index(drop=True), x)
