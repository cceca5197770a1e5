"""The predictions ledger's ``variant`` column (which exported file answered), and ledgers
written before it: a segment or a WAL file of an earlier server has no such column, and
every reader (read_ledger, the harvest's join) still reads it, as TorchScript's rows (the
only variant served then)."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datawheel.flywheel.ledger_join import join_predictions, read_labels
from datawheel.serving.ledger import Feedback, Ledger, PredictionBatch, read_ledger
from datawheel.serving.ledger.records import SCHEMAS
from datawheel.serving.ledger.wal import _frame, _row_dtype, encode_batch, wal_name
from datawheel.storage import LocalStore

MODEL = "digits"
TS = 1.7e9  # 2023-11-14
DATE = "2023-11-14"
OLD_PREDICTIONS = pa.schema([f for f in SCHEMAS["predictions"] if f.name != "variant"])


def _batch(tag: str, variant: str, n: int = 3) -> PredictionBatch:
    ids = [f"{tag}{i}" for i in range(n)]
    x = np.full((n, 4), 0.5, np.float32)
    p = np.full((n, 2), 0.5, np.float32)
    return PredictionBatch(ids, TS, MODEL, "v1", x, ["1"] * n, p, 1.0, variant)


def _old_rows_frame(tag: str, n: int = 2) -> bytes:
    """A kind-3 WAL frame as servers wrote it before the variant: meta ``version\\0model``."""
    rows = np.empty(n, _row_dtype(2, 1, 4, 2))
    rows["id"] = [f"{tag}{i}".encode() for i in range(n)]
    rows["label"], rows["ts"], rows["latency_ms"] = b"0", TS, 2.0
    rows["inputs"], rows["probabilities"] = 0.25, 0.5
    meta = f"v1\0{MODEL}".encode()
    payload = struct.pack("<IIIII", 2, 1, 4, 2, len(meta)) + meta + rows.tobytes()
    return struct.pack("<4sBIII", b"DWAL", 3, n, len(payload), zlib.crc32(payload)) + payload


def _old_records_frame(tag: str) -> bytes:
    """A kind-1 frame (Arrow records) of the schema without ``variant``."""
    table = pa.table(
        {
            "id": [f"{tag}0"],
            "ts": [TS],
            "model": [MODEL],
            "version": ["v1"],
            "inputs": [[0.1, 0.2, 0.3, 0.4]],
            "label": ["1"],
            "probabilities": [[0.4, 0.6]],
            "latency_ms": [1.0],
        },
        schema=OLD_PREDICTIONS,
    )
    return _frame(1, table.to_batches()[0])


def test_a_spool_of_an_earlier_server_replays_as_torchscript(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / wal_name()).write_bytes(
        _old_rows_frame("r") + _old_records_frame("k") + encode_batch(_batch("n", "onnx-int8"))
    )
    ledger = Ledger(lambda: store, model=MODEL, spool_dir=spool, log=lambda line: None)
    ledger.start()
    ledger.append(_batch("s", "student", 2))
    ledger.close()
    got = read_ledger(store, model=MODEL, columns=["id", "variant"])
    assert dict(zip(got["id"], got["variant"], strict=True)) == {
        "r0": "torchscript",
        "r1": "torchscript",
        "k0": "torchscript",
        "n0": "onnx-int8",
        "n1": "onnx-int8",
        "n2": "onnx-int8",
        "s0": "student",
        "s1": "student",
    }


def test_segments_without_the_column_are_read_by_every_reader(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    old = pa.table(
        {
            "id": ["a", "b"],
            "ts": [TS, TS + 1],
            "model": [MODEL] * 2,
            "version": ["v1"] * 2,
            "inputs": [[0.0, 1.0], [1.0, 0.0]],
            "label": ["0", "1"],
            "probabilities": [[0.9, 0.1], [0.2, 0.8]],
            "latency_ms": [1.0, 1.0],
        },
        schema=OLD_PREDICTIONS,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(old, sink)
    prefix = f"ledger/predictions/model={MODEL}/date={DATE}"
    store.put_bytes(f"{prefix}/00000000000000000001-aaaaaaaa.parquet", sink.getvalue().to_pybytes())
    ledger = Ledger(lambda: store, model=MODEL, spool_dir=tmp_path / "sp", log=lambda line: None)
    ledger.start()
    x = np.asarray([[0.5, 0.5]], np.float32)
    p = np.asarray([[0.5, 0.5]], np.float32)
    ledger.append(PredictionBatch(["c"], TS + 2, MODEL, "v1", x, ["1"], p, 1.0, "onnx"))
    ledger.append([Feedback(pid, TS + 10, MODEL, "v1", "1", "1") for pid in ("a", "c")])
    ledger.close()

    full = read_ledger(store, model=MODEL)  # every column, the new one included
    assert list(full["id"]) == ["a", "b", "c"]
    assert list(full["variant"]) == ["torchscript", "torchscript", "onnx"]
    assert list(full.columns) == SCHEMAS["predictions"].names
    # the harvest's reader: labels joined to predictions of both segment formats
    labels = read_labels(store, MODEL, None, time.time())
    joined = join_predictions(store, MODEL, labels, time.time())
    assert not joined.skipped and joined.unmatched == 0
    ((meta, inputs),) = joined.blocks.values()
    assert sorted(meta["id"]) == ["a", "c"] and inputs.shape == (2, 2)
