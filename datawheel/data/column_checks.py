"""The per-column checks of dataset validation, and what a finding looks like.

Each check reads one column's stats from a manifest (:mod:`datawheel.data.profile`) and adds
an :class:`Anomaly` for what it finds: finite values within float32, missing values, a
categorical column's missing and unseen categories, a numeric column's range against the
reference's. :mod:`datawheel.data.validation` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datawheel.data.profile import FLOAT32_MAX

__all__ = [
    "Add",
    "Anomaly",
    "ValidationLimits",
    "check_categories",
    "check_finite",
    "check_missing",
    "check_missing_category",
    "check_range",
    "num",
]

_FINITE_FIX = (
    "replace or drop infinite and out-of-range values (training casts features to float32)"
)


@dataclass(frozen=True)
class ValidationLimits:
    """Thresholds; the defaults suit a flywheel dataset that grows over time."""

    max_missing_fraction: float = 0.05
    range_tolerance: float = 0.10  # of the reference range, on each side
    min_rows: int = 10
    min_class_rows: int = 5  # every class: one test, one val and a few train rows
    min_row_ratio: float = 0.1  # of the reference row count
    max_row_ratio: float = 100.0


@dataclass(frozen=True)
class Anomaly:
    check: str
    column: str
    detail: str
    hard: bool
    fix: str = ""


Add = Callable[[Anomaly], None]


def num(value: Any) -> float | None:
    """A stat from a manifest; ``None`` for null and for non-finite numbers in old manifests."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_finite(col: str, stats: dict[str, Any], rows: int, add: Add) -> None:
    infinite = int(stats.get("infinite", 0))
    if infinite:
        add(
            Anomaly(
                "finite",
                col,
                f"{infinite} value(s) infinite or beyond float32's range (|x| > 3.4e38)",
                True,
                _FINITE_FIX,
            )
        )
    low, high = num(stats.get("min")), num(stats.get("max"))
    extreme = max((abs(v) for v in (low, high) if v is not None), default=0.0)
    if extreme > FLOAT32_MAX:
        add(
            Anomaly(
                "finite",
                col,
                f"value {extreme:.3g} is beyond float32's range (|x| > 3.4e38): it becomes "
                "inf when training casts to float32",
                True,
                _FINITE_FIX,
            )
        )
    has_values = rows - int(stats["missing"]) - infinite > 0
    if (
        not infinite
        and extreme <= FLOAT32_MAX
        and has_values
        and any(num(stats.get(k)) is None for k in ("min", "max", "mean", "std"))
    ):
        add(Anomaly("finite", col, "statistics are not finite", True, _FINITE_FIX))


def check_missing(col: str, missing: int, rows: int, limits: ValidationLimits, add: Add) -> None:
    fraction = missing / rows if rows else 0.0
    if fraction > limits.max_missing_fraction:
        detail = f"{fraction:.1%} missing > {limits.max_missing_fraction:.0%}"
        add(Anomaly("missing", col, detail, True, "fill in missing values or drop those rows"))
    elif fraction > 0:
        add(Anomaly("missing", col, f"{fraction:.1%} missing", hard=False))


def check_missing_category(col: str, missing: int, rows: int, add: Add) -> None:
    """A missing category is coded as "other", like an unseen one: a warning, unless no row
    has a category at all."""
    if rows and missing >= rows:
        add(Anomaly("missing", col, "every value is missing", True, "drop the column"))
    elif missing:
        detail = f"{missing / rows:.1%} missing (coded as the 'other' category)"
        add(Anomaly("missing", col, detail, hard=False))


def check_categories(col: str, new: dict[str, Any], ref: dict[str, Any], add: Add) -> None:
    known = set(ref.get("categories") or {})
    unseen = {c: int(n) for c, n in (new.get("categories") or {}).items() if c not in known}
    if unseen:
        rows = sum(unseen.values())
        shown = ", ".join(f"{c!r} ({n})" for c, n in list(unseen.items())[:8])
        more = f" and {len(unseen) - 8} more" if len(unseen) > 8 else ""
        add(
            Anomaly(
                "categories",
                col,
                f"{len(unseen)} categor{'y' if len(unseen) == 1 else 'ies'} not in the "
                f"reference, {rows} row(s): {shown}{more}",
                hard=False,
                fix="none needed: a model trained without them codes them as 'other'",
            )
        )


def check_range(
    col: str,
    new: dict[str, Any],
    ref: dict[str, Any],
    limits: ValidationLimits,
    hard: Callable[[str, str, str], None],
) -> None:
    ref_min, ref_max = num(ref.get("min")), num(ref.get("max"))
    new_min, new_max = num(new.get("min")), num(new.get("max"))
    if ref_min is None or ref_max is None or new_min is None or new_max is None:
        return  # an all-missing column: the absolute checks refuse it
    span = max(ref_max - ref_min, 1e-12)
    low = ref_min - limits.range_tolerance * span
    high = ref_max + limits.range_tolerance * span
    if new_min < low or new_max > high:
        hard(
            "range",
            col,
            f"[{new_min:.4g}, {new_max:.4g}] outside reference [{low:.4g}, {high:.4g}]",
        )
