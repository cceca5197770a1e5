"""The drift statistics against scipy on random data, with ties, and the reference record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from datawheel.errors import DatawheelError
from datawheel.monitoring import stats
from datawheel.monitoring.baseline import (
    REFERENCE_FILE,
    SKETCH_POINTS,
    DriftReference,
    build_reference,
)

SIZES = [(1, 1), (3, 7), (50, 50), (200, 333), (1000, 999), (5000, 2000), (12000, 3000)]


def _sample(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "ties":
        return rng.integers(0, 7, n).astype(np.float64)  # heavy ties
    if kind == "float32":
        return rng.normal(0, 1, n).astype(np.float32)
    return rng.normal(0, 1, n)


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("kind", ["normal", "ties", "float32"])
def test_ks_matches_scipy(n: int, m: int, kind: str) -> None:
    rng = np.random.default_rng(n * 7 + m)
    for shift in (0.0, 0.1, 0.5):
        a = _sample(rng, n, kind)
        b = (_sample(rng, m, kind) + shift).astype(a.dtype)
        want = sps.ks_2samp(a, b)
        d, p = stats.ks_2samp(np.sort(a), b)
        assert d == pytest.approx(float(want.statistic), abs=1e-12)
        assert p == pytest.approx(float(want.pvalue), rel=1e-9, abs=1e-300)


def test_ks_asymptotic_above_the_exact_limit() -> None:
    """Both samples over 10,000 values: scipy's kstwo.sf(D, round(n*m/(n+m))), same here."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=20_001), rng.normal(0.02, 1, size=15_000)
    want = sps.ks_2samp(a, b)
    d, p = stats.ks_2samp(np.sort(a), b)
    assert d == pytest.approx(float(want.statistic), abs=1e-12)
    assert p == pytest.approx(float(want.pvalue), rel=1e-9)
    assert 0 < p < 1


@pytest.mark.parametrize("en", [10_001, 40_000, 120_000])
def test_ks_large_sample_tail_matches_scipy(en: int) -> None:
    """Where scipy sums the exact one-sided tail (slow), the expansion agrees with it."""
    for t2 in (2.2, 3.0, 5.0, 8.0, 10.0, 20.0):
        d = math.sqrt(t2 / en)
        want = float(sps.kstwo.sf(d, en))
        got = stats.ks_pvalue(d, 2 * en, 2 * en)[1]  # round(n*m/(n+m)) = en
        if want >= 1e-9:
            assert got == pytest.approx(want, rel=1e-4)
        else:
            assert got == pytest.approx(want, rel=0.05)
    assert stats.ks_pvalue(0.5, 2 * en, 2 * en)[1] == 0.0
    d = math.sqrt(2.0 / en)  # below the tail cut: scipy's own value
    assert stats.ks_pvalue(d, 2 * en, 2 * en)[1] == pytest.approx(float(sps.kstwo.sf(d, en)))


def test_ks_ignores_nan_and_handles_identical_and_disjoint() -> None:
    a = np.array([1.0, np.nan, 2.0, 3.0])
    assert stats.ks_2samp(np.sort(a), np.array([np.nan, 1.0, 2.0, 3.0])) == (0.0, 1.0)
    d, p = stats.ks_2samp(np.arange(100.0), np.arange(100.0) + 1000)
    assert d == 1.0 and p < 1e-50
    assert math.isnan(stats.ks_2samp(np.sort(a), np.array([np.nan]))[1])


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("kind", ["normal", "ties", "float32"])
def test_wasserstein_matches_scipy(n: int, m: int, kind: str) -> None:
    rng = np.random.default_rng(n + 11 * m)
    a, b = _sample(rng, n, kind), _sample(rng, m, kind) * 1.5 + 0.3
    want = sps.wasserstein_distance(a, b)
    got = stats.wasserstein1(np.sort(a), np.sort(b))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("k", [2, 5, 30])
def test_chi_square_matches_scipy(k: int) -> None:
    rng = np.random.default_rng(k)
    for _ in range(5):
        ref = rng.integers(1, 500, k)
        cur = rng.multinomial(int(rng.integers(10, 3000)), rng.dirichlet(np.ones(k)))
        expected = ref / ref.sum() * cur.sum()
        want = sps.chisquare(cur, expected)
        stat, p = stats.chi_square(ref, cur)
        assert stat == pytest.approx(float(want.statistic), rel=1e-10)
        assert p == pytest.approx(float(want.pvalue), rel=1e-9, abs=1e-300)


def test_chi_square_unseen_category_and_empty_cells() -> None:
    assert stats.chi_square([10, 0, 5], [3, 0, 2])[1] == pytest.approx(
        float(sps.chisquare([3, 2], np.array([10, 5]) / 15 * 5).pvalue)
    )
    assert stats.chi_square([10, 5, 0], [3, 2, 1]) == (math.inf, 0.0)
    assert stats.chi_square([10], [4]) == (0.0, 1.0)


@pytest.mark.parametrize("k", [2, 3, 17, 100])
def test_jensen_shannon_matches_scipy(k: int) -> None:
    rng = np.random.default_rng(k)
    for _ in range(5):
        p, q = rng.integers(0, 50, k).astype(float), rng.integers(0, 50, k).astype(float)
        p[0] += 1
        q[-1] += 1
        assert stats.jensen_shannon(p, q) == pytest.approx(
            float(jensenshannon(p, q, base=2)), abs=1e-12
        )
    assert stats.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    batch = stats.jensen_shannon(np.array([[1, 1], [1, 0]]), np.array([[1, 1], [0, 1]]))
    assert batch == pytest.approx([0.0, 1.0])


def test_psi_by_hand_and_on_batches() -> None:
    ref = np.array([0.25, 0.25, 0.5])
    cur = np.array([50, 30, 20])
    cp = cur / cur.sum()
    assert stats.psi(ref, cur) == pytest.approx(float(np.sum((cp - ref) * np.log(cp / ref))))
    assert stats.psi(ref, np.array([25, 25, 50])) == pytest.approx(0.0)
    empty_bin = stats.psi(ref, np.array([0, 50, 50]), eps=1e-4)
    assert empty_bin == pytest.approx((1e-4 - 0.25) * math.log(1e-4 / 0.25) + 0.25 * math.log(2))
    batch = stats.psi(np.tile(ref, (2, 1)), np.array([[25, 25, 50], [0, 0, 0]]))
    assert batch[0] == pytest.approx(0.0) and math.isnan(batch[1])


def test_quantile_edges_and_bin_counts() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=10_001)
    x[::7] = np.nan
    edges = stats.quantile_edges(x, 10)
    want = np.quantile(x[~np.isnan(x)], np.arange(1, 10) / 10)
    assert np.allclose(edges, want)
    counts = stats.bin_counts(x, edges)
    assert counts.sum() == np.count_nonzero(~np.isnan(x)) and len(counts) == 10
    assert np.all(np.abs(counts / counts.sum() - 0.1) < 0.002)
    ties = stats.quantile_edges(np.array([0.0] * 85 + [1.0] * 15), 10)
    assert ties.tolist() == [0.0, 1.0]  # strictly increasing: duplicates merged
    assert stats.bin_counts(np.array([0.0, 0.5, 1.0, np.nan]), ties).tolist() == [0, 2, 1]
    assert stats.quantile_edges(np.array([np.nan, np.nan])).size == 0
    assert np.array_equal(stats.quantile_edges(np.sort(x), 10, assume_sorted=True), edges)


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=5)])
        adjusted = stats.bh_adjusted(p)
        assert np.allclose(adjusted, sps.false_discovery_control(p, method="bh"))
        assert np.array_equal(stats.benjamini_hochberg(p, 0.05), adjusted <= 0.05)
    mask = stats.benjamini_hochberg(np.array([0.001, np.nan, 0.9]), 0.05)
    assert mask.tolist() == [True, False, False]
    assert np.isnan(stats.bh_adjusted(np.array([np.nan, 0.2])))[0]


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(5, 2, n),
            "k": rng.integers(0, 4, n),  # low-cardinality integers: categorical
            "s": rng.choice(["a", "b", "c"], n),
            "c": np.full(n, 0.5),
        }
    )


def test_build_reference_summarises_each_kind(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = _frame(rng, 5000)
    frame.loc[:9, "x"] = np.nan
    ref = build_reference(
        frame,
        ["x", "k", "s", "c"],
        labels=["0", "1", "1"],
        predictions=[1, 1, 0],
    )
    x, k, s, c = ref.features
    assert (x.kind, x.rows, x.missing) == ("numeric", 4990, 10)
    assert len(x.edges) == 9 and sum(x.proportions) == pytest.approx(1.0)
    assert len(x.quantiles) == SKETCH_POINTS and x.mean == pytest.approx(5, abs=0.1)
    assert k.kind == "categorical" and set(k.categories) == {"0", "1", "2", "3"}
    assert k.edges == [0.5, 1.5, 2.5] and len(k.proportions) == 4
    assert s.kind == "categorical" and sum(s.categories.values()) == 5000 and s.edges == []
    assert c.kind == "numeric" and c.std == 0.0 and c.edges == [0.5]
    assert ref.labels == {"0": 1, "1": 2} and ref.predictions == {"0": 1, "1": 2}
    forced = build_reference(frame, ["k"], numeric=["k"])
    assert forced.features[0].kind == "numeric"
    path = tmp_path / REFERENCE_FILE
    ref.save(path)
    assert DriftReference.load(path) == ref
    assert "NaN" not in path.read_text()


def test_bad_reference_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / REFERENCE_FILE
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DatawheelError, match="not a datawheel drift reference"):
        DriftReference.load(path)
    with pytest.raises(DatawheelError, match="cannot read"):
        DriftReference.load(tmp_path / "absent.json")
    with pytest.raises(DatawheelError, match="no column"):
        build_reference(pd.DataFrame({"a": [1.0]}), ["b"])
