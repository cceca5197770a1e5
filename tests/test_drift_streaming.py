"""Streaming drift: Parquet row groups fold into grid counts that agree with the in-memory
result within the documented bound, in memory that does not grow with the current rows."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from datawheel.errors import DatawheelError
from datawheel.monitoring.engine import DriftConfig, compare, prepare_reference
from datawheel.monitoring.streaming import (
    GridCounts,
    count_below,
    grid_from_sketch,
    grid_from_sorted,
    ks_from_grid,
    prefix_sums,
    w1_from_grid,
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_below_is_exact(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for size in (10, 70_000, 300_000):
        a = np.sort(np.r_[rng.normal(size=size), np.zeros(size // 3)].astype(dtype))
        x = np.r_[rng.normal(size=5000), 0.0, -1e30, 1e30, a[:50].astype(np.float64) + 1e-12]
        for side in ("left", "right"):
            want = np.searchsorted(a.astype(np.float64), x, side=side)  # type: ignore[call-overload]
            assert np.array_equal(count_below(a, x, side), want)
        lo, hi = np.zeros(x.size, np.int64), np.full(x.size, a.size, np.int64)
        assert np.array_equal(
            count_below(a, x, "left", lo, hi), np.searchsorted(a.astype(float), x)
        )


def test_prefix_sums() -> None:
    v = np.sort(np.random.default_rng(1).normal(size=1000)).astype(np.float32)
    ends = np.array([0, 0, 1, 5, 5, 999, 1000, 1000])
    want = np.r_[0.0, np.cumsum(v, dtype=np.float64)][ends]
    got, total = prefix_sums(v, ends)
    assert np.allclose(got, want, rtol=0, atol=1e-9)
    assert total == pytest.approx(float(v.sum(dtype=np.float64)), abs=1e-9)


@pytest.mark.parametrize("points", [50, 1000, 10_000])
def test_grid_bounds_hold_against_scipy(points: int) -> None:
    """D_grid <= KS <= D_upper, |W1 estimate - W1| <= its bound; on a 10,000-point grid of a
    raw reference the KS bound is at most 1e-4 (+ ties, which are exact)."""
    rng = np.random.default_rng(points)
    for n, m, shift in [(50_000, 20_000, 0.0), (30_000, 30_000, 0.1), (20_000, 5000, 1.0)]:
        ref, cur = rng.gamma(2.0, size=n), rng.gamma(2.0, size=m) + shift
        ref[: n // 10] = 1.0  # an atom
        grid = grid_from_sorted(np.sort(ref), points)
        counts = GridCounts.empty(grid.points.size)
        for chunk in np.array_split(cur, 7):
            counts.add_sorted(np.sort(chunk), grid.points, grid.center)
        lo, hi = ks_from_grid(grid, counts)
        d = float(sps.ks_2samp(ref, cur).statistic)
        assert lo - 1e-12 <= d <= hi + 1e-12
        assert hi - lo <= 1.0 / points + 2.0 / n
        w1, err = w1_from_grid(grid, counts)
        assert abs(w1 - sps.wasserstein_distance(ref, cur)) <= err + 1e-9
        sketch = grid_from_sketch(np.quantile(ref, np.linspace(0, 1, 1001)), n)
        counts = GridCounts.empty(sketch.points.size)
        counts.add_sorted(np.sort(cur), sketch.points, sketch.center)
        lo, hi = ks_from_grid(sketch, counts)
        assert hi - lo <= 1e-3 + 1e-12 and abs(lo - d) <= 2e-3


def _write(path: Path, frame: pd.DataFrame, group_rows: int) -> None:
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=group_rows
    )


def test_streamed_parquet_agrees_with_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    cols = [f"f{i}" for i in range(6)]
    ref = pd.DataFrame(rng.normal(size=(200_000, 6)).astype(np.float32), columns=cols)
    cur = pd.DataFrame(rng.normal(size=(300_000, 6)).astype(np.float32), columns=cols)
    cur["f1"] += 0.2
    cur["f4"] *= 1.5
    cur.loc[cur.index[::10], "f2"] = np.nan
    cur["s"] = rng.choice(["a", "b", "c"], len(cur))
    ref["s"] = rng.choice(["a", "b", "c"], len(ref), p=[0.5, 0.25, 0.25])
    path = tmp_path / "current.parquet"
    _write(path, cur, 40_000)
    prepared = prepare_reference(ref)
    whole = compare(prepared, cur)
    streamed = compare(prepared, path, config=DriftConfig(batch_rows=25_000))
    assert streamed.current_rows == whole.current_rows == 300_000
    assert streamed.drifted_features == whole.drifted_features
    assert set(whole.drifted_features) == {"f1", "f4", "s", "f2"}
    by_name = {f.name: f for f in whole.features}
    for s in streamed.features:
        w = by_name[s.name]
        assert s.psi == pytest.approx(w.psi, rel=1e-9) and s.js == w.js
        if s.kind == "numeric":
            assert w.ks is not None and s.ks is not None and s.ks_error is not None
            assert w.ks_error == 0 and s.ks <= w.ks <= s.ks + s.ks_error + 1e-12
            assert s.ks_error <= 1.1e-4
            assert w.wasserstein is not None and s.wasserstein is not None
            assert s.w1_error is not None and w.w1_error is not None
            assert abs(s.wasserstein - w.wasserstein) <= s.w1_error + w.w1_error + 1e-9
            assert s.p_value is not None and w.p_value is not None
    chunks = (cur.iloc[i : i + 50_000] for i in range(0, len(cur), 50_000))
    chunked = compare(prepared, chunks, config=DriftConfig(batch_rows=25_000))
    assert chunked.drifted_features == streamed.drifted_features
    for a, b in zip(chunked.features, streamed.features, strict=True):
        assert (a.name, a.ks, a.psi) == (b.name, b.ks, b.psi)


def test_streaming_memory_does_not_grow_with_the_current_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cols = [f"f{i}" for i in range(4)]
    ref = pd.DataFrame(rng.normal(size=(20_000, 4)).astype(np.float32), columns=cols)
    prepared = prepare_reference(ref)
    path = tmp_path / "big.parquet"
    writer = None
    for _ in range(8):  # 2M rows x 4 float32 = 32 MB of values, written in pieces
        piece = pa.Table.from_pandas(
            pd.DataFrame(rng.normal(size=(250_000, 4)).astype(np.float32), columns=cols),
            preserve_index=False,
        )
        writer = writer or pq.ParquetWriter(path, piece.schema)
        writer.write_table(piece, row_group_size=50_000)
    assert writer is not None
    writer.close()
    tracemalloc.start()
    report = compare(prepared, path, config=DriftConfig(batch_rows=50_000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.current_rows == 2_000_000 and not report.dataset_drift
    assert peak < 12 * 2**20, f"numpy peak {peak / 2**20:.1f} MiB while streaming 32 MiB"


def test_a_parquet_without_a_feature_is_a_clear_error(tmp_path: Path) -> None:
    ref = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100.0)})
    path = tmp_path / "cur.parquet"
    _write(path, ref[["a"]], 10)
    with pytest.raises(DatawheelError, match="has no column 'b'"):
        compare(ref, path)
    with pytest.raises(DatawheelError, match="cannot read Parquet"):
        compare(ref, tmp_path / "absent.parquet")
