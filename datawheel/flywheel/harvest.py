"""Harvest: a model's labelled production rows become the next version of its dataset.

:func:`harvest` joins the ledger's predictions with their feedback by prediction id (the
latest label per id wins; :mod:`.ledger_join`, which says why pyarrow and not DuckDB),
maps each serving version's inputs onto the dataset's features (:mod:`.rows`), and merges
them into the latest committed version of the dataset the model's card names, deduplicated
by content, conflicts resolved by the newest label (:mod:`.merge`). The result is written
as a candidate whose manifest carries ``lineage`` and ``production_rows``; with
``validate=True`` the validation gate commits or rejects it like any other version.

The window ``[since, until)`` selects labels by when they were given (``since`` None: from
the beginning; ``until`` None: now); their predictions are read from whatever day they
were made. Nothing here is lost or duplicated when a step fails: labels that cannot be used
(outside the classes, a prediction in a corrupt segment) stay in the ledger and are
counted; the version is content-addressed, so the same labels on the same parent give the
same version, and a window already harvested creates nothing (``created`` false).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from datawheel import registry
from datawheel.data import versions as ds
from datawheel.data.sources import Loaded
from datawheel.data.validation import ValidationError
from datawheel.errors import DatawheelError
from datawheel.flywheel.ledger_join import join_predictions, read_labels, store_failure
from datawheel.flywheel.merge import Merged, merge_rows
from datawheel.flywheel.rows import ProductionRows, production_rows
from datawheel.storage import Store, StoreError, location, validate_name

__all__ = ["HarvestResult", "current_dataset", "harvest", "parse_time"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
JSON_KEYS = (
    "dataset",
    "version",
    "parent",
    "labeled_rows",
    "corrections",
    "confirmations",
    "conflicts",
    "created",
)


@dataclass(frozen=True)
class HarvestResult:
    """What a harvest did. ``version`` is None when nothing was created (see ``message``)."""

    dataset: str
    version: str | None
    parent: str | None
    labeled_rows: int  # labels used: one per labelled prediction that fits the dataset
    corrections: int  # of those, labels that differ from the prediction
    confirmations: int  # ...and labels that agree with it
    conflicts: int
    created: bool
    skipped_segments: list[dict[str, str]] = field(default_factory=list)
    message: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # committed, candidate, found (committed before), nothing

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document: exactly :data:`JSON_KEYS`; ``version`` is the parent
        when nothing new was created."""
        doc = {k: getattr(self, k) for k in JSON_KEYS}
        doc["version"] = self.version or self.parent
        return doc


def parse_time(text: str) -> float:
    """Seconds since the epoch from ISO-8601 (UTC unless it says), epoch seconds, or a
    duration ago (``90s``, ``30m``, ``24h``, ``7d``, ``2w``)."""
    s = (text or "").strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if math.isfinite(value) and value >= 0:
            return value
    if m := _DURATION.match(s):
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        moment = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise DatawheelError(
            f"time {text!r} is not ISO-8601, epoch seconds or a duration",
            "use e.g. 2026-05-31T12:00:00Z, 1780000000 or 24h (for 24 hours ago)",
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _serving_card(store: Store, model: str) -> registry.ModelVersion:
    """The champion's card, or the newest version's when nothing is champion yet."""
    try:
        return registry.resolve(store, model, "champion")
    except StoreError as exc:
        raise store_failure(store, f"reading model {model!r}", exc) from None
    except DatawheelError:
        versions = registry.list_versions(store, model)
        if not versions:
            raise
        return versions[-1]


def current_dataset(store: Store, model: str) -> ds.DatasetVersion:
    """The latest committed version of the dataset the model's champion (else its newest
    version) was trained on: what a harvest extends, and what the studio reviews."""
    return _dataset_of(store, _serving_card(store, model))


def _dataset_of(store: Store, mv: registry.ModelVersion) -> ds.DatasetVersion:
    name = mv.card.get("dataset")
    if not isinstance(name, str) or not name:
        raise DatawheelError(
            f"the card of {mv.name}:{mv.version} names no dataset",
            "register the model through the training pipeline, which records its dataset",
        )
    parent = ds.latest_version(store, name)
    if parent is None:
        raise DatawheelError(
            f"dataset {name!r} of model {mv.name} has no committed version in {store.uri}",
            f"ingest and validate a version of {name!r} first",
        )
    return parent


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _notes(rows: ProductionRows, lineage: dict[str, Any]) -> list[str]:
    notes = list(rows.notes)
    if rows.outside_classes:
        shown = ", ".join(repr(v) for v in rows.outside_examples)
        notes.append(
            f"{_plural(rows.outside_classes, 'label')} outside the model's classes skipped "
            f"({shown})"
        )
    if lineage["unmatched_labels"]:
        notes.append(
            f"{_plural(lineage['unmatched_labels'], 'label')} whose prediction is not in the "
            "ledger segments read were left for a later harvest"
        )
    for seg in lineage["skipped_segments"]:
        notes.append(f"skipped unreadable segment {seg['key']} ({seg['error']})")
    return notes


def harvest(
    store: Store,
    model: str,
    *,
    since: float | None = None,
    until: float | None = None,
    reason: str = "",
    validate: bool = True,
) -> HarvestResult:
    """Turn ``model``'s labels given in ``[since, until)`` into a new dataset version.

    With ``validate`` the version is validated and committed (a version that fails is
    rejected: :class:`ValidationError`); without, it is left as a candidate for the
    validate step. A window without new labels creates nothing and says so.
    """
    validate_name(model, "model name")
    end = time.time() if until is None else float(until)
    if since is not None and since >= end:
        raise DatawheelError(
            f"the harvest window [{_iso(since)}, {_iso(end)}) is empty: since is not before until",
            "pass a --since earlier than --until",
        )
    mv = _serving_card(store, model)
    parent = _dataset_of(store, mv)
    labels = read_labels(store, model, since, end)
    joined = join_predictions(store, model, labels, end)
    vocab = parent.categories
    rows = production_rows(store, model, joined, parent.features, parent.classes, vocab)
    lineage: dict[str, Any] = {
        "kind": "harvest",
        "parent": parent.version,
        "model": model,
        "serving_version": mv.version,
        "window": {"since": _iso(since) if since is not None else None, "until": _iso(end)},
        "segments": sorted(labels.segments + joined.segments),
        "skipped_segments": labels.skipped + joined.skipped,
        "labels": len(rows),
        "predictions_seen": joined.predictions_seen,
        "labels_received": labels.received,
        "labelled_predictions": len(labels.frame),
        "unmatched_labels": joined.unmatched,
        "labels_outside_classes": rows.outside_classes,
        "feature_mismatch": rows.mismatched,
        "model_versions": dict(sorted(rows.model_versions.items())),
        "unregistered_versions": dict(sorted(rows.unregistered.items())),
        "corrections": rows.corrections,
        "confirmations": rows.confirmations,
        "conflicts": 0,
        "reason": reason,
    }
    result = HarvestResult(
        parent.name,
        None,
        parent.version,
        len(rows),
        rows.corrections,
        rows.confirmations,
        0,
        False,
        lineage["skipped_segments"],
        lineage=lineage,
        outcome="nothing",
    )
    notes = _notes(rows, lineage)
    window = f"[{lineage['window']['since'] or 'the beginning'}, {lineage['window']['until']})"
    if not len(rows):
        return _with_message(
            result,
            f"no new labels for model {model} in {window}: no version created "
            f"({parent.name}@{parent.version} stays the latest)",
            notes,
        )
    try:
        frame = ds.read_frame(store, parent)
    except (StoreError, OSError) as exc:
        raise store_failure(store, f"reading {parent.name}@{parent.version}", exc) from None
    merged = merge_rows(
        frame,
        features=parent.features,
        label=parent.label,
        parent_production=ds.production_mask(parent.manifest, len(frame)),
        x=rows.x,
        labels=rows.labels,
        vocab=vocab,
    )
    lineage.update(
        conflicts=merged.conflicts,
        added=merged.added,
        relabelled=merged.relabelled,
        duplicates=merged.duplicates,
    )
    result = _replace(result, conflicts=merged.conflicts)
    if not merged.changed:
        return _with_message(
            result,
            f"nothing new: the {_plural(len(rows), 'labelled row')} of model {model} in "
            f"{window} are already in {parent.name}@{parent.version}; no version created",
            notes,
        )
    return _write(store, result, parent, merged, validate, window, notes)


def _replace(result: HarvestResult, **changes: Any) -> HarvestResult:
    return replace(result, **changes)


def _with_message(result: HarvestResult, head: str, notes: list[str]) -> HarvestResult:
    return _replace(result, message="; ".join([head, *notes]))


def _write(
    store: Store,
    result: HarvestResult,
    parent: ds.DatasetVersion,
    merged: Merged,
    validate: bool,
    window: str,
    notes: list[str],
) -> HarvestResult:
    """Write the merged rows as a candidate; with ``validate``, commit or reject it."""
    shape = parent.manifest.get("image_shape")
    loaded = Loaded(
        merged.frame,
        parent.label,
        f"harvest:{result.lineage['model']}",
        (int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
    )
    extra = {"lineage": result.lineage, "production_rows": ds.production_ranges(merged.production)}
    try:
        dv = ds.ingest_frame(store, loaded, name=parent.name, parent=parent, extra_manifest=extra)
        outcome = "found" if ds.is_committed(store, dv.name, dv.version) else "candidate"
        if outcome == "candidate" and validate:
            from datawheel.data.gate import admit

            admission = admit(store, dv.name, dv.version)
            if admission.outcome == "rejected":
                raise ValidationError(
                    f"{admission.report.summary()}; the harvested version was rejected, not "
                    f"committed (report: {location(store, admission.report_key)})",
                    next((a.fix for a in admission.report.hard if a.fix), "")
                    or "fix the data in the ledger window, or re-pin the dataset's reference",
                )
            outcome = admission.outcome
    except ValidationError:
        raise
    except (StoreError, OSError) as exc:
        raise store_failure(store, f"writing {parent.name}'s new version", exc) from None
    what = {
        "committed": "committed",
        "candidate": "written as a candidate (the validate step commits it)",
        "found": "already committed",
    }[outcome]
    head = (
        f"{dv.name}@{dv.version} {what}: {parent.name}@{parent.version}'s "
        f"{_plural(int(parent.manifest['rows']), 'row')} + {_plural(merged.added, 'new row')}"
        f", {merged.relabelled} relabelled, from {_plural(result.labeled_rows, 'label')} in "
        f"{window} ({_plural(result.corrections, 'correction')}, "
        f"{_plural(result.confirmations, 'confirmation')}, "
        f"{_plural(merged.conflicts, 'conflict')}, {merged.duplicates} duplicate(s) dropped)"
    )
    created = outcome in ("committed", "candidate")
    return _with_message(
        _replace(result, version=dv.version, created=created, outcome=outcome), head, notes
    )
