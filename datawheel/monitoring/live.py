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

Cost per batch: one comparison of the ``[rows, features]`` values with an ``[edges,
features]`` table, summed over rows into the rows at or above each edge, added to the
newest block; the bins (differences of those tallies) and PSI are computed only when the
window is read, on a scrape. Vectorised over features, no loop per feature or row. That
holds for at most :data:`COMPARE_MAX_EDGES` edges per feature (a categorical feature has
two per value); beyond, one ``np.searchsorted`` over every feature's edges at once
(integer keys ``feature << 32 | order-preserving bits``) and a ``bincount``, which for 64
features x 9 edges measured 3-4x slower than the comparison.
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

COMPARE_MAX_EDGES = 48  # more edges than this on some feature: searchsorted instead
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

    Every feature is a list of edges (float32, see :func:`_ceil32`): a numeric feature's
    quantile edges; for a categorical feature each value ``c`` and the next float32 above
    it, so the rows >= ``c`` minus the rows >= that next float are the rows equal to ``c``
    and every other raw bin holds values none of the categories. A batch is tallied as the
    rows at or above each edge (:meth:`tally`, all a batch costs); the window's tallies are
    turned into bins only when it is read (:meth:`bin_counts`).

    Row f of :attr:`reference` holds feature f's shares in the PSI layout: a numeric
    feature's bins, or a categorical feature's values and then its unseen bin; zeros up to
    the widest feature; the missing share in the last column."""

    def __init__(self, refs: Sequence[FeatureReference]) -> None:
        n = len(refs)
        cats = [_category_values(r) if r.kind == "categorical" else None for r in refs]
        edges = [
            _ceil32(r.edges)
            if c is None
            else np.column_stack([c, np.nextafter(c, np.float32(np.inf))]).ravel()
            for r, c in zip(refs, cats, strict=True)
        ]
        self.n_edges = max((e.size for e in edges), default=0) or 1
        self.by_compare = self.n_edges <= COMPARE_MAX_EDGES
        self.table = np.full((self.n_edges, n), np.inf, np.float32)  # [edge, feature]
        for f, e in enumerate(edges):
            self.table[: e.size, f] = e
        # PSI bins: numeric k edges -> k + 1 bins; categorical m values -> m + unseen
        n_bins = [e.size + 1 if c is None else c.size + 1 for e, c in zip(edges, cats, strict=True)]
        self.width = max(n_bins, default=1) + 1  # + the missing column
        self.missing = self.width - 1
        dest = np.zeros((self.n_edges + 1, n), np.intp)  # raw bin -> PSI bin, per feature
        raw = np.arange(self.n_edges + 1)
        for f, c in enumerate(cats):
            if c is None:
                dest[:, f] = np.minimum(raw, n_bins[f] - 1)  # raw bins past the last edge are 0
            else:
                dest[:, f] = np.where(raw % 2 == 1, np.minimum(raw // 2, c.size), c.size)
        self.dest = (dest + np.arange(n) * self.width).ravel()  # into [feature, width], flat
        self.reference = np.zeros((n, self.width), np.float64)
        for f, r in enumerate(refs):
            total = r.rows + r.missing
            share_missing = r.missing / total if total else 0.0
            props = np.asarray(r.proportions or [0.0], np.float64)[: n_bins[f]]
            self.reference[f, : props.size] = props * (1.0 - share_missing)
            self.reference[f, self.missing] = share_missing
        # the search (more edges than COMPARE_MAX_EDGES): keys feature << 32 | bits
        self.keys = np.concatenate(
            [
                (np.uint64(f) << np.uint64(32)) | _sortable(e).astype(np.uint64)
                for f, e in enumerate(edges)
            ]
            or [np.zeros(0, np.uint64)]
        )
        self.starts = np.cumsum([0] + [e.size for e in edges[:-1]], dtype=np.intp)[:n]
        self.feature_keys = np.arange(n, dtype=np.uint64) << np.uint64(32)

    def tally(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For float32 rows ``x`` ``[n, features]`` (at most 2**31): ``[edges, features]`` rows
        at or above each edge, and ``[features]`` finite values (the rest are missing)."""
        n, nf = x.shape
        finite = np.isfinite(x)
        if finite.all():
            finite_rows = np.full(nf, n, np.int64)
        else:  # +-inf is missing too; NaN compares false with every edge
            x = np.where(finite, x, np.float32(np.nan))
            finite_rows = finite.sum(axis=0, dtype=np.int64)
        if self.by_compare:
            above = (x[:, None, :] >= self.table[None]).reshape(n, -1).view(np.uint8)
            ge = above.sum(axis=0, dtype=np.int32)  # int32: 2x faster than int64 here
            return ge.reshape(self.n_edges, nf), finite_rows
        query = (_sortable(x).astype(np.uint64) | self.feature_keys).ravel()
        b = np.searchsorted(self.keys, query, side="right").reshape(n, nf) - self.starts
        b = np.where(finite, b + np.arange(nf) * (self.n_edges + 1), nf * (self.n_edges + 1))
        raw = np.bincount(b.ravel(), minlength=nf * (self.n_edges + 1) + 1)[:-1]
        raw = raw.reshape(nf, self.n_edges + 1)
        ge = np.cumsum(raw[:, ::-1], axis=1)[:, ::-1][:, 1:]  # rows in the bins above edge k
        return np.ascontiguousarray(ge.T, np.int64), finite_rows

    def bin_counts(self, ge: np.ndarray, finite: np.ndarray, rows: int) -> np.ndarray:
        """int64 ``[features, width]`` counts in the PSI layout, from tallies (summed)."""
        nf = ge.shape[1]
        steps = np.concatenate([finite[None], ge, np.zeros((1, nf), np.int64)])
        raw = steps[:-1] - steps[1:]  # [raw bin, feature]
        out = np.bincount(self.dest, weights=raw.ravel(), minlength=nf * self.width)
        out = out.reshape(nf, self.width).round().astype(np.int64)
        out[:, self.missing] = rows - finite
        return out

    def counts(self, x: np.ndarray) -> np.ndarray:
        """:meth:`bin_counts` of one batch."""
        return self.bin_counts(*self.tally(x), len(x))


class _Block:
    """Tallies of up to about ``block_rows`` consecutive rows: one slot of the ring."""

    __slots__ = ("classes", "finite", "ge", "rows")

    def __init__(self, edges: int, features: int, classes: int) -> None:
        self.rows = 0
        self.ge = np.zeros((edges, features), np.int64)
        self.finite = np.zeros(features, np.int64)
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
            self._add(len(chunk), *self._bins.tally(chunk), class_counts)

    def _add(self, n: int, ge: np.ndarray, finite: np.ndarray, class_counts: np.ndarray) -> None:
        blocks = self._blocks
        if not blocks or blocks[-1].rows >= self._block_rows:
            blocks.append(_Block(ge.shape[0], ge.shape[1], len(self.classes)))
        block = blocks[-1]
        block.rows += n
        block.ge += ge
        block.finite += finite
        block.classes += class_counts
        self._rows += n
        while len(blocks) > 1 and self._rows - blocks[0].rows >= self.config.window_rows:
            self._rows -= blocks.popleft().rows

    def scores(self) -> LiveScores:
        """PSI of every monitored feature and of the predicted classes, over the window."""
        with self._lock:
            self._flush()
            rows = self._rows
            ge = np.zeros((self._bins.n_edges, len(self.features)), np.int64)
            finite = np.zeros(len(self.features), np.int64)
            classes = np.zeros(len(self.classes), np.int64)
            for block in self._blocks:
                ge += block.ge
                finite += block.finite
                classes += block.classes
        counts = self._bins.bin_counts(ge, finite, rows)
        enough = rows >= self.config.warmup_rows
        nan = np.full(len(self.features), np.nan)
        values = np.asarray(psi(self._bins.reference, counts), np.float64) if enough else nan
        prediction: float | None = None
        if self._class_reference is not None:
            prediction = float(psi(self._class_reference, classes)) if enough else float("nan")
        return LiveScores(rows, list(self.features), values.reshape(-1), prediction)
