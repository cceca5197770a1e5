"""The uncertainty queue: the model's predictions that nobody has labelled yet, least sure first.

Ranked by the **margin** between the two highest probabilities (smallest first) or by the
**entropy** of the probabilities (highest first); ties go to the newest prediction.
A prediction leaves the queue once it has a label: a feedback row in the ledger, or a
label this studio has just sent (:func:`remember_label`), which the server's ledger only
uploads a few seconds later.

Fast on a large ledger: every prediction segment is read once (the ledger's schema, as
:func:`~datawheel.serving.ledger.reader.read_ledger` reads it) and kept parsed in
``studio.cache``, its scores computed with numpy over the whole probabilities column;
a request lists the segments, parses only new ones, masks the labelled ids and slices one
page out of the cached ranking. Segments are immutable (a WAL uploaded again rewrites its
own segment with the same rows), so a key seen before never needs reading again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datawheel.data.categorical import decode_column
from datawheel.flywheel.rows import ServedVersion, served_version
from datawheel.serving.ledger.records import SCHEMAS
from datawheel.serving.ledger.segments import segment_prefix, with_added_columns
from datawheel.storage import KeyNotFoundError, Store
from datawheel.studio.context import Studio

__all__ = [
    "BY",
    "LedgerView",
    "labeled_today",
    "labeled_today_now",
    "ledger_view",
    "margin_entropy",
    "remember_label",
    "sent_ids",
    "served",
    "uncertain_page",
]

BY = ("margin", "entropy")
_DAY_S = 86400.0
_SENT_KEEP_S = 3600.0  # how long a label this studio sent is remembered (the ledger has it by then)
_PRED_COLS = ["id", "ts", "version", "inputs", "label", "probabilities", "variant"]


def margin_entropy(probs: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a list<double> column: (top-1 minus top-2, entropy in nats, top-1).

    Rows of different lengths are padded with zeros, which change neither figure; a row
    with one probability has margin 1; NaN counts as 0."""
    probs = probs.combine_chunks() if isinstance(probs, pa.ChunkedArray) else probs
    n = len(probs)
    lengths = pc.fill_null(pc.list_value_length(probs), 0).to_numpy(zero_copy_only=False)
    width = int(lengths.max()) if n else 0
    p = np.zeros((n, max(width, 2)), np.float64)
    if n and width:
        flat = pc.list_flatten(probs).to_numpy(zero_copy_only=False).astype(np.float64)
        rows = np.repeat(np.arange(n), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        cols = np.arange(len(flat)) - np.repeat(starts, lengths)
        p[rows, cols] = np.nan_to_num(flat, nan=0.0)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    margin = np.where(lengths > 1, top2[:, 0] - top2[:, 1], 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return margin, entropy, top2[:, 0]


@dataclass
class _Part:
    """One parsed prediction segment."""

    table: pa.Table  # _PRED_COLS
    ids: np.ndarray
    ts: np.ndarray
    margin: np.ndarray
    entropy: np.ndarray
    confidence: np.ndarray


@dataclass
class LedgerView:
    """Every prediction and feedback segment of one model read so far, parsed."""

    model: str
    parts: dict[str, _Part] = field(default_factory=dict)
    feedback: dict[str, np.ndarray] = field(default_factory=dict)  # key -> its ids
    combined: tuple[tuple[str, ...], dict[str, Any]] | None = None
    ranked: dict[tuple[tuple[str, ...], str], np.ndarray] = field(default_factory=dict)
    labelled: tuple[tuple[Any, ...], np.ndarray] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, store: Store, sent: set[str]) -> tuple[dict[str, Any], np.ndarray, set[str]]:
        """(all predictions, concatenated; a labelled flag per row; the ids labelled today),
        reading only the segments not read before."""
        with self.lock:
            keys = _segments(store, "predictions", self.model)
            _sync(self.parts, keys, lambda key: _read_part(store, key))
            fb_keys = _segments(store, "feedback", self.model)
            _sync(self.feedback, fb_keys, lambda key: _read_feedback(store, key))
            listing = tuple(k for k in keys if k in self.parts)
            if self.combined is None or self.combined[0] != listing:
                self.combined = (listing, _combine([self.parts[k] for k in listing]))
                self.ranked = {}
            rows = self.combined[1]
            fb_listing = tuple(k for k in fb_keys if k in self.feedback)
            if self.labelled is None or self.labelled[0] != (listing, fb_listing):
                ids = [self.feedback[k] for k in fb_listing]
                done = np.concatenate(ids) if ids else np.zeros(0, object)
                self.labelled = ((listing, fb_listing), _flags(rows, done))
            flags = self.labelled[1]
            if sent:
                flags = flags | _flags(rows, np.asarray(list(sent), dtype=object))
            today = f"/date={time.strftime('%Y-%m-%d', time.gmtime())}/"
            today_ids = {i for k in fb_listing if today in k for i in self.feedback[k]}
            return rows, flags, today_ids

    def ranking(self, by: str) -> np.ndarray:
        """Row positions of the combined predictions, most uncertain first (duplicates out)."""
        assert self.combined is not None
        listing, rows = self.combined
        if (listing, by) not in self.ranked:
            age = -rows["ts"]
            score = rows["margin"] if by == "margin" else -rows["entropy"]
            order = np.lexsort((age, score))
            self.ranked[(listing, by)] = order[~rows["duplicate"][order]]
        return self.ranked[(listing, by)]


def _flags(rows: dict[str, Any], ids: np.ndarray) -> np.ndarray:
    """True for each combined row whose id is one of ``ids`` (hash lookups, no sorting)."""
    flags = np.zeros(len(rows["ids"]), np.bool_)
    if len(ids) and len(flags):
        at = rows["index"].get_indexer(pd.unique(ids))
        flags[rows["unique"][at[at >= 0]]] = True
    return flags


T = TypeVar("T")


def _sync(cache: dict[str, T], keys: list[str], read: Callable[[str], T | None]) -> None:
    """``cache`` holds exactly the readable ``keys``: new ones read once, gone ones dropped."""
    for key in keys:
        if key not in cache and (value := read(key)) is not None:
            cache[key] = value
    for key in set(cache) - set(keys):
        del cache[key]


def _segments(store: Store, kind: str, model: str) -> list[str]:
    return [k for k in store.list(segment_prefix(kind, model)) if k.endswith(".parquet")]


def _read_table(store: Store, key: str, kind: str, columns: list[str]) -> pa.Table | None:
    try:
        data = store.get_bytes(key)
        table = pq.read_table(pa.BufferReader(data), schema=SCHEMAS[kind])
    except KeyNotFoundError:
        return None
    except (pa.ArrowException, OSError, ValueError):
        return None  # an unreadable segment: the harvest names it; the queue does without
    return with_added_columns(kind, table).select(columns)


def _read_part(store: Store, key: str) -> _Part | None:
    table = _read_table(store, key, "predictions", _PRED_COLS)
    if table is None:
        return None
    margin, entropy, confidence = margin_entropy(table.column("probabilities"))
    ids = table.column("id").to_numpy(zero_copy_only=False).astype(object)
    ts = table.column("ts").to_numpy(zero_copy_only=False).astype(np.float64)
    return _Part(table, ids, ts, margin, entropy, confidence)


def _read_feedback(store: Store, key: str) -> np.ndarray | None:
    table = _read_table(store, key, "feedback", ["id", "ts"])
    return None if table is None else table.column("id").to_numpy(zero_copy_only=False)


def _combine(parts: list[_Part]) -> dict[str, Any]:
    if not parts:
        empty = np.zeros(0, np.float64)
        return {
            "ids": np.zeros(0, object),
            "duplicate": np.zeros(0, np.bool_),
            "unique": np.zeros(0, np.int64),
            "index": pd.Index([], dtype=object),
            "parts": [],
            "starts": np.zeros(1, np.int64),
            **{name: empty for name in ("ts", "margin", "entropy", "confidence")},
        }
    ids = np.concatenate([p.ids for p in parts])
    duplicate = pd.Series(ids, dtype=object).duplicated().to_numpy()
    unique = np.flatnonzero(~duplicate)
    return {
        "ids": ids,
        "duplicate": duplicate,
        "unique": unique,  # row positions of the first row of each id...
        "index": pd.Index(ids[unique], dtype=object),  # ...and those ids, for lookups
        "parts": [p.table for p in parts],
        "starts": np.cumsum([0] + [p.table.num_rows for p in parts]),
        **{
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in ("ts", "margin", "entropy", "confidence")
        },
    }


def ledger_view(studio: Studio) -> LedgerView:
    """This studio's parsed view of its model's ledger (made on first use)."""
    view = studio.cache.get("review_ledger")
    if not isinstance(view, LedgerView) or view.model != studio.model:
        view = studio.cache["review_ledger"] = LedgerView(studio.model)
    return view


def _sent(studio: Studio) -> dict[str, tuple[float, str]]:
    sent: dict[str, tuple[float, str]] = studio.cache.setdefault("labels_sent", {})
    return sent


def remember_label(studio: Studio, item_id: str, label: str) -> None:
    """Note that this studio has just labelled ``item_id`` (a prediction id or a row id):
    it leaves its queue now, not when the server's ledger uploads the label."""
    sent = _sent(studio)
    now = time.time()
    if len(sent) > 10_000:
        for key in [k for k, (ts, _) in sent.items() if now - ts > _SENT_KEEP_S]:
            del sent[key]
    sent[item_id] = (now, label)


def sent_ids(studio: Studio) -> set[str]:
    now = time.time()
    return {k for k, (ts, _) in _sent(studio).items() if now - ts <= _SENT_KEEP_S}


def labeled_today(studio: Studio, today_ids: set[str], now: float | None = None) -> int:
    """Distinct predictions labelled today (UTC): ids in today's feedback segments, plus the
    labels this studio sent today that the ledger does not hold yet."""
    now = time.time() if now is None else now
    start = np.floor(now / _DAY_S) * _DAY_S
    sent = {k for k, (t, _) in _sent(studio).items() if t >= start and not k.startswith("row:")}
    return len(today_ids | sent)


def labeled_today_now(studio: Studio) -> int:
    """Today's label count, from the ledger as it is now (no ranking needed)."""
    _, _, today_ids = ledger_view(studio).refresh(studio.store, sent_ids(studio))
    return labeled_today(studio, today_ids)


def uncertain_page(studio: Studio, by: str, limit: int, offset: int) -> dict[str, Any]:
    """One page of the uncertainty queue, with the queue's size and today's label count."""
    view = ledger_view(studio)
    rows, labelled, today_ids = view.refresh(studio.store, sent_ids(studio))
    ranked = view.ranking(by)
    ranked = ranked[~labelled[ranked]]
    picked = ranked[offset : offset + limit]
    score = rows["margin"] if by == "margin" else rows["entropy"]
    items = []
    for i in picked.tolist():
        part = int(np.searchsorted(rows["starts"], i, side="right")) - 1
        rec = rows["parts"][part].slice(i - int(rows["starts"][part]), 1).to_pylist()[0]
        sv = served(studio, str(rec["version"]))
        items.append(
            {
                "id": rec["id"],
                "ts": rec["ts"],
                "version": rec["version"],
                "variant": rec["variant"],
                "inputs": _inputs(sv, rec["inputs"] or []),
                "features": sv.features,
                "predicted": rec["label"],
                "probabilities": _finite(rec["probabilities"] or []),
                "classes": sv.classes,
                "confidence": float(rows["confidence"][i]),
                "score": float(score[i]),
            }
        )
    return {
        "items": items,
        "total": len(ranked),
        "labeled_today": labeled_today(studio, today_ids),
    }


def served(studio: Studio, version: str) -> ServedVersion:
    """What the registry says of ``model:version`` (features, classes, categories), cached."""
    known: dict[str, ServedVersion] = studio.cache.setdefault("served_versions", {})
    if version not in known:
        known[version] = served_version(studio.store, studio.model, version)
    return known[version]


def _inputs(sv: ServedVersion, values: list[float]) -> list[Any]:
    """A ledger row's inputs as a person reads them: numbers (null when missing), and each
    categorical code of the serving version as its category (null: missing or other)."""
    out: list[Any] = _finite(values)
    if sv.features and sv.categories and len(values) == len(sv.features):
        for j, f in enumerate(sv.features):
            if f in sv.categories:
                out[j] = decode_column(np.asarray([values[j]]), sv.categories[f])[0]
    return out


def _finite(values: list[float]) -> list[float | None]:
    """JSON has no NaN: a missing value is null."""
    return [v if v == v and v not in (float("inf"), float("-inf")) else None for v in values]
