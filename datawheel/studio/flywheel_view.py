"""What the overview and the flywheel page show, read from the store as its writers left it.

* dataset versions (:mod:`datawheel.data.versions`): each manifest's ``parent``, ``rows``,
  ``label_distribution``, and for a harvested version its ``lineage`` (reason, labels,
  corrections, rows added) and ``production_rows`` (:mod:`datawheel.flywheel.harvest`);
* model versions (:mod:`datawheel.registry`): each card's metrics, ``dataset`` and
  ``dataset_version``, ``decision``/``reason``/``trigger``, its ``report.html`` if it was
  registered with one, and the aliases pointing at it;
* what happened, newest first: the watcher's runs (``flywheel/watch/MODEL/state.json``,
  :mod:`datawheel.flywheel.run_state`: the run in flight and the last runs, with their
  rule, reason and status), every alias move (``moves`` in the alias records, with its
  reason) and the canary rollouts' records (``models/NAME/canary/*.json``);
* the ledger's counts (predictions, labelled predictions, labelled today).

A part of the store that is missing is an empty list; one that is corrupt is a note on
the page (:class:`Section`), never an error answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from datawheel.errors import DatawheelError
from datawheel.storage import Store, StoreError

__all__ = [
    "DatasetRow",
    "Event",
    "ModelRow",
    "Section",
    "dataset_rows",
    "events",
    "ledger_counts",
    "model_rows",
    "shown_metrics",
    "when",
]

T = TypeVar("T")
_METRICS = ("test_accuracy", "test_macro_f1", "val_accuracy", "val_loss", "train_loss")
_FEATURES_SHOWN = 6


@dataclass
class Section:
    """One part of a page: its items, or the note saying why it could not be read."""

    items: list[Any] = field(default_factory=list)
    error: str = ""


def section(read: Callable[[], list[T]]) -> Section:
    try:
        return Section(list(read()))
    except (DatawheelError, StoreError, OSError, ValueError, KeyError, TypeError) as exc:
        return Section([], f"could not read this part of the store: {exc}")


def when(value: Any) -> str:
    """Epoch seconds or an ISO time as ``YYYY-MM-DD HH:MM:SS UTC`` ("" if neither)."""
    ts = _epoch(value)
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def _epoch(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return 0.0
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return 0.0


# --- datasets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetRow:
    name: str
    version: str
    parent: str | None
    committed: str
    rows: int
    production_rows: int
    features: list[str]  # the first few
    feature_count: int
    label: str
    labels: dict[str, int]  # label_distribution
    lineage: dict[str, Any]  # a harvest's lineage ({} for an ingested version)
    trained: list[str]  # model versions trained on it
    used_by_model: bool


def dataset_rows(store: Store, model: str, models: list[ModelRow]) -> list[DatasetRow]:
    """Every committed dataset version, the model's datasets first, newest version first."""
    from datawheel.data import versions as ds

    trained: dict[tuple[str, str], list[str]] = {}
    for m in models:
        trained.setdefault((m.dataset, m.dataset_version), []).append(m.version)
    mine = {m.dataset for m in models}
    names = sorted(ds.list_datasets(store), key=lambda n: (n not in mine, n))
    out = []
    for name in names:
        for dv in reversed(ds.list_versions(store, name)):
            man = dv.manifest
            ranges = man.get("production_rows") or []
            lineage = man.get("lineage") if isinstance(man.get("lineage"), dict) else {}
            out.append(
                DatasetRow(
                    name=name,
                    version=dv.version,
                    parent=man.get("parent"),
                    committed=when(man.get("committed_at") or man.get("created_at")),
                    rows=int(man.get("rows") or 0),
                    production_rows=sum(int(b) - int(a) for a, b in ranges),
                    features=dv.features[:_FEATURES_SHOWN],
                    feature_count=len(dv.features),
                    label=dv.label,
                    labels={str(k): int(v) for k, v in man.get("label_distribution", {}).items()},
                    lineage=dict(lineage or {}),
                    trained=trained.get((name, dv.version), []),
                    used_by_model=name in mine,
                )
            )
    return out


# --- models --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    version: str
    created: str
    aliases: list[str]
    metrics: list[tuple[str, float]]
    dataset: str
    dataset_version: str
    decision: str
    reason: str
    trigger: str
    has_report: bool
    model_kind: str


def shown_metrics(metrics: dict[str, Any], limit: int = 4) -> list[tuple[str, float]]:
    """The card's headline metrics, the test ones first."""
    found = [(k, float(metrics[k])) for k in _METRICS if isinstance(metrics.get(k), int | float)]
    return found[:limit]


def aliases_of(store: Store, model: str) -> dict[str, str]:
    """alias -> version, for the aliases that are set."""
    from datawheel import registry

    out = {}
    for alias in registry.ALIASES:
        record = registry.get_alias(store, model, alias)
        if record is not None:
            out[alias] = str(record["version"])
    return out


def model_rows(store: Store, model: str) -> list[ModelRow]:
    """The model's versions, newest first."""
    from datawheel import registry

    pointing: dict[str, list[str]] = {}
    for alias, version in aliases_of(store, model).items():
        pointing.setdefault(version, []).append(alias)
    out = []
    for mv in reversed(registry.list_versions(store, model)):
        card = mv.card
        out.append(
            ModelRow(
                version=mv.version,
                created=when(card.get("created_at")),
                aliases=pointing.get(mv.version, []),
                metrics=shown_metrics(card.get("metrics") or {}),
                dataset=str(card.get("dataset") or ""),
                dataset_version=str(card.get("dataset_version") or ""),
                decision=str(card.get("decision") or ""),
                reason=str(card.get("reason") or ""),
                trigger=str(card.get("trigger") or ""),
                has_report="report.html" in (card.get("files") or {}),
                model_kind=str(card.get("model_kind") or ""),
            )
        )
    return out


# --- what happened -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  # "run", "alias", "canary"
    what: str
    reason: str
    status: str = ""
    detail: str = ""

    @property
    def when(self) -> str:
        return when(self.at)


def _runs(store: Store, model: str) -> list[Event]:
    from datawheel.flywheel.run_state import WatchState

    state = WatchState(store, model).read()
    runs = [r for r in state.get("history") or [] if isinstance(r, dict)]
    if isinstance(state.get("in_flight"), dict):
        runs.append(state["in_flight"])
    out = []
    for run in runs:
        rule = str(run.get("rule") or "")
        out.append(
            Event(
                _epoch(run.get("started")),
                "run",
                f"run {run.get('run_id', '?')}" + (f" (rule {rule})" if rule else ""),
                str(run.get("reason") or ""),
                str(run.get("status") or ""),
                str(run.get("detail") or ""),
            )
        )
    return out


def _moves(store: Store, model: str) -> list[Event]:
    from datawheel import registry

    out = []
    for alias in registry.ALIASES:
        record = registry.get_alias(store, model, alias)
        for move in (record or {}).get("moves") or []:
            if isinstance(move, dict):
                what = f"{alias}: {move.get('from') or 'nothing'} -> {move.get('to') or 'unset'}"
                out.append(Event(_epoch(move.get("at")), "alias", what, str(move.get("reason"))))
    return out


def _canaries(store: Store, model: str) -> list[Event]:
    out = []
    for key in store.list(f"models/{model}/canary"):
        if not key.endswith(".json"):
            continue
        try:
            record = json.loads(store.get_bytes(key))
        except ValueError:
            continue  # a torn record: the rollout's own log says what happened
        if isinstance(record, dict):
            what = (
                f"canary {record.get('canary_version', '?')} against "
                f"{record.get('stable_version', '?')}"
            )
            out.append(
                Event(
                    _epoch(record.get("finished_at")),
                    "canary",
                    what,
                    str(record.get("reason") or ""),
                    str(record.get("decision") or ""),
                )
            )
    return out


def events(store: Store, model: str, limit: int = 30) -> list[Event]:
    """Runs, alias moves and canary rollouts, newest first."""
    found = [*_runs(store, model), *_moves(store, model), *_canaries(store, model)]
    return sorted(found, key=lambda e: -e.at)[:limit]


# --- the ledger ----------------------------------------------------------------------------


def ledger_counts(store: Store, model: str, now: float) -> dict[str, Any]:
    """Predictions stored, predictions labelled, predictions labelled today (UTC), and the
    stored predictions per predicted class (``predicted``: [(class, count)])."""
    from datawheel.serving.ledger import read_ledger

    preds = read_ledger(store, model=model, columns=["label"])
    fb = read_ledger(store, model=model, kind="feedback", columns=["id", "ts"])
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = fb[fb["ts"] >= midnight.timestamp()]
    classes = preds["label"].astype(str).value_counts().sort_index()
    return {
        "predictions": len(preds),
        "labelled": int(fb["id"].nunique()),
        "labels": len(fb),
        "labelled_today": int(today["id"].nunique()),
        "predicted": [(str(k), float(v)) for k, v in classes.items()],
    }
