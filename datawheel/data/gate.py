"""The validation gate: a candidate becomes a committed version or is rejected.

:func:`admit` is what the validate step runs. It validates the candidate (absolute
checks, plus relative ones against the reference when there is one), then commits it
(:func:`datawheel.data.versions.commit`) or moves it to ``rejected/`` with its report.
The first version committed becomes the reference; :func:`pin_reference` moves the
reference on purpose. Content that is already committed is found again, not re-judged
against a reference that may have moved since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datawheel.data import versions as ds
from datawheel.data.reference import claim_reference, move_reference, read_reference
from datawheel.data.validation import (
    ValidationLimits,
    ValidationReport,
    absolute_anomalies,
    reference_for,
    validate,
)
from datawheel.errors import DatawheelError
from datawheel.storage import Store

__all__ = ["Admission", "admit", "pin_reference"]

_FIRST_REASON = "first version to pass the absolute checks"


@dataclass(frozen=True)
class Admission:
    """What the gate decided: ``committed``, ``found`` (committed before) or ``rejected``."""

    version: ds.DatasetVersion
    report: ValidationReport
    outcome: str
    report_key: str = ""  # where the report is kept in the store


def admit(
    store: Store, name: str, version: str, limits: ValidationLimits | None = None
) -> Admission:
    """Validate candidate ``name@version`` and commit or reject it."""
    limits = limits or ValidationLimits()
    candidate = ds.get_candidate(store, name, version)
    if candidate is None or ds.is_committed(store, name, version):
        return _found(store, name, version, limits)
    reference = reference_for(store, name)
    report = validate(candidate, reference, limits)
    if not report.ok:
        key = ds.reject(store, candidate, report.markdown())
        return Admission(candidate, report, "rejected", key)
    committed = ds.commit(store, candidate, report=report.markdown(), reference=report.reference)
    if read_reference(store, name) is None:
        first = reference_for(store, name) or committed  # the oldest passing version
        claim_reference(store, name, first.version, _FIRST_REASON)
    return Admission(
        committed, report, "committed", f"datasets/{name}/versions/{version}/report.md"
    )


def _found(store: Store, name: str, version: str, limits: ValidationLimits) -> Admission:
    """A version committed already (by an earlier or a concurrent run): nothing to move."""
    committed = ds.get_version(store, name, version)  # if not, says whether it was rejected
    ds.discard_candidate(store, name, version)
    # Only the absolute checks: it passed the relative ones against the reference of its day.
    report = validate(committed, None, limits)
    return Admission(committed, report, "found", f"datasets/{name}/versions/{version}/report.md")


def pin_reference(store: Store, name: str, version: str, *, reason: str) -> dict[str, Any]:
    """Make committed ``version`` the reference of ``name`` on purpose; the old one joins the
    history. Refuses a version that is not committed or fails the absolute checks."""
    if not reason.strip():
        raise DatawheelError("a reference pin needs a reason", "pass --reason TEXT")
    if not ds.is_committed(store, name, version):
        known = [v.version for v in ds.list_versions(store, name)]
        raise DatawheelError(
            f"dataset {name}@{version} is not a committed version",
            f"pin one of: {', '.join(known)}"
            if known
            else f"ingest and validate a version of {name!r} first",
        )
    dv = ds.get_version(store, name, version)
    bad = [a for a in absolute_anomalies(dv.manifest, ValidationLimits()) if a.hard]
    if bad:
        raise DatawheelError(
            f"dataset {name}@{version} cannot be the reference: "
            f"{bad[0].check} {bad[0].column}: {bad[0].detail}",
            "pin a version that passes the absolute checks",
        )
    return move_reference(store, name, version, reason.strip())
