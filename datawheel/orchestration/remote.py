"""The remote half of the Runner seam: submit a compiled pipeline to a KFP API (kfp.Client)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from datawheel.errors import DatawheelError

__all__ = ["api_error", "submit"]


class _Client(Protocol):
    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Any: ...


def submit(
    package: str | Path,
    *,
    host: str,
    arguments: Mapping[str, Any],
    experiment: str,
    run_name: str,
    client_factory: Callable[..., _Client] | None = None,
    token: str | None = None,
) -> str:
    """Upload a compiled pipeline to the KFP API at ``host`` and start a run; returns its id."""
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    try:
        client = client_factory(host=host, existing_token=token)
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=dict(arguments),
            run_name=run_name,
            experiment_name=experiment,
            enable_caching=False,
        )
    except DatawheelError:
        raise
    except Exception as exc:
        raise api_error(host, "the submission", exc) from exc
    return str(getattr(result, "run_id", result))


def api_error(host: str, what: str, exc: Exception) -> DatawheelError:
    """A KFP API failure (``what`` it was asked) as one line: its first line and the fix."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatawheelError(
        f"KFP API at {host} refused or failed {what}: {first[:200]}",
        "check --host (the KFP API URL, e.g. http://localhost:8080) and your credentials",
    )
