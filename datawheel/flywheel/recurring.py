"""Scheduled retraining: a KFP recurring run of the flywheel pipeline.

KFP's cron (robfig/cron with seconds) has **6 fields, seconds first**:
``SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK``, e.g. ``0 0 3 * * *`` for 03:00
every day. :func:`validate_cron` checks each field (``*``, ``?`` in the day fields, numbers,
``a-b`` ranges, ``/step``, comma lists, JAN-DEC and SUN-SAT) and names the bad field in its
error; a 5-field Unix cron gets the 6-field expression it probably meant.
:func:`create_schedule` uploads the pipeline and creates the recurring run through
``kfp.Client.create_recurring_run`` with ``max_concurrency=1`` (never two flywheel runs at
once) and ``no_catchup=True`` (a paused schedule does not replay every missed night).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from datawheel.errors import DatawheelError

__all__ = ["FIELDS", "create_schedule", "validate_cron"]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# name, low, high, names (value of the first), "?" allowed
FIELDS: tuple[tuple[str, int, int, tuple[str, ...], bool], ...] = (
    ("seconds", 0, 59, (), False),
    ("minutes", 0, 59, (), False),
    ("hours", 0, 23, (), False),
    ("day-of-month", 1, 31, (), True),
    ("month", 1, 12, _MONTHS, False),
    ("day-of-week", 0, 6, _DAYS, True),
)
_ITEM = re.compile(r"^(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(\d+))?$")
_FORMAT = (
    "KFP cron has 6 fields, seconds first: SECONDS MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK"
)


def _value(text: str, field: tuple[str, int, int, tuple[str, ...], bool]) -> int:
    _, low, high, names, _ = field
    if text.upper() in names:
        return low + names.index(text.upper())
    if not text.isdigit() or not low <= int(text) <= high:
        allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        raise ValueError(f"{text!r} is not in {allowed}")
    return int(text)


def _check_field(text: str, field: tuple[str, int, int, tuple[str, ...], bool]) -> None:
    if text == "?" and field[4]:
        return
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m:
            raise ValueError(f"{item!r} is not '*', a value, a range a-b or a step x/n")
        span, step = m.group(1), m.group(2)
        if step is not None and int(step) < 1:
            raise ValueError(f"step /{step} must be at least 1")
        if span == "*":
            continue
        lo, _, hi = span.partition("-")
        first = _value(lo, field)
        if hi and _value(hi, field) < first:
            raise ValueError(f"range {span!r} runs backwards")


def validate_cron(expression: str) -> str:
    """``expression`` normalised to single spaces, if it is a valid 6-field KFP cron."""
    parts = expression.split()
    if len(parts) != 6:
        hint = f"; as a Unix cron this is probably '0 {' '.join(parts)}'" if len(parts) == 5 else ""
        raise DatawheelError(
            f"cron {expression!r} has {len(parts)} field(s){hint}",
            f'{_FORMAT}, e.g. "0 0 3 * * *" for 03:00 every day',
        )
    for text, field in zip(parts, FIELDS, strict=True):
        try:
            _check_field(text, field)
        except ValueError as exc:
            position = FIELDS.index(field) + 1
            raise DatawheelError(
                f"cron {expression!r}: field {position} ({field[0]}) {text!r}: {exc}",
                f'{_FORMAT}, e.g. "0 0 3 * * *"',
            ) from None
    return " ".join(parts)


class _Client(Protocol):
    def create_experiment(self, name: str, **kwargs: Any) -> Any: ...

    def create_recurring_run(self, experiment_id: str, job_name: str, **kwargs: Any) -> Any: ...


def create_schedule(
    package: str | Path,
    *,
    host: str,
    cron: str,
    job_name: str,
    experiment: str = "datawheel-flywheel",
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    client_factory: Callable[..., _Client] | None = None,
    namespace: str | None = None,
) -> str:
    """Create the recurring run on the KFP API at ``host``; returns its id. ``namespace``:
    the profile namespace (multi-user Kubeflow) whose experiment it joins."""
    cron = validate_cron(cron)
    if not host.startswith(("http://", "https://")):
        raise DatawheelError(
            f"--host {host!r} is not a URL", "pass e.g. --host http://localhost:8080"
        )
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    try:
        client = client_factory(host=host, existing_token=token)
        exp = client.create_experiment(name=experiment, namespace=namespace or None)
        result = client.create_recurring_run(
            experiment_id=str(getattr(exp, "experiment_id", exp)),
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=dict(params or {}),
            pipeline_package_path=str(package),
            enable_caching=False,
        )
    except DatawheelError:
        raise
    except Exception as exc:
        from datawheel.orchestration.remote import api_error

        raise api_error(host, "the recurring run", exc) from exc
    return str(getattr(result, "recurring_run_id", result))
