"""The prediction ledger: every served row and feedback label, durable before the reply.

``append`` writes each batch to a local write-ahead log (WAL) in ``spool_dir`` with one
``os.write`` (plus ``fsync`` if asked), so it survives a kill -9 once the call returns. A
background thread rotates the WAL every ``flush_interval`` seconds, uploads each rotated
file as Parquet segments ``ledger/{predictions,feedback}/model=M/date=YYYY-MM-DD/S.parquet``
(``S`` is the WAL file's unique name, so a re-upload after a crash overwrites, never
duplicates), then deletes it. While the store is down the files stay (the spool) and are
retried with capped backoff; ``start`` replays what an earlier process left.

A WAL file ``wal-<time_ns>-<hex8>.wal`` is a run of frames, one per record kind per
``append``: a 17-byte little-endian header (``DWAL``, kind 1=prediction/2=feedback/3=rows,
u32 record count, u32 payload length, u32 CRC-32 of the payload), then the payload, an
Arrow IPC stream of the records (or fixed-layout rows for kind 3). A torn or corrupt frame
fails its length/CRC check: skipped. A WAL file deleted (or the whole spool folder),
unreadable or undecodable is reported and skipped; the ledger makes the folder again, so
later records still flow, and ``backlog`` counts exactly the records still to upload.

``append`` raises :class:`LedgerUnavailable` (a DatawheelError) when it cannot make the
records durable (spool disk full or read-only, out of file descriptors, ledger closed):
nothing of that call was stored, so a server answers 503 and the client may retry.

One job per module:

* :mod:`.records`: :class:`Prediction`, :class:`Feedback`, :class:`PredictionBatch` and
  their Arrow schemas;
* :mod:`.wal`: the frame format, encoding records to frames and frames back to tables;
* :mod:`.writer`: :class:`Ledger`, the WAL files, the background upload and the backlog;
* :mod:`.spool`: the spool folder (its lock, the files left in it, one file to its
  segments) and :class:`LedgerUnavailable`;
* :mod:`.segments`: the Parquet segments in the store (key layout, partitioning);
* :mod:`.reader`: :func:`read_ledger`, what every consumer of the ledger reads it with.
"""

from __future__ import annotations

from datawheel.serving.ledger.reader import read_ledger
from datawheel.serving.ledger.records import Feedback, Prediction, PredictionBatch
from datawheel.serving.ledger.spool import LedgerUnavailable
from datawheel.serving.ledger.writer import Ledger

__all__ = [
    "Feedback",
    "Ledger",
    "LedgerUnavailable",
    "Prediction",
    "PredictionBatch",
    "read_ledger",
]
