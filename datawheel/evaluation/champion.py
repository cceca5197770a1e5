"""Score the registry's champion on the challenger's test rows, or say exactly why not.

The champion is scored through its own exported model (``model.ts`` takes RAW features, its
fitted transform is inside) on the same raw test rows as the challenger:

- the champion gets its own columns by name: another order is reordered, and features the
  split has beyond the champion's (one the challenger added) are left out;
- class sets may differ: predictions are compared as label strings, so the champion is
  simply wrong on rows of a class it never knew;
- a feature the champion needs and the split lacks, another image shape, files that fail
  their checksum, a model that cannot be loaded or run: the champion exists but cannot be
  scored, and :class:`ChampionScore` says why (the caller rejects; it never pretends there
  is no champion).

A store that cannot be reached is not a reason to reject: that error propagates, so the step
fails and can be retried.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datawheel import registry
from datawheel.data.transform import Transform
from datawheel.errors import DatawheelError
from datawheel.evaluation.predict import BATCH_ROWS, ModelOutputError, predict_classes
from datawheel.storage import Store, StoreError

__all__ = ["ChampionScore", "input_mismatch", "score_champion"]

_SHOWN_NAMES = 12


@dataclass(frozen=True)
class ChampionScore:
    """The champion's correctness per test row, or why it has none.

    ``version`` None and ``problem`` empty: there is no champion. ``correct`` None and
    ``problem`` set: a champion exists (``version``, when known) but could not be scored.
    """

    version: str | None
    correct: np.ndarray | None = None
    problem: str = ""
    note: str = ""  # e.g. classes the champion never knew; for the log


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    more = f", ... {len(names)} in all" if len(names) > _SHOWN_NAMES else ""
    return f"[{shown}{more}]"


def _shape(shape: Sequence[int] | None) -> str:
    return "x".join(str(int(s)) for s in shape) if shape else ""


def input_mismatch(version: str, champion: Transform, test: Transform) -> str:
    """Why the champion cannot take the test split's raw rows; "" when it can.

    The champion is given the columns it was trained on, by name: the same names in another
    order are reordered, and columns the test split has beyond them (a feature the
    challenger added) are left out. Only a feature the champion needs and the split lacks,
    or a repeated name, makes it unscorable.
    """
    missing = [f for f in champion.features if f not in set(test.features)]
    repeated = len(set(champion.features)) != len(champion.features)
    repeated = repeated or len(set(test.features)) != len(test.features)
    if missing or repeated:
        why = f"missing {', '.join(missing)}" if missing else "some feature names repeat"
        return (
            f"champion {version} takes features {_names(champion.features)} but the test split "
            f"has {_names(test.features)}: {why}"
        )
    mine, theirs = champion.image_shape or None, test.image_shape or None
    if (list(mine) if mine else None) != (list(theirs) if theirs else None):
        took = f"images of shape {_shape(mine)}" if mine else "tabular rows (no image shape)"
        has = f"images of shape {_shape(theirs)}" if theirs else "tabular rows (no image shape)"
        return (
            f"champion {version} takes {took} but the test split has {has}: the same feature "
            "names do not mean the same pixels"
        )
    return ""


def _said(exc: DatawheelError) -> str:
    return f"{exc.problem} (to fix: {exc.fix})" if exc.fix else exc.problem


def score_champion(
    store: Store,
    model_name: str,
    x_test: np.ndarray,
    y_test: np.ndarray,
    transform: Transform,
    *,
    batch_size: int = BATCH_ROWS,
) -> ChampionScore:
    """Score ``model_name@champion`` on raw ``x_test`` (columns ``transform.features``) whose
    labels are ``y_test``, indices into ``transform.classes``."""
    try:
        record = registry.get_alias(store, model_name, "champion")
    except registry.CorruptRecordError as exc:
        return ChampionScore(None, problem=_said(exc))
    if record is None:
        return ChampionScore(None)
    version = str(record["version"])
    try:
        return _score(store, model_name, version, x_test, y_test, transform, batch_size)
    except StoreError:
        raise  # unreachable or refusing store: fail the step, a retry may succeed
    except DatawheelError as exc:  # no card, a corrupt card, a checksum or load failure
        return ChampionScore(version, problem=f"champion {version}: {_said(exc)}")


def _score(
    store: Store,
    name: str,
    version: str,
    x_test: np.ndarray,
    y_test: np.ndarray,
    transform: Transform,
    batch_size: int,
) -> ChampionScore:
    from datawheel.training.export import load_exported

    mv = registry.resolve(store, name, version)
    lacking = [f for f in ("transform.json", "model.ts") if f not in mv.card["files"]]
    if lacking:
        return ChampionScore(
            version, problem=f"champion {version} was registered without {', '.join(lacking)}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        registry.fetch(store, mv, tmp, only=["transform.json"])
        try:
            champ_tf = Transform.load(Path(tmp, "transform.json"))
        except (OSError, ValueError, TypeError) as exc:
            return ChampionScore(
                version, problem=f"champion {version} has an unreadable transform.json ({exc})"
            )
        mismatch = input_mismatch(version, champ_tf, transform)
        kinds = [
            f
            for f in champ_tf.features
            if (f in champ_tf.categories) != (f in transform.categories)
        ]
        if kinds and not mismatch:
            mismatch = (
                f"champion {version} types feature(s) {', '.join(kinds[:8])} otherwise "
                "(categorical against numeric)"
            )
        if mismatch:
            return ChampionScore(version, problem=mismatch)
        registry.fetch(store, mv, tmp, only=["model.ts"])
        module = load_exported(Path(tmp, "model.ts"))
    position = {f: i for i, f in enumerate(transform.features)}
    order = np.array([position[f] for f in champ_tf.features], np.intp)
    columns = None if np.array_equal(order, np.arange(len(order))) else order
    x_test = transform.recode(x_test, champ_tf) if transform.categories else x_test
    try:
        pred = predict_classes(
            module, x_test, n_classes=len(champ_tf.classes), columns=columns, batch_size=batch_size
        )
    except (ModelOutputError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ChampionScore(version, problem=f"champion {version} fails on the test rows: {first}")
    ours = {c: i for i, c in enumerate(transform.classes)}
    as_ours = np.array([ours.get(c, -1) for c in champ_tf.classes], np.int64)
    return ChampionScore(version, as_ours[pred] == y_test, note=_class_note(champ_tf, transform))


def _class_note(champion: Transform, test: Transform) -> str:
    unknown = [c for c in test.classes if c not in set(champion.classes)]
    dropped = [c for c in champion.classes if c not in set(test.classes)]
    notes = []
    if unknown:
        notes.append(f"it never knew {', '.join(unknown)} (wrong on those rows)")
    if dropped:
        notes.append(f"it also predicts {', '.join(dropped)}, absent here (always wrong)")
    return "; ".join(notes)
