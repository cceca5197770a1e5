"""Metrics, the paired bootstrap and the promote/reject decision."""

from __future__ import annotations

import numpy as np
import pytest

from datawheel.evaluation import (
    Comparison,
    Evaluation,
    as_dict,
    cannot_compare,
    classification_metrics,
    compare,
    describe_confidence,
    paired_bootstrap,
    report_markdown,
)

CLASSES = ["a", "b", "c"]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def _correct(n: int, n_right: int, seed: int) -> np.ndarray:
    """A 0/1 vector with exactly ``n_right`` ones at random places."""
    out = np.zeros(n, np.int64)
    out[np.random.default_rng(seed).choice(n, n_right, replace=False)] = 1
    return out


def test_classification_metrics_by_hand() -> None:
    metrics, per_class, cm = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # F1: a = 0.5 (p 1/2, r 1/2); b = 0.8 (p 2/3, r 1); c = 2/3 (p 1, r 1/2).
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert cm == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert per_class["a"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2.0}
    )
    assert per_class["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2.0}
    )
    assert per_class["c"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2.0}
    )


def test_classification_metrics_perfect_and_absent_class() -> None:
    y = np.array([0, 1, 1, 0])
    metrics, per_class, cm = classification_metrics(y, y, ["x", "y", "z"])
    assert metrics["accuracy"] == 1.0
    assert cm == [[2, 0, 0], [0, 2, 0], [0, 0, 0]]  # a class with no rows still has a row
    assert per_class["z"]["support"] == 0.0
    assert per_class["x"]["f1"] == 1.0


def test_paired_bootstrap_identical() -> None:
    c = _correct(300, 200, seed=1)
    assert paired_bootstrap(c, c.copy()) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_strictly_better() -> None:
    old = _correct(400, 280, seed=2)
    new = np.ones(400, np.int64)
    diff, low, high = paired_bootstrap(new, old)
    assert diff == pytest.approx(0.3)
    assert 0 < low < diff < high
    assert paired_bootstrap(new, old) == (diff, low, high)  # seeded: reproducible
    d2, _, high2 = paired_bootstrap(old, new)
    assert d2 == pytest.approx(-0.3)
    assert high2 < 0


def test_paired_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="0/1 correctness"):
        paired_bootstrap(np.array([0.5, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match="between 0 and 1"):
        paired_bootstrap(np.ones(3), np.ones(3), confidence=95)


def _index_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_boot: int, seed: int, confidence: float
) -> tuple[float, float]:
    """The bootstrap as it was: resample row indices, an (n_boot, n) matrix."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = (a[idx].astype(np.float64) - b[idx]).mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return float(low), float(high)


@pytest.mark.parametrize(
    ("n_old", "n_new", "confidence"),
    [(1640, 1700, 0.95), (1700, 1700, 0.95), (1600, 1580, 0.9), (1500, 1560, 0.99)],
)
def test_multinomial_bootstrap_matches_resampling_rows(
    n_old: int, n_new: int, confidence: float
) -> None:
    """On 2000 rows the count-based bootstrap gives the interval the row resampling gave.

    Both are Monte Carlo estimates of the same quantiles; with 2000 replicates each bound
    wanders by about 0.0005 between seeds, so averaged over 5 seeds they agree to 0.0015.
    """
    old = _correct(2000, n_old, seed=11)
    new = old.copy()
    flip = np.random.default_rng(12).choice(2000, 300, replace=False)  # discordant rows
    new[flip] = 1 - new[flip]
    shift = n_new - int(new.sum())  # then set the challenger's total exactly
    pool = np.flatnonzero(new == (0 if shift > 0 else 1))
    new[np.random.default_rng(13).choice(pool, abs(shift), replace=False)] = 1 if shift > 0 else 0
    assert int(new.sum()) == n_new
    counted = np.array(
        [paired_bootstrap(new, old, seed=s, confidence=confidence)[1:] for s in range(5)]
    )
    resampled = np.array(
        [_index_bootstrap(new, old, n_boot=2000, seed=s, confidence=confidence) for s in range(5)]
    )
    np.testing.assert_allclose(counted.mean(0), resampled.mean(0), atol=0.0015)
    diff = paired_bootstrap(new, old)[0]
    assert diff == pytest.approx((n_new - n_old) / 2000)
    assert counted[:, 0].max() < diff < counted[:, 1].min()


def test_paired_bootstrap_wider_at_higher_confidence() -> None:
    old = _correct(1000, 700, seed=14)
    new = _correct(1000, 760, seed=15)
    _, low90, high90 = paired_bootstrap(new, old, confidence=0.90)
    _, low99, high99 = paired_bootstrap(new, old, confidence=0.99)
    assert low99 < low90 < high90 < high99


def test_paired_bootstrap_a_million_rows_in_little_memory() -> None:
    """O(n_boot) memory: the old (n_boot, n) index matrix would take 16 GB here."""
    import tracemalloc

    old = _correct(1_000_000, 900_000, seed=16).astype(np.bool_)
    new = old.copy()
    new[np.flatnonzero(~old)[:2000]] = True  # +0.2 points
    tracemalloc.start()
    diff, low, high = paired_bootstrap(new, old)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert diff == pytest.approx(0.002)
    assert 0 < low < diff < high
    assert peak < 20e6  # bytes: a few copies of the 1 MB boolean rows, not O(n_boot * n)


def test_compare_no_champion() -> None:
    c = compare(_correct(50, 10, seed=0), None)
    assert c.decision == "promote"
    assert "no champion" in c.reason
    assert c.diff is None


def test_compare_refuses_a_champion_without_scores() -> None:
    with pytest.raises(ValueError, match="cannot_compare"):
        compare(_correct(50, 10, seed=0), None, champion_version="v3")


def test_cannot_compare_rejects_and_keeps_the_champion() -> None:
    c = cannot_compare("v3", "champion v3 takes features [a, b] but the test split has [a]")
    assert (c.decision, c.champion_version) == ("reject", "v3")
    assert c.reason == (
        "cannot show the challenger is better than champion v3: "
        "champion v3 takes features [a, b] but the test split has [a]"
    )
    assert c.champion_accuracy is None and c.ci_low is None


def test_describe_confidence() -> None:
    assert describe_confidence() == (
        "the lower bound of the two-sided 95% bootstrap interval (a one-sided 97.5% test)"
    )
    assert describe_confidence(0.9).endswith(
        "two-sided 90% bootstrap interval (a one-sided 95% test)"
    )
    assert "99% bootstrap interval (a one-sided 99.5% test)" in describe_confidence(0.99)
    with pytest.raises(ValueError):
        describe_confidence(1.0)


def test_compare_confidence_is_a_parameter() -> None:
    old = _correct(500, 400, seed=6)
    new = old.copy()
    new[np.flatnonzero(old == 0)[:8]] = 1
    new[np.flatnonzero(old == 1)[:2]] = 0  # +6 rows net of 500
    loose = compare(new, old, confidence=0.80)
    strict = compare(new, old, confidence=0.999)
    assert loose.ci_low is not None and strict.ci_low is not None
    assert strict.ci_low < loose.ci_low
    assert (loose.confidence, strict.confidence) == (0.80, 0.999)
    assert "two-sided 80% bootstrap interval (a one-sided 90% test)" in loose.reason
    assert "two-sided 99.9% bootstrap interval (a one-sided 99.95% test)" in strict.reason
    assert "80% CI [" in loose.reason


def test_compare_clearly_better() -> None:
    new, old = _correct(500, 475, seed=3), _correct(500, 350, seed=4)
    c = compare(new, old, champion_version="v1")
    assert c.decision == "promote"
    assert c.champion_version == "v1"
    assert c.champion_accuracy == pytest.approx(0.70)
    assert c.diff == pytest.approx(0.25)
    assert c.ci_low is not None and c.ci_high is not None
    assert 0 < c.ci_low < 0.25 < c.ci_high
    assert "challenger better by +0.2500" in c.reason


def test_compare_clearly_worse() -> None:
    c = compare(_correct(500, 350, seed=4), _correct(500, 475, seed=3))
    assert c.decision == "reject"
    assert c.diff == pytest.approx(-0.25)


def test_compare_equal_rejects() -> None:
    c = _correct(500, 400, seed=5)
    result = compare(c, c.copy(), champion_version="v2")
    assert result.decision == "reject"
    assert result.diff == 0.0
    assert "not shown better by more than the margin +0.0000" in result.reason
    assert "lower bound of the two-sided 95% bootstrap interval" in result.reason
    assert "(a one-sided 97.5% test)" in result.reason


def test_compare_margin() -> None:
    old = _correct(500, 400, seed=6)
    new = old.copy()
    new[np.flatnonzero(old == 0)[:5]] = 1  # better on 5 rows, worse on none: +1%
    assert compare(new, old).decision == "promote"  # reliably better, margin 0
    result = compare(new, old, margin=0.02)  # but not by 2 points
    assert result.decision == "reject"
    assert result.diff == pytest.approx(0.01)
    assert "+0.0200" in result.reason


def _evaluation(comparison: Comparison) -> Evaluation:
    metrics, per_class, cm = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    return Evaluation(CLASSES, metrics, per_class, cm, comparison, extra={"latency_ms": 1.25})


def test_report_markdown_promote() -> None:
    new, old = _correct(500, 475, seed=3), _correct(500, 350, seed=4)
    ev = _evaluation(compare(new, old, champion_version="v4"))
    md = report_markdown(ev, model="mnist:v5", dataset="digits@abc")
    assert md.startswith("# Evaluation: PROMOTE")
    assert "`mnist:v5`" in md
    assert "`digits@abc`" in md
    assert "| accuracy | 0.6667 |" in md
    assert "| latency_ms | 1.2500 |" in md
    assert "Champion `v4` accuracy 0.7000" in md
    assert (
        "Rule: promote when the lower bound of the two-sided 95% bootstrap interval "
        "(a one-sided 97.5% test) of the paired accuracy difference (challenger - champion) "
        "is above the margin +0.0000." in md
    )
    assert ev.comparison.reason in md
    assert "| class | precision | recall | f1 | support |" in md
    assert "| a | 0.500 | 0.500 | 0.500 | 2 |" in md
    assert "| b | 0.667 | 1.000 | 0.800 | 2 |" in md
    assert "| c | 1.000 | 0.500 | 0.667 | 2 |" in md
    assert "| | a | b | c |" in md
    assert "|---|---|---|---|" in md
    assert "| **a** | 1 | 1 | 0 |" in md
    assert "| **b** | 0 | 2 | 0 |" in md
    assert "| **c** | 1 | 0 | 1 |" in md


def test_report_markdown_reject_and_first_model() -> None:
    c = _correct(100, 80, seed=7)
    md = report_markdown(
        _evaluation(compare(c, c.copy(), champion_version="v1")), model="m", dataset="d"
    )
    assert md.startswith("# Evaluation: REJECT")
    first = report_markdown(_evaluation(compare(c, None)), model="m", dataset="d")
    assert first.startswith("# Evaluation: PROMOTE")
    assert "no champion yet" in first
    assert "Champion `" not in first
    assert "Rule:" not in first
    unscored = report_markdown(
        _evaluation(cannot_compare("v2", "champion v2 files fail their checksum")),
        model="m",
        dataset="d",
    )
    assert unscored.startswith("# Evaluation: REJECT")
    assert "champion v2 files fail their checksum." in unscored
    assert "Champion `v2` was not scored on these test rows." in unscored


def test_as_dict() -> None:
    ev = _evaluation(compare(_correct(500, 475, seed=3), _correct(500, 350, seed=4)))
    d = as_dict(ev)
    assert d["decision"] == "promote"
    assert d["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert d["diff"] == pytest.approx(0.25)
    assert (d["confidence"], d["margin"]) == (0.95, 0.0)
