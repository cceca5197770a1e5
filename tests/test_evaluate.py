"""Metrics, the paired bootstrap and the promote/reject decision."""

from __future__ import annotations

import numpy as np
import pytest

from datawheel.evaluation import (
    Comparison,
    Evaluation,
    as_dict,
    classification_metrics,
    compare,
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


def test_compare_no_champion() -> None:
    c = compare(_correct(50, 10, seed=0), None)
    assert c.decision == "promote"
    assert "no champion" in c.reason
    assert c.diff is None


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
    assert "not better" in result.reason


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


def test_as_dict() -> None:
    ev = _evaluation(compare(_correct(500, 475, seed=3), _correct(500, 350, seed=4)))
    d = as_dict(ev)
    assert d["decision"] == "promote"
    assert d["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert d["diff"] == pytest.approx(0.25)
