"""Numeric drift from counts on a fine reference grid, so the current sample can stream.

Each numeric feature gets a grid: ``GRID_POINTS`` (10,000) reference quantiles taken from the
sorted reference (or, against a saved reference, its 1001-point sketch). A current chunk is
sorted once per feature and reduced to, at every grid point g: how many values are below g,
how many are at most g, and the sum of the values below g (``searchsorted`` of the grid into
the sorted chunk, and a cumulative sum). Those are additive, so any number of chunks, e.g.
the row groups of a Parquet file bigger than memory (:func:`parquet_batches`), fold into
arrays whose size does not depend on the current row count. The same reduction of the
reference gives its side. From the two:

* KS: ``D_grid`` = max |F_ref - F_cur| at every grid point and just below it. Inside an
  interval between grid points F_ref rises by at most ``dr`` (the reference mass strictly
  inside it), so ``D_grid <= D <= D_upper`` where ``D_upper`` takes the worst case inside
  every interval; ``D_upper - D_grid`` <= the largest ``dr`` (1e-4 for a 10,000-point grid
  on a raw reference, 1e-3 on the 1001-point sketch). Both are reported; D is ``D_grid``.
* W1 = the integral of |F_ref - F_cur|: the integral of each ECDF over each interval is exact
  from the counts and sums; where one ECDF stays above the other throughout an interval (its
  value at the interval's start is above the other's just before its end) the interval's
  contribution is exact, elsewhere the midpoint of exact bounds is used; the bound
  (``w1_error``) is the sum of those half-widths. The tails beyond the reference's min and
  max are exact.
* PSI: counts per reference-quantile bin, from the same sorted chunk.

Against a saved sketch the reference is taken as uniform between sketch points.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datawheel.errors import DatawheelError

__all__ = [
    "GRID_POINTS",
    "Grid",
    "GridCounts",
    "count_below",
    "count_both",
    "grid_from_sketch",
    "grid_from_sorted",
    "ks_from_grid",
    "ks_intervals",
    "parquet_batches",
    "prefix_sums",
    "w1_from_grid",
]

GRID_POINTS = 10_000


@dataclass
class GridCounts:
    """Additive counts of a sample on a grid (values are centred: ``v - center``)."""

    lt: np.ndarray  # int64 [G]: values < g
    le: np.ndarray  # int64 [G]: values <= g
    s_lt: np.ndarray  # float64 [G]: sum of centred values < g
    count: int = 0
    total: float = 0.0  # sum of centred values

    @classmethod
    def empty(cls, size: int) -> GridCounts:
        z = np.zeros(size, np.int64)
        return cls(z, z.copy(), np.zeros(size, np.float64))

    def add_sorted(self, sorted_values: np.ndarray, grid: np.ndarray, center: float) -> None:
        """Fold one sorted, finite chunk in (``grid``: the float64 grid points)."""
        if sorted_values.size == 0:
            return
        lt, le = count_both(sorted_values, grid)
        self.lt += lt
        self.le += le
        below, total = prefix_sums(sorted_values, lt)
        self.s_lt += below - center * lt
        self.count += int(sorted_values.size)
        self.total += total - center * sorted_values.size


def prefix_sums(values: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, float]:
    """float64 sums of ``values[:e]`` for each of the nondecreasing ``ends``, and the total:
    one ``reduceat`` pass (a float64 cumsum of the whole array is ~10x slower)."""
    m = values.size
    if m == 0:
        return np.zeros(ends.shape), 0.0
    starts = _unique_sorted(np.concatenate(([0], ends[ends < m])).astype(np.int64))
    sums = np.add.reduceat(values, starts, dtype=np.float64)
    prefix = np.concatenate(([0.0], np.cumsum(sums)))  # prefix[i] = sum(values[:starts[i]])
    at = np.searchsorted(starts, ends, side="left")
    out: np.ndarray = np.where(ends >= m, prefix[-1], prefix[np.minimum(at, starts.size - 1)])
    return out, float(prefix[-1])


def count_below(
    sorted_values: np.ndarray,
    x: np.ndarray,
    side: str,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> np.ndarray:
    """``side="left"``: how many values are < x; ``"right"``: <= x, for float64 ``x``.

    Exact for float32 samples without casting them. A few queries into a big array are
    bracketed on a coarse subsample (cache-resident) and finished by a vectorized bisection,
    several times faster than ``searchsorted`` straight into the big array; ``lo``/``hi``,
    when known, bracket the answers directly.
    """
    a, x = sorted_values, np.asarray(x, np.float64)
    m = a.size
    if lo is None or hi is None:
        if m < 65_536 or x.size * 16 > m:
            return _searchsorted(a, x, side)
        step = m // 4096
        k = _searchsorted(a[::step], x, side)
        lo, hi = np.maximum((k - 1) * step + 1, 0), np.minimum(k * step, m)
    lo, hi = lo.astype(np.int64), hi.astype(np.int64)
    if lo.size == 0:
        return lo
    # Binary lifting: pos only moves over values below x, by halving powers of two, so it
    # ends at the first value that is not (a valid bracket keeps it from passing hi).
    pos, step = lo, 1 << max(int((hi - lo).max()).bit_length() - 1, 0)
    last = m - 1
    while step >= 1:
        cand = pos + step
        v = a[np.minimum(cand - 1, last)]
        pos = np.where((v < x) if side == "left" else (v <= x), cand, pos)
        step >>= 1
    out: np.ndarray = np.minimum(pos, hi)
    return out


def count_both(
    sorted_values: np.ndarray,
    x: np.ndarray,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(values < x, values <= x): the second differs only where x occurs in the sample, so
    only those are searched again."""
    a, x = sorted_values, np.asarray(x, np.float64)
    lt = count_below(a, x, "left", lo, hi)
    le = lt.copy()
    inside = np.flatnonzero(lt < a.size)
    eq = inside[a[lt[inside]] == x[inside]]
    if eq.size:
        le[eq] = count_below(a, x[eq], "right", lt[eq], np.full(eq.size, a.size, np.int64))
    return lt, le


def _searchsorted(a: np.ndarray, x: np.ndarray, side: str) -> np.ndarray:
    if a.dtype == np.float64:
        return np.searchsorted(a, x, side=side)  # type: ignore[call-overload,no-any-return]
    # float32 data: round x to float32 in the direction that keeps the comparison exact
    xs = x.astype(a.dtype)
    wide = xs.astype(np.float64)
    fix = (wide < x) if side == "left" else (wide > x)
    xs[fix] = np.nextafter(xs[fix], np.inf if side == "left" else -np.inf)
    return np.searchsorted(a, xs, side=side)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class Grid:
    """One numeric feature's reference side: grid points and the reference ECDF on them."""

    points: np.ndarray  # float64 [G], strictly increasing; points[0] = min, points[-1] = max
    center: float
    f_le: np.ndarray  # F_ref(g)
    f_lt: np.ndarray  # F_ref(g-)
    integral: np.ndarray  # [G-1]: integral of F_ref over each interval
    rows: int  # reference rows behind it (for p-values)
    exact: bool  # from the raw reference (True) or from a sketch (False)
    n_le: np.ndarray | None = None  # raw reference: counts <= g and < g (exact KS brackets)
    n_lt: np.ndarray | None = None


def _ecdf(c: GridCounts, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(F(g), F(g-), per-interval integrals, tail below g0, tail above g_last) of counts."""
    m = c.count
    le, lt = c.le.astype(np.float64), c.lt.astype(np.float64)
    s_le = c.s_lt + (le - lt) * g
    width = np.diff(g)
    # Each value in (g_k, g_k+1) adds (g_k+1 - value) to the integral; each <= g_k adds width.
    inside = lt[1:] - le[:-1]
    integral = (le[:-1] * width + inside * g[1:] - (c.s_lt[1:] - s_le[:-1])) / m
    below = (lt[0] * g[0] - c.s_lt[0]) / m
    above = (c.total - s_le[-1] - (m - le[-1]) * g[-1]) / m
    return le / m, lt / m, integral, float(below), float(above)


def _unique_sorted(a: np.ndarray) -> np.ndarray:
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def grid_from_sorted(sorted_values: np.ndarray, points: int = GRID_POINTS) -> Grid:
    """The grid of a raw, sorted, finite reference column: its values at ``points`` + 1
    evenly spaced ranks (min and max included), duplicates merged."""
    n = sorted_values.size
    if n == 0:
        raise ValueError("an empty reference has no grid")
    v = sorted_values
    ranks = _unique_sorted(np.round(np.linspace(0, n - 1, min(points, n - 1) + 1)).astype(np.int64))
    at = v[ranks]
    first = np.concatenate(([True], at[1:] != at[:-1]))  # one rank per distinct value
    ranks, at = ranks[first], at[first]
    g = at.astype(np.float64)
    center = float(g[len(g) // 2])
    # The counts below and at each point come from its rank, no search: values < v[r] end
    # at r and values <= v[r] at r + 1, unless v[r] is tied with a neighbour; only the
    # tied points are searched.
    lt, le = ranks.copy(), ranks + 1
    tied = np.flatnonzero(
        ((ranks > 0) & (v[np.maximum(ranks - 1, 0)] == at))
        | ((ranks < n - 1) & (v[np.minimum(ranks + 1, n - 1)] == at))
    )
    if tied.size:
        lt[tied], le[tied] = count_both(v, g[tied])
    below, total = prefix_sums(v, lt)
    counts = GridCounts(lt, le, below - center * lt, n, total - center * n)
    f_le, f_lt, integral, _, _ = _ecdf(counts, g - center)
    return Grid(g, center, f_le, f_lt, integral, n, True, counts.le, counts.lt)


def grid_from_sketch(quantiles: Sequence[float] | np.ndarray, rows: int) -> Grid:
    """The grid of a saved reference: its quantile sketch, uniform between sketch points
    (a run of equal quantiles is an atom holding that share)."""
    q = np.asarray(quantiles, np.float64)
    if q.size < 2 or not np.all(np.isfinite(q)):
        raise ValueError("the sketch needs at least two finite quantiles")
    share = np.linspace(0.0, 1.0, q.size)
    g, first = np.unique(q, return_index=True)
    last = np.r_[first[1:] - 1, q.size - 1]
    f_le, f_lt = share[last], share[first]
    f_lt[0] = 0.0
    center = float(g[len(g) // 2])
    gc = g - center
    integral = np.diff(gc) * (f_le[:-1] + f_lt[1:]) / 2
    return Grid(g, center, f_le, f_lt, integral, int(rows), False)


def ks_intervals(grid: Grid, cur: GridCounts) -> tuple[float, np.ndarray]:
    """``D_grid`` and, per interval between grid points, the most |F_ref - F_cur| can reach
    inside it (module doc); intervals whose bound exceeds ``D_grid`` are where D may be."""
    g = grid.points - grid.center
    c_le, c_lt, _, _, _ = _ecdf(cur, g)
    at, below = grid.f_le - c_le, grid.f_lt - c_lt
    d_grid = float(max(np.abs(at).max(), np.abs(below).max()))
    a, b = at[:-1], below[1:]  # F_ref - F_cur at g_k and just below g_k+1
    dr, dc = grid.f_lt[1:] - grid.f_le[:-1], c_lt[1:] - c_le[:-1]
    return d_grid, np.maximum(np.minimum(a + dr, b + dc), np.minimum(dc - a, dr - b))


def ks_from_grid(grid: Grid, cur: GridCounts) -> tuple[float, float]:
    """(D_grid, D_upper): the KS statistic at the grid points and its bound (module doc)."""
    d_grid, up = ks_intervals(grid, cur)
    return d_grid, float(max(d_grid, up.max(initial=0.0)))


def w1_from_grid(grid: Grid, cur: GridCounts) -> tuple[float, float]:
    """(W1 estimate, error bound) from the grid counts (module doc); not normalised."""
    g = grid.points - grid.center
    c_le, c_lt, c_int, below, above = _ecdf(cur, g)
    width = np.diff(g)
    diff = np.abs(grid.integral - c_int)
    r_lo, r_hi = grid.f_le[:-1], grid.f_lt[1:]  # F_ref inside an interval lies in [r_lo, r_hi]
    c_lo, c_hi = c_le[:-1], c_lt[1:]
    settled = (r_lo >= c_hi) | (c_lo >= r_hi)  # one ECDF above the other throughout
    # |F_ref - F_cur| inside is at most the widest gap between the two ranges
    upper = np.maximum(width * np.maximum(r_hi - c_lo, c_hi - r_lo), diff)
    est = np.where(settled, diff, (diff + upper) / 2)
    err = np.where(settled, 0.0, (upper - diff) / 2)
    return float(est.sum() + below + above), float(err.sum())


def parquet_batches(
    path: str | Path, columns: Sequence[str], *, batch_rows: int = 262_144
) -> Iterator[dict[str, np.ndarray]]:
    """Columns of a Parquet file, batch by batch (``ParquetFile.iter_batches``): memory
    holds one batch, whatever the file's size. Missing columns are a one-line error."""
    import pyarrow.parquet as pq

    try:
        # pre_buffer (pyarrow's default) reads the whole file ahead: 1 GB of RSS for a 1 GB
        # file; without it, and with a 1 MiB read buffer, memory holds about one batch.
        pf = pq.ParquetFile(str(path), pre_buffer=False, buffer_size=1 << 20)
    except (OSError, ValueError) as exc:
        raise DatawheelError(f"cannot read Parquet file {path} ({exc})", "check the path") from None
    have = set(pf.schema_arrow.names)
    absent = [c for c in columns if c not in have]
    if absent:
        raise DatawheelError(
            f"{path} has no column {absent[0]!r}",
            "the current sample needs every feature of the reference",
        )
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns)):
        yield {
            name: batch.column(i).to_numpy(zero_copy_only=False)
            for i, name in enumerate(batch.schema.names)
        }
