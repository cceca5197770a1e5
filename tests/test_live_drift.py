"""The server's live drift window (datawheel/monitoring/live.py) on synthetic data: counts
match a per-feature searchsorted, old rows fall out, known shifts are caught among 64
features, missing values and unseen categories count, labels stay bounded."""

from __future__ import annotations

import numpy as np
import pytest

from datawheel.monitoring import live
from datawheel.monitoring.baseline import DriftReference, build_reference
from datawheel.monitoring.live import OTHER, LiveDrift, LiveDriftConfig, _Bins
from datawheel.monitoring.stats import psi

CLASSES = ["a", "b", "c"]


def _normal_reference(
    features: int = 64, rows: int = 20_000, seed: int = 0
) -> tuple[DriftReference, list[str]]:
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    x = rng.normal(size=(rows, features)) * np.arange(1, features + 1) + 10
    labels = rng.choice(CLASSES, size=rows, p=[0.5, 0.3, 0.2])
    predictions = rng.choice(CLASSES, size=rows // 5, p=[0.5, 0.3, 0.2])
    return build_reference(x, names, labels=list(labels), predictions=list(predictions)), names


def _sample(rows: int, features: int = 64, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)) * np.arange(1, features + 1) + 10


def _window(ref: DriftReference, names: list[str], **config: int) -> LiveDrift:
    return LiveDrift(ref, names, CLASSES, LiveDriftConfig(**config))


def _expected_counts(ref: DriftReference, x: np.ndarray, width: int) -> np.ndarray:
    """Per feature, one value at a time: the bin np.searchsorted gives against the float64
    edges (numeric), the category's index or the unseen bin (categorical), missing last."""
    out = np.zeros((len(ref.features), width), np.int64)
    for f, r in enumerate(ref.features):
        values = np.sort([float(k) for k in r.categories]) if r.kind == "categorical" else None
        for v in x[:, f].astype(np.float32).astype(np.float64):
            if not np.isfinite(v):
                out[f, width - 1] += 1
            elif values is None:
                out[f, np.searchsorted(np.asarray(r.edges), v, side="right")] += 1
            else:
                hit = np.flatnonzero(values == v)
                out[f, hit[0] if hit.size else len(values)] += 1
    return out


@pytest.mark.parametrize("path", ["compare", "searchsorted"])
def test_counts_match_a_per_feature_searchsorted(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    n = 3000
    ref_rows = np.column_stack(
        [
            rng.normal(size=n),  # numeric, 9 quantile edges
            rng.exponential(size=n).round(2),  # numeric with ties
            rng.integers(0, 5, size=n).astype(float),  # categorical 0..4
            np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),  # 10% missing
            np.full(n, 3.0),  # constant: one category
            rng.choice([-2.0, 0.5, 7.25], size=n),  # categorical, not integers
        ]
    )
    names = ["normal", "ties", "cat", "gaps", "constant", "floats"]
    ref = build_reference(ref_rows, names, categorical=["floats"])
    if path == "searchsorted":
        monkeypatch.setattr(live, "COMPARE_MAX_EDGES", -1)
    bins = _Bins(ref.features)
    assert bins.by_compare == (path == "compare")
    cur = np.column_stack(
        [
            rng.normal(size=500),
            rng.exponential(size=500).round(2),
            rng.integers(-1, 7, size=500).astype(float),  # -1, 5, 6 are unseen
            rng.normal(size=500),
            rng.choice([3.0, 4.0], size=500),
            rng.choice([-2.0, 0.5, 7.25, 1.0], size=500),
        ]
    ).astype(np.float32)
    cur[rng.random(cur.shape) < 0.05] = np.nan
    cur[0, 0], cur[1, 0], cur[2, 1] = np.inf, -np.inf, ref.features[1].edges[3]  # on an edge
    got = bins.counts(cur)
    assert got.sum() == cur.size
    assert (got == _expected_counts(ref, cur, bins.width)).all()


def test_training_like_rows_stay_low_and_a_shift_among_64_features_is_caught() -> None:
    ref, names = _normal_reference()
    calm = _window(ref, names)
    calm.observe(_sample(2000), np.zeros(2000, np.intp))
    scores = calm.scores()
    assert scores.rows == 2000 and scores.psi.shape == (64,)
    assert scores.worst() < 0.05  # 64 features x 10 bins at 2,000 rows: noise ~ 9/2000 each
    shifted = _sample(2000, seed=2)
    shifted[:, 7] += 5 * (ref.features[7].std or 0)  # one feature of 64, +5 sigma
    shifted[:, 40] = 10 + (shifted[:, 40] - 10) * np.sqrt(2)  # variance doubled, same mean
    drift = _window(ref, names)
    drift.observe(shifted, np.zeros(2000, np.intp))
    psis = drift.scores().psi
    assert psis[7] > 2.0 and psis[40] > 0.1
    assert np.delete(psis, [7, 40]).max() < 0.05
    assert drift.scores().worst() == psis[7]  # the input drift score: never averaged away


def test_old_rows_fall_out_of_the_window() -> None:
    ref, names = _normal_reference(features=4)
    drift = _window(ref, names, window_rows=400, blocks=4, min_rows=100)
    shifted = _sample(1000, features=4) + 50
    for start in range(0, 1000, 25):
        drift.observe(shifted[start : start + 25], np.zeros(25, np.intp))
    assert 400 <= drift.rows < 400 + 100 + 25
    assert drift.scores().worst() > 5
    calm = _sample(600, features=4, seed=5)
    for start in range(0, 300, 20):
        drift.observe(calm[start : start + 20], np.zeros(20, np.intp))
    assert drift.scores().worst() > 0.2  # 300 new rows: some shifted ones are still in
    for start in range(300, 600, 20):
        drift.observe(calm[start : start + 20], np.zeros(20, np.intp))
    assert 400 <= drift.rows < 525
    assert drift.scores().worst() < 0.2  # the shifted rows are all gone


def test_a_huge_batch_keeps_only_its_latest_window() -> None:
    ref, names = _normal_reference(features=4)
    drift = _window(ref, names, window_rows=500, min_rows=100)
    rows = np.vstack([_sample(5000, features=4) + 50, _sample(500, features=4, seed=7)])
    drift.observe(rows, np.zeros(len(rows), np.intp))
    assert drift.rows == 500
    assert drift.scores().worst() < 0.2


def test_one_row_batches_count_like_one_batch() -> None:
    ref, names = _normal_reference(features=8)
    rows = _sample(700, features=8) + np.linspace(0, 3, 8)
    classes = np.random.default_rng(0).integers(0, 3, 700)
    one, many = _window(ref, names), _window(ref, names)
    one.observe(rows, classes)
    for i in range(700):
        many.observe(rows[i : i + 1], classes[i : i + 1])
    a, b = one.scores(), many.scores()
    assert a.rows == b.rows == 700
    assert np.array_equal(a.psi, b.psi) and a.prediction == b.prediction


def test_psi_is_nan_until_the_window_has_min_rows() -> None:
    ref, names = _normal_reference(features=4)
    drift = _window(ref, names, min_rows=300)
    assert np.isnan(drift.scores().psi).all() and drift.scores().rows == 0
    drift.observe(_sample(299, features=4), np.zeros(299, np.intp))
    early = drift.scores()
    assert np.isnan(early.psi).all() and np.isnan(early.worst())
    assert early.prediction is not None and np.isnan(early.prediction)
    drift.observe(_sample(1, features=4), np.zeros(1, np.intp))
    assert np.isfinite(drift.scores().psi).all()


def test_missing_values_are_a_bin_of_their_own() -> None:
    ref, names = _normal_reference(features=4)
    rows = _sample(1000, features=4)
    rows[:, 2] = np.nan  # a feature that arrives empty
    rows[::2, 3] = np.inf  # half of another: not finite counts as missing
    drift = _window(ref, names)
    drift.observe(rows, np.zeros(1000, np.intp))
    psis = drift.scores().psi
    assert psis[2] > 5 and psis[3] > 1 and psis[:2].max() < 0.05
    # ...and against a reference with as many missing values, the same share is no drift
    rng = np.random.default_rng(0)
    holes = rng.normal(size=(10_000, 1))
    holes[rng.random(10_000) < 0.3] = np.nan
    gappy = LiveDrift(build_reference(holes, ["h"]), ["h"], CLASSES)
    now = rng.normal(size=(2000, 1))
    now[rng.random(2000) < 0.3] = np.nan
    gappy.observe(now, np.zeros(2000, np.intp))
    assert gappy.scores().psi[0] < 0.02


def test_unseen_categories_are_drift() -> None:
    rng = np.random.default_rng(0)
    ref = build_reference(rng.integers(0, 4, size=(5000, 1)).astype(float), ["c"])
    assert ref.features[0].kind == "categorical"
    drift = LiveDrift(ref, ["c"], CLASSES)
    drift.observe(rng.integers(0, 4, size=(2000, 1)), np.zeros(2000, np.intp))
    assert drift.scores().psi[0] < 0.02
    drift = LiveDrift(ref, ["c"], CLASSES)
    values = rng.integers(0, 4, size=(2000, 1)).astype(float)
    values[:400] += 0.5  # between categories: none of them
    drift.observe(values, np.zeros(2000, np.intp))
    assert drift.scores().psi[0] > 1


def test_labels_are_capped_and_the_rest_summarised_by_their_max() -> None:
    ref, names = _normal_reference(features=40)
    drift = _window(ref, names, feature_cap=32)
    rows = _sample(1000, features=40)
    rows[:, 35] += 100  # beyond the cap
    drift.observe(rows, np.zeros(1000, np.intp))
    scores = drift.scores()
    labelled = scores.labelled(32)
    assert [name for name, _ in labelled] == [*names[:32], OTHER]
    assert dict(labelled)[OTHER] == scores.psi[32:].max() == scores.psi[35] > 5
    assert [name for name, _ in scores.labelled(64)] == names  # no _other when all fit


def test_prediction_drift_against_test_predictions_or_training_labels() -> None:
    ref, names = _normal_reference(features=2)
    drift = _window(ref, names)
    assert drift.prediction_source == "test-split predictions"
    rng = np.random.default_rng(0)
    drift.observe(_sample(2000, features=2), rng.choice(3, size=2000, p=[0.5, 0.3, 0.2]))
    assert (drift.scores().prediction or 1.0) < 0.02
    flipped = _window(ref, names)
    flipped.observe(_sample(2000, features=2), rng.choice(3, size=2000, p=[0.1, 0.1, 0.8]))
    assert (flipped.scores().prediction or 0) > 0.5
    labels_only = DriftReference(ref.features, ref.rows, ref.bins, ref.labels, {})
    assert LiveDrift(labels_only, names, CLASSES).prediction_source == "training labels"
    bare = DriftReference(ref.features, ref.rows, ref.bins, {}, {})
    nothing = LiveDrift(bare, names, CLASSES)
    nothing.observe(_sample(600, features=2), np.zeros(600, np.intp))
    assert nothing.prediction_source == "none" and nothing.scores().prediction is None
    shares = np.array([ref.labels[c] for c in CLASSES]) / sum(ref.labels.values())
    expected = psi(shares, np.bincount(np.zeros(600, int), minlength=3))
    pred = LiveDrift(labels_only, names, CLASSES)
    pred.observe(_sample(600, features=2), np.zeros(600, np.intp))
    assert pred.scores().prediction == pytest.approx(expected)


def test_features_the_reference_lacks_are_not_monitored() -> None:
    ref, _ = _normal_reference(features=3)
    drift = LiveDrift(ref, ["f0", "extra", "f2"], CLASSES)
    assert drift.features == ["f0", "f2"] and drift.skipped == ["extra"]
    rows = _sample(600, features=3)
    rows[:, 1] = 1e9  # the column nobody monitors
    drift.observe(rows, np.zeros(600, np.intp))
    assert drift.scores().psi.shape == (2,)


def test_bad_batches_are_refused() -> None:
    ref, names = _normal_reference(features=3)
    drift = _window(ref, names)
    with pytest.raises(ValueError, match=r"expected rows \[n, 3\]"):
        drift.observe(np.zeros((2, 4)), np.zeros(2, np.intp))
    with pytest.raises(ValueError, match="predicted class indices"):
        drift.observe(np.zeros((2, 3)), np.zeros(3, np.intp))
    with pytest.raises(ValueError, match="invalid live drift settings"):
        LiveDriftConfig(window_rows=0)


def test_the_warm_up_is_a_quarter_of_the_window_unless_set() -> None:
    assert LiveDriftConfig().warmup_rows == 500
    assert LiveDriftConfig(window_rows=100).warmup_rows == 25
    assert LiveDriftConfig(window_rows=100, min_rows=0).warmup_rows == 1
    ref, names = _normal_reference(features=2)
    drift = _window(ref, names, window_rows=100)
    drift.observe(_sample(24, features=2), np.zeros(24, np.intp))
    assert np.isnan(drift.scores().worst())
    drift.observe(_sample(1, features=2), np.zeros(1, np.intp))
    assert np.isfinite(drift.scores().worst())
