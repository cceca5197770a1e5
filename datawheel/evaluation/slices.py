"""The reference and production slices of the test split, and the production gate.

A test row is a *production* row when it came from production (a harvested dataset
version's ``production_rows``, carried into ``Splits.test_production``), otherwise a
*reference* row. Each slice gets the challenger's and the champion's accuracy and their
difference; ``combined`` is the whole test split, the one the paired bootstrap decides on.

The gate: a challenger that the bootstrap promotes on the combined split is still rejected
when, on the production slice, its accuracy is more than ``tolerance`` below the champion's,
so a model never wins on the reference rows at the expense of what production now sees.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from datawheel.evaluation.compare import Comparison

__all__ = ["SLICE_NAMES", "gate_production", "slice_accuracies", "slice_metrics"]

SLICE_NAMES = ("reference", "production", "combined")


def _ratio(count: int | None, rows: int) -> float | None:
    return None if count is None or rows == 0 else count / rows


def slice_accuracies(
    correct_new: np.ndarray, correct_old: np.ndarray | None, production: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per slice: ``rows``, ``challenger_accuracy``, ``champion_accuracy`` and ``diff``
    (challenger - champion). Accuracies of an empty slice, and the champion's when it was
    not scored (``correct_old`` None), are None."""
    new = np.asarray(correct_new, np.bool_)
    prod = np.asarray(production, np.bool_)
    if prod.shape != new.shape:
        raise ValueError(f"production flags {prod.shape} do not match the test rows {new.shape}")
    old = None if correct_old is None else np.asarray(correct_old, np.bool_)
    out: dict[str, dict[str, Any]] = {}
    for name, rows in (("reference", ~prod), ("production", prod), ("combined", None)):
        n = int(new.size if rows is None else np.count_nonzero(rows))
        hits_new = int(np.count_nonzero(new if rows is None else new & rows))
        hits_old = None
        if old is not None:
            hits_old = int(np.count_nonzero(old if rows is None else old & rows))
        diff = None if hits_old is None else hits_new - hits_old
        out[name] = {
            "rows": n,
            "challenger_accuracy": _ratio(hits_new, n),
            "champion_accuracy": _ratio(hits_old, n),
            "diff": _ratio(diff, n),
        }
    return out


def gate_production(
    comparison: Comparison, slices: dict[str, dict[str, Any]], tolerance: float
) -> Comparison:
    """``comparison`` with the production slice taken into account.

    Without a scored champion or without production test rows it is returned as it is.
    Otherwise the reason says how both models did on the production slice, and a
    ``promote`` becomes ``reject`` when the challenger's production accuracy is more than
    ``tolerance`` below the champion's.
    """
    prod = slices["production"]
    if comparison.champion_accuracy is None or not prod["rows"] or prod["diff"] is None:
        return replace(comparison, production_tolerance=tolerance)
    new, old, n = prod["challenger_accuracy"], prod["champion_accuracy"], prod["rows"]
    said = (
        f"on the production slice ({n} test rows) the challenger's accuracy is {new:.4f} "
        f"and the champion's {old:.4f}"
    )
    if prod["diff"] < -tolerance:
        regressed = (
            f"the production slice regressed: {said}, more than the tolerance {tolerance:.4f} below"
        )
        if comparison.decision == "promote":
            reason = f"{regressed}, although the combined test split passes ({comparison.reason})"
        else:
            reason = f"{comparison.reason}; and {regressed}"
        return replace(comparison, decision="reject", reason=reason, production_tolerance=tolerance)
    return replace(
        comparison,
        reason=f"{comparison.reason}; {said}, within the tolerance {tolerance:.4f}",
        production_tolerance=tolerance,
    )


def slice_metrics(slices: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flat metrics for the KFP Metrics artifact: ``reference_accuracy``,
    ``production_accuracy`` and the champion's (``champion_reference_accuracy``, ...), for
    each slice that has rows, and only when the test split has production rows at all."""
    if not slices["production"]["rows"]:
        return {}
    out: dict[str, float] = {}
    for name in ("reference", "production"):
        s = slices[name]
        if s["challenger_accuracy"] is not None:
            out[f"{name}_accuracy"] = float(s["challenger_accuracy"])
        if s["champion_accuracy"] is not None:
            out[f"champion_{name}_accuracy"] = float(s["champion_accuracy"])
    return out
