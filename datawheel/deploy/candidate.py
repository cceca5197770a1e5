"""What a canary may roll out: the registry's ``candidate``, and nothing else.

The evaluator sets ``candidate`` when it promotes a model and the deployment uses canaries
(:mod:`datawheel.orchestration.register`); a rejected model is only ever the
``challenger``. :func:`candidate_to_roll_out` refuses, with one line saying why, when

* there is no candidate (the last evaluation rejected, or the last candidate was already
  rolled out or rolled back),
* the candidate is already the champion,
* its card says the evaluation rejected it (someone pointed the alias at it by hand), or
* it was compared with another champion than the one serving now: it was never shown
  better than the live model.

:func:`retire_candidate` unsets the alias once a canary has decided about it (promoted, or
rolled back because it was worse), by compare-and-swap: a newer candidate set meanwhile is
left alone.
"""

from __future__ import annotations

from datawheel import registry
from datawheel.errors import DatawheelError
from datawheel.storage import Store

__all__ = ["NoCandidateError", "candidate_to_roll_out", "retire_candidate"]

_RETRAIN = (
    "train a model that beats the champion (the training or flywheel pipeline with "
    "canary=true, or 'datawheel deploy settings --model {name} --canary'); its promotion "
    "sets the candidate"
)


class NoCandidateError(DatawheelError):
    """There is nothing the canary may roll out."""


def _last_rejection(store: Store, name: str) -> str:
    versions = registry.list_versions(store, name)
    last = versions[-1] if versions else None
    if last is not None and last.card.get("decision") == "reject":
        return f"the last evaluation rejected {name}:{last.version}, nothing to roll out"
    return "nothing to roll out"


def candidate_to_roll_out(store: Store, name: str) -> tuple[str, str]:
    """(champion, candidate) versions of ``name``; :class:`NoCandidateError` if none."""
    champion = registry.resolve(store, name, "champion").version
    record = registry.get_alias(store, name, "candidate")
    if record is None:
        raise NoCandidateError(
            f"model {name!r} has no candidate: {_last_rejection(store, name)}",
            _RETRAIN.format(name=name),
        )
    candidate = registry.resolve(store, name, str(record["version"]))
    if candidate.version == champion:
        raise NoCandidateError(
            f"model {name!r} has no candidate: {name}:{champion} is already the champion",
            _RETRAIN.format(name=name),
        )
    if candidate.card.get("decision") == "reject":
        raise NoCandidateError(
            f"{name}@candidate points at {candidate.version}, which the evaluation rejected: "
            "a rejected model is never rolled out",
            f"point the candidate elsewhere, or {_RETRAIN.format(name=name)}",
        )
    seen = candidate.card.get("evaluated_against", champion)  # cards from before: not known
    if seen != champion:
        raise NoCandidateError(
            f"{name}@candidate {candidate.version} was evaluated against champion "
            f"{seen or 'none'}, but the champion is now {champion}: it was never compared "
            "with the live model",
            "re-run the evaluation (the training or flywheel pipeline) against the current "
            "champion",
        )
    return champion, candidate.version


def retire_candidate(store: Store, name: str, version: str, reason: str) -> bool:
    """Unset ``name@candidate`` if it still points at ``version``; whether it did."""
    try:
        registry.clear(store, name, "candidate", reason=reason, expect=version)
    except registry.AliasMovedError:
        return False  # a newer candidate arrived meanwhile: keep it
    return True
