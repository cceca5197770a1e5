"""Validate a dataset version against its dataset's reference (its first version).

Checks: feature set and types, value ranges, missing values, unseen labels and
row-count bounds. Each finding is an :class:`Anomaly`, ``hard`` ones fail the
pipeline; the Markdown report lists all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from datawheel.data.versions import DatasetVersion, list_versions
from datawheel.errors import DatawheelError
from datawheel.storage import Store

__all__ = ["Anomaly", "Limits", "ValidationError", "ValidationReport", "reference_for", "validate"]


class ValidationError(DatawheelError):
    """A dataset version has hard anomalies."""


@dataclass(frozen=True)
class Limits:
    """Thresholds; the defaults suit a flywheel dataset that grows over time."""

    max_missing_fraction: float = 0.05
    range_tolerance: float = 0.10  # of the reference range, on each side
    min_rows: int = 10
    min_row_ratio: float = 0.1  # of the reference row count
    max_row_ratio: float = 100.0


@dataclass(frozen=True)
class Anomaly:
    check: str
    column: str
    detail: str
    hard: bool


@dataclass
class ValidationReport:
    dataset: str
    version: str
    reference: str
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def hard(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.hard]

    @property
    def ok(self) -> bool:
        return not self.hard

    def summary(self) -> str:
        hard = self.hard
        if not hard:
            return f"{self.dataset}@{self.version}: valid ({len(self.anomalies)} warning(s))"
        shown = "; ".join(f"{a.check} {a.column}: {a.detail}" for a in hard[:3])
        more = f" (+{len(hard) - 3} more)" if len(hard) > 3 else ""
        return f"{self.dataset}@{self.version} has {len(hard)} hard anomalies: {shown}{more}"

    def raise_if_hard(self) -> None:
        if not self.ok:
            raise ValidationError(
                self.summary(),
                "fix the source data, or start a new dataset name if the schema changed on purpose",
            )

    def markdown(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        lines = [
            f"# Data validation: {status}",
            "",
            f"Dataset `{self.dataset}` version `{self.version}` "
            f"against reference `{self.reference}`.",
            "",
        ]
        if not self.anomalies:
            lines.append(
                "No anomalies: schema, ranges, missing values, labels and row count match."
            )
            return "\n".join(lines) + "\n"
        lines += ["| severity | check | column | detail |", "|---|---|---|---|"]
        for a in sorted(self.anomalies, key=lambda a: (not a.hard, a.check, a.column)):
            lines.append(
                f"| {'hard' if a.hard else 'warning'} | {a.check} | {a.column} | {a.detail} |"
            )
        return "\n".join(lines) + "\n"


def reference_for(store: Store, name: str) -> DatasetVersion | None:
    """The first committed version of ``name``: it fixes the reference schema."""
    versions = list_versions(store, name)
    return versions[0] if versions else None


def validate(
    version: DatasetVersion, reference: DatasetVersion, limits: Limits | None = None
) -> ValidationReport:
    """Compare ``version``'s manifest with ``reference``'s."""
    limits = limits or Limits()
    report = ValidationReport(version.name, version.version, reference.version)
    add = report.anomalies.append
    new, ref = version.manifest, reference.manifest
    rows = int(new["rows"])
    if rows == 0:
        add(Anomaly("rows", "*", "dataset is empty", hard=True))
        return report
    _check_rows(rows, int(ref["rows"]), limits, add)
    ref_types = {f["name"]: f["dtype"] for f in ref["schema"]["features"]}
    new_types = {f["name"]: f["dtype"] for f in new["schema"]["features"]}
    if new["schema"]["label"]["name"] != ref["schema"]["label"]["name"]:
        add(
            Anomaly(
                "schema",
                new["schema"]["label"]["name"],
                f"label column differs from reference {ref['schema']['label']['name']!r}",
                True,
            )
        )
    for col in sorted(set(ref_types) - set(new_types)):
        add(Anomaly("schema", col, "column missing", hard=True))
    for col in sorted(set(new_types) - set(ref_types)):
        add(Anomaly("schema", col, "column not in the reference schema", hard=True))
    for col in sorted(set(ref_types) & set(new_types)):
        if ref_types[col] != new_types[col]:
            add(Anomaly("type", col, f"{new_types[col]} != reference {ref_types[col]}", hard=True))
        _check_column(col, new["stats"][col], ref["stats"][col], rows, limits, add)
    unseen = sorted(set(new["classes"]) - set(ref["classes"]))
    if unseen:
        add(
            Anomaly(
                "labels",
                new["schema"]["label"]["name"],
                f"unseen labels {', '.join(unseen[:10])}",
                hard=True,
            )
        )
    if (new.get("image_shape") or None) != (ref.get("image_shape") or None):
        add(
            Anomaly(
                "schema",
                "image_shape",
                f"{new.get('image_shape')} != reference {ref.get('image_shape')}",
                hard=True,
            )
        )
    return report


def _check_rows(rows: int, ref_rows: int, limits: Limits, add: Any) -> None:
    low = max(limits.min_rows, math.floor(ref_rows * limits.min_row_ratio))
    high = math.ceil(ref_rows * limits.max_row_ratio)
    if rows < low or rows > high:
        add(Anomaly("rows", "*", f"{rows} rows outside bounds [{low}, {high}]", hard=True))


def _check_column(
    col: str, new: dict[str, float], ref: dict[str, float], rows: int, limits: Limits, add: Any
) -> None:
    missing = new["missing"] / rows
    if missing > limits.max_missing_fraction:
        add(
            Anomaly(
                "missing", col, f"{missing:.1%} missing > {limits.max_missing_fraction:.0%}", True
            )
        )
    elif missing > 0:
        add(Anomaly("missing", col, f"{missing:.1%} missing", hard=False))
    span = max(ref["max"] - ref["min"], 1e-12)
    low = ref["min"] - limits.range_tolerance * span
    high = ref["max"] + limits.range_tolerance * span
    if new["min"] < low or new["max"] > high:
        detail = f"[{new['min']:.4g}, {new['max']:.4g}] outside reference [{low:.4g}, {high:.4g}]"
        add(Anomaly("range", col, detail, hard=True))
