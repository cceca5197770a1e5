"""Per-feature accumulators: fold current chunks in, then compute the feature's statistics.

One :class:`NumericAccumulator` or :class:`CategoricalAccumulator` per feature. ``add``
takes one chunk's column (the whole sample when it fits in memory); ``finish`` returns a
:class:`Measured` with every statistic but not the verdict, which needs the other features'
p-values (Benjamini-Hochberg, in :mod:`datawheel.monitoring.engine`).

Numeric: the chunk is sorted once; the grid counts (:mod:`~datawheel.monitoring.streaming`)
and the PSI bin counts come from ``searchsorted`` of the grid and the bin edges into it.
When the whole current sample came in one chunk and the raw sorted reference is at hand,
KS is made exact: only the intervals whose bound exceeds ``D_grid`` can hold the supremum,
and the current values inside them are ranked in the reference directly. Wasserstein-1 is
exact (:func:`~datawheel.monitoring.stats.wasserstein1`) up to ``EXACT_W1_ROWS`` reference
plus current values in memory, the grid estimate with its error bound above that.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from datawheel.monitoring import stats
from datawheel.monitoring.baseline import FeatureReference, category_keys
from datawheel.monitoring.streaming import (
    Grid,
    GridCounts,
    count_below,
    count_both,
    ks_intervals,
    w1_from_grid,
)

__all__ = ["EXACT_W1_ROWS", "CategoricalAccumulator", "Measured", "NumericAccumulator"]

EXACT_W1_ROWS = 200_000


@dataclass
class Measured:
    """One feature's statistics against the reference, before the verdict."""

    ref: FeatureReference
    rows: int  # non-missing current values
    missing: int
    p_value: float | None = None  # KS (numeric) or chi-square (categorical)
    ks: float | None = None
    ks_error: float | None = None  # 0 when exact
    psi: float | None = None
    wasserstein: float | None = None  # W1 / reference std (std 0: W1 itself)
    w1_error: float | None = None  # bound on |W1 estimate - W1|, same units
    chi2: float | None = None
    js: float | None = None
    new_categories: dict[str, int] = field(default_factory=dict)
    histogram: dict[str, list[float] | list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _floats(col: np.ndarray) -> np.ndarray:
    if col.dtype == np.float32 or col.dtype == np.float64:
        return col
    if col.dtype == object:
        raise TypeError("not numeric")
    return col.astype(np.float64)


class NumericAccumulator:
    def __init__(self, ref: FeatureReference, grid: Grid | None) -> None:
        self.ref, self.grid = ref, grid
        self.edges = np.asarray(ref.edges, np.float64)
        self.counts = GridCounts.empty(grid.points.size) if grid is not None else None
        self.below_edges = np.zeros(self.edges.size, np.int64)
        self.rows = self.missing = self.chunks = 0
        self.lo, self.hi = np.inf, -np.inf
        self.kept: np.ndarray | None = None  # the sorted current, while it is one chunk

    def add(self, col: np.ndarray) -> None:
        f = _floats(col)
        finite = np.isfinite(f)
        n_ok = int(np.count_nonzero(finite))
        v = np.sort(f if n_ok == f.size else f[finite])
        self.missing += f.size - n_ok
        self.rows += n_ok
        self.chunks += 1
        self.kept = v if self.chunks == 1 else None
        if v.size == 0:
            return
        self.lo, self.hi = min(self.lo, float(v[0])), max(self.hi, float(v[-1]))
        self.below_edges += count_below(v, self.edges, "left")
        if self.counts is not None and self.grid is not None:
            self.counts.add_sorted(v, self.grid.points, self.grid.center)

    def finish(self, ref_sorted: np.ndarray | None) -> Measured:
        out = Measured(self.ref, self.rows, self.missing)
        bins = np.diff(np.concatenate(([0], self.below_edges, [self.rows])))
        out.histogram = {
            "edges": self.edges.tolist(),
            "reference": list(self.ref.proportions),
            "current": (bins / max(self.rows, 1)).tolist(),
        }
        if self.ref.rows == 0 or self.grid is None or self.counts is None:
            out.notes.append("the reference has no values for this feature")
            return out
        if self.rows == 0:
            out.notes.append("no non-missing values in the current sample")
            return out
        out.psi = stats.psi(self.ref.proportions, bins)
        n, m = self.grid.rows if ref_sorted is None else ref_sorted.size, self.rows
        d_grid, up = ks_intervals(self.grid, self.counts)
        cur = self.kept
        if ref_sorted is not None and cur is not None:
            d, err = _exact_ks(self.grid, ref_sorted, cur, self.counts, d_grid, up), 0.0
        else:
            d, err = d_grid, float(max(d_grid, up.max(initial=0.0))) - d_grid
        out.ks, out.p_value = stats.ks_pvalue(d, n, m)
        out.ks_error = err
        std = self.ref.std or 0.0
        if ref_sorted is not None and cur is not None and n + m <= EXACT_W1_ROWS:
            w1, w1_err = stats.wasserstein1(ref_sorted, cur), 0.0
        else:
            w1, w1_err = w1_from_grid(self.grid, self.counts)
        scale = std if std > 0 else 1.0
        out.wasserstein, out.w1_error = w1 / scale, w1_err / scale
        if std == 0:
            out.notes.append("constant in the reference (std 0): W1 is not normalised")
        if self.lo == self.hi and m > 1:
            out.notes.append(f"constant in the current sample ({self.lo:g})")
        if not self.grid.exact:
            out.notes.append(
                f"against the saved sketch: KS within {err:.1e}, W1 within {w1_err:.1e}"
            )
        return out


def _exact_ks(
    grid: Grid,
    ref_sorted: np.ndarray,
    cur: np.ndarray,
    counts: GridCounts,
    d_grid: float,
    up: np.ndarray,
) -> float:
    """The exact KS statistic: ``D_grid`` or a value inside an interval that could beat it.

    Intervals are visited by decreasing bound, a batch at a time, and those whose bound no
    longer beats the best value found are skipped. The current values strictly inside an
    interval are ranked in the reference within its reference range (a few bisection steps).
    """
    if grid.n_le is None or grid.n_lt is None:
        return d_grid
    order = np.flatnonzero(up > d_grid)
    order = order[np.argsort(-up[order], kind="stable")]
    n, m = ref_sorted.size, cur.size
    best, batch = d_grid, 16
    while order.size and up[order[0]] > best:
        cand, order = order[:batch], order[batch:]
        batch *= 4
        starts, stops = counts.le[cand], counts.lt[cand + 1]  # current values strictly inside
        lens = np.maximum(stops - starts, 0)
        total = int(lens.sum())
        if total:
            offsets = np.cumsum(lens) - lens
            j = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, lens)
            x = cur[j].astype(np.float64)
            lo, hi = np.repeat(grid.n_le[cand], lens), np.repeat(grid.n_lt[cand + 1], lens)
            lt, le = count_both(ref_sorted, x, lo, hi)
            top = max(int(np.max(lt * m - j * n)), int(np.max((j + 1) * n - le * m)))
            best = max(best, top / (n * m))
        order = order[up[order] > best]
    return best


class CategoricalAccumulator:
    def __init__(self, ref: FeatureReference) -> None:
        self.ref = ref
        self.counts: Counter[str] = Counter()
        self.rows = self.missing = 0

    def add(self, col: np.ndarray) -> None:
        if col.dtype != object and col.dtype != bool:
            f = _floats(col)
            ok = ~np.isnan(f)
            values, n = np.unique(f[ok], return_counts=True)
            keys = category_keys(values)
            self.missing += int(f.size - np.count_nonzero(ok))
        else:
            all_keys = category_keys(col)
            keys, n = np.unique(all_keys[all_keys != ""], return_counts=True)
            self.missing += int(np.count_nonzero(all_keys == ""))
        for k, c in zip(keys.tolist(), n.tolist(), strict=True):
            self.counts[str(k)] += int(c)
        self.rows += int(n.sum())

    def finish(self) -> Measured:
        out = Measured(self.ref, self.rows, self.missing)
        out.chi2, out.p_value, out.js, out.new_categories, out.histogram = class_shift(
            self.ref.categories, self.counts
        )
        if self.rows and self.ref.rows:
            ref_share = np.asarray(out.histogram["reference"], np.float64)
            cur_counts = np.array([self.counts.get(str(k), 0) for k in out.histogram["categories"]])
            out.psi = stats.psi(ref_share, cur_counts)
        if self.ref.rows == 0:
            out.notes.append("the reference has no values for this feature")
            out.chi2 = out.p_value = out.js = None
        elif self.rows == 0:
            out.notes.append("no non-missing values in the current sample")
            out.chi2 = out.p_value = out.js = None
        if out.new_categories:
            shown = ", ".join(f"{k!r}: {v}" for k, v in list(out.new_categories.items())[:5])
            out.notes.append(
                f"{len(out.new_categories)} categories absent from the reference ({shown})"
            )
        return out


def class_shift(
    ref: dict[str, int], cur: dict[str, int] | Counter[str]
) -> tuple[float | None, float | None, float | None, dict[str, int], dict[str, list]]:  # type: ignore[type-arg]
    """Chi-square statistic and p-value, Jensen-Shannon distance, new categories and the
    two histograms of current counts against reference counts (None when either is empty)."""
    new = sorted(k for k in cur if k not in ref and cur[k] > 0)
    keys = [*ref.keys(), *new]
    r = np.array([ref.get(k, 0) for k in keys], np.float64)
    c = np.array([cur.get(k, 0) for k in keys], np.float64)
    hist: dict[str, list] = {  # type: ignore[type-arg]
        "categories": keys,
        "reference": (r / max(r.sum(), 1)).tolist(),
        "current": (c / max(c.sum(), 1)).tolist(),
    }
    news = {k: int(cur[k]) for k in new}
    if r.sum() == 0 or c.sum() == 0:
        return None, None, None, news, hist
    chi2, p = stats.chi_square(r, c)
    return chi2, p, stats.jensen_shannon(r, c), news, hist
