"""Validate a dataset version: absolute checks for every version, relative ones vs its reference.

ABSOLUTE checks need no other version; a version failing them cannot train, whether or
not it is the first: enough rows, finite statistics that fit float32 (training casts to
it), no missing labels, at least two classes, enough rows in each class to split, few
missing feature values. The pre-flight checks of ``datawheel run`` apply the same rules
to the source before any step runs (:func:`check_frame`).

RELATIVE checks compare with the dataset's reference (:func:`reference_for`): feature set
and types, value ranges, unseen labels, row-count ratio and image shape. A categorical
feature has no range: categories the reference never had are a warning with their counts
(the model codes them as "other"), not a failure.

Each finding is an :class:`Anomaly`; ``hard`` ones fail; the Markdown report lists all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from datawheel.data.column_checks import (
    Add,
    Anomaly,
    ValidationLimits,
    check_categories,
    check_finite,
    check_missing,
    check_missing_category,
    check_range,
)
from datawheel.data.profile import describe, is_missing_label
from datawheel.data.reference import read_reference
from datawheel.data.versions import DatasetVersion, get_version, is_committed, list_versions
from datawheel.errors import DatawheelError
from datawheel.storage import Store

__all__ = [
    "Anomaly",
    "ValidationError",
    "ValidationLimits",
    "ValidationReport",
    "absolute_anomalies",
    "check_frame",
    "reference_for",
    "validate",
]

_GENERIC_FIX = (
    "fix the source data, or start a new dataset name if the schema changed on purpose, "
    "or re-pin the reference with 'datawheel datasets pin-reference NAME VERSION --reason TEXT'"
)


class ValidationError(DatawheelError):
    """A dataset version has hard anomalies."""


@dataclass
class ValidationReport:
    dataset: str
    version: str
    reference: str | None  # None: judged by the absolute checks alone
    anomalies: list[Anomaly] = field(default_factory=list)
    subject: str = ""  # how the summary names what was checked; default dataset@version

    @property
    def hard(self) -> list[Anomaly]:
        return [a for a in self.anomalies if a.hard]

    @property
    def ok(self) -> bool:
        return not self.hard

    def summary(self) -> str:
        subject = self.subject or f"{self.dataset}@{self.version}"
        hard = self.hard
        if not hard:
            return f"{subject}: valid ({len(self.anomalies)} warning(s))"
        shown = "; ".join(f"{a.check} {a.column}: {a.detail}" for a in hard[:3])
        more = f" (+{len(hard) - 3} more)" if len(hard) > 3 else ""
        noun = "anomaly" if len(hard) == 1 else "anomalies"
        return f"{subject} has {len(hard)} hard {noun}: {shown}{more}"

    def raise_if_hard(self) -> None:
        if not self.ok:
            fix = next((a.fix for a in self.hard if a.fix), _GENERIC_FIX)
            raise ValidationError(self.summary(), fix)

    def markdown(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        against = (
            f"against reference `{self.reference}`"
            if self.reference
            else "by the absolute checks alone (no reference to compare with)"
        )
        lines = [
            f"# Data validation: {status}",
            "",
            f"Dataset `{self.dataset}` version `{self.version}` {against}.",
            "",
        ]
        if not self.anomalies:
            lines.append(
                "No anomalies: rows, labels, finite values, schema, ranges and row count pass."
            )
            return "\n".join(lines) + "\n"
        lines += ["| severity | check | column | detail |", "|---|---|---|---|"]
        for a in sorted(self.anomalies, key=lambda a: (not a.hard, a.check, a.column)):
            lines.append(
                f"| {'hard' if a.hard else 'warning'} | {a.check} | {a.column} | {a.detail} |"
            )
        return "\n".join(lines) + "\n"


def absolute_anomalies(manifest: dict[str, Any], limits: ValidationLimits) -> list[Anomaly]:
    """The checks every version must pass, read from its manifest (see :func:`describe`)."""
    found: list[Anomaly] = []
    add = found.append
    rows = int(manifest["rows"])
    if rows < limits.min_rows:
        add(
            Anomaly(
                "rows",
                "*",
                f"{rows} row{'' if rows == 1 else 's'}, fewer than the minimum {limits.min_rows}",
                True,
                f"add rows: a dataset needs at least {limits.min_rows}",
            )
        )
    _check_labels(manifest, limits, add)
    for col, stats in manifest["stats"].items():
        if stats.get("kind") == "categorical":
            check_missing_category(str(col), int(stats["missing"]), rows, add)
            continue
        check_finite(str(col), stats, rows, add)
        check_missing(str(col), int(stats["missing"]), rows, limits, add)
    return found


def _check_labels(manifest: dict[str, Any], limits: ValidationLimits, add: Add) -> None:
    label = str(manifest["schema"]["label"]["name"])
    dist = {str(k): int(v) for k, v in manifest["label_distribution"].items()}
    classes = {k: v for k, v in dist.items() if not is_missing_label(k)}
    unlabelled = int(manifest.get("missing_labels", 0)) + sum(dist.values()) - sum(classes.values())
    if unlabelled:
        add(
            Anomaly(
                "labels",
                label,
                f"{unlabelled} row(s) have no label (empty, NaN or None)",
                True,
                "give every row a label or drop the unlabelled rows",
            )
        )
    if len(classes) < 2:
        names = ", ".join(repr(c) for c in sorted(classes)) or "none"
        add(
            Anomaly(
                "labels",
                label,
                f"only {len(classes)} class ({names}); a classifier needs at least 2",
                True,
                f"add rows of another class, or check that {label!r} is the label column "
                "(--param label=COLUMN)",
            )
        )
        return
    small = sorted((c, n) for c, n in classes.items() if n < limits.min_class_rows)
    if small:
        shown = ", ".join(f"{c} ({n})" for c, n in small[:5])
        add(
            Anomaly(
                "labels",
                label,
                f"class(es) {shown} have fewer than {limits.min_class_rows} rows, "
                "too few to split into train, validation and test",
                True,
                f"add rows for those classes (at least {limits.min_class_rows} each) or drop them",
            )
        )


def check_frame(
    frame: pd.DataFrame, label: str, *, subject: str, limits: ValidationLimits | None = None
) -> ValidationReport:
    """The absolute checks on rows not yet ingested (the pre-flight checks use it)."""
    report = ValidationReport("", "", None, subject=subject)
    report.anomalies = absolute_anomalies(describe(frame, label), limits or ValidationLimits())
    return report


def reference_for(store: Store, name: str) -> DatasetVersion | None:
    """The committed version that ``name``'s versions are validated against.

    It is the one ``reference.json`` names; a store written before that record existed
    falls back to the first committed version that passes the absolute checks.
    """
    record = read_reference(store, name)
    if record is not None:
        version = str(record["version"])
        if not is_committed(store, name, version):
            raise DatawheelError(
                f"the reference of dataset {name!r} is {version}, which is not committed",
                f"pin a committed version with 'datawheel datasets pin-reference {name} "
                "VERSION --reason TEXT'",
            )
        return get_version(store, name, version)
    limits = ValidationLimits()
    return next(
        (v for v in list_versions(store, name) if not absolute_anomalies(v.manifest, limits)),
        None,
    )


def validate(
    version: DatasetVersion,
    reference: DatasetVersion | None,
    limits: ValidationLimits | None = None,
) -> ValidationReport:
    """The absolute checks, and the relative ones against ``reference`` when there is one."""
    limits = limits or ValidationLimits()
    against = reference if reference is not None and reference.version != version.version else None
    report = ValidationReport(version.name, version.version, against.version if against else None)
    report.anomalies = absolute_anomalies(version.manifest, limits)
    if against is not None and int(version.manifest["rows"]) > 0:
        _relative(version.manifest, against.manifest, limits, report.anomalies.append)
    return report


def _relative(new: dict[str, Any], ref: dict[str, Any], limits: ValidationLimits, add: Add) -> None:
    def hard(check: str, column: str, detail: str) -> None:
        add(Anomaly(check, column, detail, True, _GENERIC_FIX))

    rows, ref_rows = int(new["rows"]), int(ref["rows"])
    low = math.floor(ref_rows * limits.min_row_ratio)
    high = math.ceil(ref_rows * limits.max_row_ratio)
    if rows < low or rows > high:
        hard("rows", "*", f"{rows} rows outside bounds [{low}, {high}] of the reference's")
    new_label, ref_label = new["schema"]["label"]["name"], ref["schema"]["label"]["name"]
    if new_label != ref_label:
        hard("schema", new_label, f"label column differs from reference {ref_label!r}")
    ref_types = {f["name"]: f["dtype"] for f in ref["schema"]["features"]}
    new_types = {f["name"]: f["dtype"] for f in new["schema"]["features"]}
    for col in sorted(set(ref_types) - set(new_types)):
        hard("schema", col, "column missing")
    for col in sorted(set(new_types) - set(ref_types)):
        hard("schema", col, "column not in the reference schema")
    for col in sorted(set(ref_types) & set(new_types)):
        if ref_types[col] != new_types[col]:
            hard("type", col, f"{new_types[col]} != reference {ref_types[col]}")
        if new["stats"][col].get("kind") == "categorical":
            check_categories(col, new["stats"][col], ref["stats"][col], add)
        elif ref["stats"][col].get("kind") != "categorical":
            check_range(col, new["stats"][col], ref["stats"][col], limits, hard)
    unseen = sorted(set(new["classes"]) - set(ref["classes"]))
    if unseen:
        hard("labels", new_label, f"unseen labels {', '.join(unseen[:10])}")
    if (new.get("image_shape") or None) != (ref.get("image_shape") or None):
        hard(
            "schema",
            "image_shape",
            f"{new.get('image_shape')} != reference {ref.get('image_shape')}",
        )
