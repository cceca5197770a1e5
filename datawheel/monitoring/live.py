"""Live drift in the server: a sliding window of bin counts against the model's reference.

For every served row, each feature's value is put in one of the reference's bins
(:class:`~datawheel.monitoring.baseline.FeatureReference` ``edges``: the training split's
quantiles for a numeric feature, the midpoints between values for a categorical one), and
the counts go into the newest block of a ring; blocks older than the window
(``window_rows``, 2,000 by default) fall out, so the window always holds the latest
2,000 to 2,000 + one block (window / 8) rows. Per feature, PSI (:func:`stats.psi`)
compares the window's shares with the reference's, over the bins plus two more:

* **missing**: NaN and infinite values (what the model imputes), against the reference's
  missing share, so a feature that starts arriving empty is drift too;
* **unseen** (categorical features): a value that is none of the reference's categories.

Values are binned as float32, the type the model reads. Prediction drift is the PSI of the
window's predicted-class counts against the model's predicted classes on its test split
(``DriftReference.predictions``), or, for a reference without them, the training label
distribution (``labels``); :attr:`LiveDrift.prediction_source` says which.

Every PSI is NaN until the window holds ``min_rows`` rows (a quarter of the window, 500 by
default): with 10 bins, the PSI of n rows drawn from the reference itself is about 9/n,
and the worst of 64 such features about 25/n, so fewer rows would be mostly noise.

Cost per batch: one comparison of the ``[rows, features]`` values with a ``[edges,
features]`` table and one ``bincount``, vectorised over features (for at most
:data:`COMPARE_MAX_EDGES` edges per feature; beyond that one ``np.searchsorted`` over every
feature's edges at once, on integer keys ``feature << 32 | order-preserving bits``; for
64 features x 9 edges that search measured 3-4x slower than the comparison).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datawheel.monitoring.baseline import DriftReference, FeatureReference
from datawheel.monitoring.stats import psi

__all__ = ["COMPARE_MAX_EDGES", "OTHER", "LiveDrift", "LiveDriftConfig", "LiveScores"]

COMPARE_MAX_EDGES = 32  # more edges than this on some feature: searchsorted instead
OTHER = "_other"  # the label of the features beyond the cap
_CHUNK_ROWS = 2048  # rows binned at once (bounds the comparison's temporary array)


@dataclass(frozen=True)
class LiveDriftConfig:
    window_rows: int = 2000  # the latest rows compared with the reference
    blocks: int = 8  # eviction granularity: the window falls out window_rows / blocks at a time
    min_rows: int | None = None  # PSI is NaN while the window holds fewer (window / 4)
    feature_cap: int = 32  # features exported by name; the others as one "_other" series

    def __post_init__(self) -> None:
        bad_min = self.min_rows is not None and self.min_rows < 0
        if self.window_rows < 1 or self.blocks < 1 or bad_min or self.feature_cap < 0:
            raise ValueError(f"invalid live drift settings: {self}")

    @property
    def warmup_rows(self) -> int:
        """Rows the window must hold before PSI is reported: ``min_rows``, else a quarter."""
        return max(1, self.window_rows // 4 if self.min_rows is None else self.min_rows)


@dataclass(frozen=True)
class LiveScores:
    """One reading of the window: its rows, each monitored feature's PSI, prediction PSI."""

    rows: int
    features: list[str]
    psi: np.ndarray  # float64 [features], NaN below min_rows
    prediction: float | None  # None: no reference class distribution to compare with

    def worst(self) -> float:
        """The largest feature PSI (NaN below min_rows or with no monitored feature)."""
        finite = self.psi[~np.isnan(self.psi)]
        return float(finite.max()) if finite.size else float("nan")

    def labelled(self, cap: int) -> list[tuple[str, float]]:
        """The first ``cap`` features by name, then ``_other``: the largest PSI of the rest."""
        named = [(f, float(v)) for f, v in zip(self.features[:cap], self.psi[:cap], strict=True)]
        rest = self.psi[cap:]
        if rest.size:
            finite = rest[~np.isnan(rest)]
            named.append((OTHER, float(finite.max()) if finite.size else float("nan")))
        return named


def _ceil32(values: Sequence[float]) -> np.ndarray:
    """The smallest float32 >= each value: for float32 v, ``v >= e`` iff ``v >= ceil32(e)``."""
    e64 = np.asarray(values, np.float64)
    e32 = e64.astype(np.float32)
    low = e32.astype(np.float64) < e64
    e32[low] = np.nextafter(e32[low], np.float32(np.inf))
    return e32


def _sortable(x32: np.ndarray) -> np.ndarray:
    """float32 -> uint32 whose unsigned order is the float order (NaN aside)."""
    bits = np.ascontiguousarray(x32, np.float32).view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))


def _category_values(ref: FeatureReference) -> np.ndarray | None:
    """A numeric categorical feature's values, sorted as its bins are; else None."""
    try:
        values = np.sort(np.asarray([float(k) for k in ref.categories], np.float64))
    except ValueError:
        return None
    as32 = values.astype(np.float32)
    if as32.size != len(ref.edges) + 1 or not np.isfinite(as32).all() or (np.diff(as32) <= 0).any():
        return None
    return as32


class _Bins:
    """The reference bins of the monitored features, laid out for vectorised counting.

    Row f of :attr:`reference` holds feature f's shares: its bins (padded with zeros to
    the widest feature), then the missing share in the last column."""

    def __init__(self, refs: Sequence[FeatureReference]) -> None:
        n = len(refs)
        edges = [_ceil32(r.edges) for r in refs]
        cats = [_category_values(r) if r.kind == "categorical" else None for r in refs]
        self.n_bins = np.array(
            [len(e) + 1 + (c is not None) for e, c in zip(edges, cats, strict=True)], np.intp
        )
        self.width = int(self.n_bins.max(initial=1)) + 1  # + the missing column
        self.missing = self.width - 1
        self.offsets = np.arange(n, dtype=np.intp) * self.width
        self.reference = np.zeros((n, self.width), np.float64)
        for f, r in enumerate(refs):
            total = r.rows + r.missing
            share_missing = r.missing / total if total else 0.0
            props = np.asarray(r.proportions or [0.0], np.float64)[: len(edges[f]) + 1]
            self.reference[f, : props.size] = props * (1.0 - share_missing)
            self.reference[f, self.missing] = share_missing
        most = max((len(e) for e in edges), default=0)
        self.by_compare = most <= COMPARE_MAX_EDGES
        self.table = np.full((max(most, 1), n), np.inf, np.float32)  # [edge, feature]
        for f, e in enumerate(edges):
            self.table[: e.size, f] = e
        self.keys = np.concatenate(
            [
                (np.uint64(f) << np.uint64(32)) | _sortable(e).astype(np.uint64)
                for f, e in enumerate(edges)
            ]
            or [np.zeros(0, np.uint64)]
        )
        self.key_starts = np.cumsum([0] + [e.size for e in edges[:-1]], dtype=np.intp)[:n]
        self.feature_keys = np.arange(n, dtype=np.uint64) << np.uint64(32)
        self.cat_columns = np.array([f for f, c in enumerate(cats) if c is not None], np.intp)
        chosen = [c for c in cats if c is not None]
        widest = max((c.size for c in chosen), default=1)
        self.cat_values = np.full((len(chosen), widest), np.nan, np.float32)  # [column, value]
        for i, c in enumerate(chosen):
            self.cat_values[i, : c.size] = c
        self.cat_rows = np.arange(len(chosen), dtype=np.intp)[None, :]
        self.cat_unseen = self.n_bins[self.cat_columns] - 1

    def counts(self, x: np.ndarray) -> np.ndarray:
        """int64 ``[features, width]`` counts of float32 rows ``x`` ``[n, features]``."""
        n, nf = x.shape
        b: np.ndarray
        if self.by_compare:  # = np.searchsorted(edges_f, x[:, f], side="right") for every f
            b = (x[None, :, :] >= self.table[:, None, :]).sum(axis=0, dtype=np.uint8)
        else:
            query = (_sortable(x).astype(np.uint64) | self.feature_keys).ravel()
            found = np.searchsorted(self.keys, query, side="right").reshape(n, nf)
            b = found - self.key_starts
        if self.cat_columns.size:  # the value the bin stands for, or the unseen bin
            bins = b[:, self.cat_columns].astype(np.intp)
            seen = x[:, self.cat_columns] == self.cat_values[self.cat_rows, bins]
            b[:, self.cat_columns] = np.where(seen, bins, self.cat_unseen)
        finite = np.isfinite(x)
        if not finite.all():
            b = np.where(finite, b, self.missing)
        flat = (b + self.offsets).ravel()
        return np.bincount(flat, minlength=nf * self.width).reshape(nf, self.width)


class _Block:
    """Counts of up to about ``block_rows`` consecutive rows: one slot of the ring."""

    __slots__ = ("classes", "counts", "rows")

    def __init__(self, features: int, width: int, classes: int) -> None:
        self.rows = 0
        self.counts = np.zeros((features, width), np.int64)
        self.classes = np.zeros(classes, np.int64)


class LiveDrift:
    """The window of one served version; ``observe`` on the inference thread, ``scores`` on
    a scrape, under one lock.

    ``observe`` only queues a batch (it keeps a reference to the rows) until
    ``flush_rows`` rows are queued or ``scores`` is called, and then bins them at once, so
    batches of one row cost a list append, not a round of numpy calls each.

    ``features`` are the model's input columns in order; a column the reference does not
    describe (or a categorical one whose values are not numbers) is not monitored and is
    listed in :attr:`skipped`.
    """

    def __init__(
        self,
        reference: DriftReference,
        features: Sequence[str],
        classes: Sequence[str],
        config: LiveDriftConfig | None = None,
        *,
        flush_rows: int = 64,
    ) -> None:
        self.config = config or LiveDriftConfig()
        by_name = {f.name: f for f in reference.features}
        columns, refs, self.skipped = [], [], []
        for i, name in enumerate(features):
            ref = by_name.get(name)
            if ref is not None and (ref.kind == "numeric" or _category_values(ref) is not None):
                columns.append(i)
                refs.append(ref)
            else:
                self.skipped.append(name)
        self.n_features = len(features)
        self.features = [r.name for r in refs]
        self._columns = None if len(columns) == len(features) else np.asarray(columns, np.intp)
        self._bins = _Bins(refs)
        self.classes = list(classes)
        self.prediction_source, self._class_reference = self._prediction_reference(reference)
        self._block_rows = max(1, self.config.window_rows // self.config.blocks)
        self._flush_rows = max(1, flush_rows)
        self._lock = threading.Lock()
        self._blocks: deque[_Block] = deque()
        self._rows = 0  # in the blocks
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def _prediction_reference(self, reference: DriftReference) -> tuple[str, np.ndarray | None]:
        for source, counts in (
            ("test-split predictions", reference.predictions),
            ("training labels", reference.labels),
        ):
            shares = np.array([counts.get(c, 0) for c in self.classes], np.float64)
            if shares.sum() > 0:
                return source, shares / shares.sum()
        return "none", None

    @property
    def rows(self) -> int:
        """Rows in the window (queued ones included)."""
        with self._lock:
            self._flush()
            return self._rows

    def observe(self, rows: np.ndarray, predicted: np.ndarray | Sequence[int]) -> None:
        """Add one batch: raw rows ``[n, n_features]`` and each row's predicted class index."""
        x = np.asarray(rows, np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows [n, {self.n_features}], got shape {x.shape}")
        classes = np.asarray(predicted, np.intp)
        if classes.shape != (len(x),):
            raise ValueError(f"expected {len(x)} predicted class indices, got {classes.shape}")
        with self._lock:
            self._pending.append((x, classes))
            self._pending_rows += len(x)
            if self._pending_rows >= self._flush_rows:
                self._flush()

    def _flush(self) -> None:
        """Bin the queued rows into the ring (the caller holds the lock)."""
        if not self._pending:
            return
        if len(self._pending) == 1:
            ((x, classes),) = self._pending
        else:
            x = np.concatenate([p[0] for p in self._pending])
            classes = np.concatenate([p[1] for p in self._pending])
        self._pending, self._pending_rows = [], 0
        keep = self.config.window_rows  # older rows of a huge batch would fall out at once
        x, classes = x[-keep:], classes[-keep:]
        if self._columns is not None:
            x = x[:, self._columns]
        step = min(self._block_rows, _CHUNK_ROWS)
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            class_counts = np.bincount(classes[start : start + step], minlength=len(self.classes))
            if class_counts.size > len(self.classes):
                raise ValueError(f"predicted class indices must be below {len(self.classes)}")
            self._add(len(chunk), self._bins.counts(chunk), class_counts)

    def _add(self, n: int, counts: np.ndarray, class_counts: np.ndarray) -> None:
        blocks = self._blocks
        if not blocks or blocks[-1].rows >= self._block_rows:
            blocks.append(_Block(counts.shape[0], counts.shape[1], len(self.classes)))
        block = blocks[-1]
        block.rows += n
        block.counts += counts
        block.classes += class_counts
        self._rows += n
        while len(blocks) > 1 and self._rows - blocks[0].rows >= self.config.window_rows:
            self._rows -= blocks.popleft().rows

    def scores(self) -> LiveScores:
        """PSI of every monitored feature and of the predicted classes, over the window."""
        with self._lock:
            self._flush()
            rows = self._rows
            counts = np.zeros((len(self.features), self._bins.width), np.int64)
            classes = np.zeros(len(self.classes), np.int64)
            for block in self._blocks:
                counts += block.counts
                classes += block.classes
        enough = rows >= self.config.warmup_rows
        nan = np.full(len(self.features), np.nan)
        values = np.asarray(psi(self._bins.reference, counts), np.float64) if enough else nan
        prediction: float | None = None
        if self._class_reference is not None:
            prediction = float(psi(self._class_reference, classes)) if enough else float("nan")
        return LiveScores(rows, list(self.features), values.reshape(-1), prediction)
