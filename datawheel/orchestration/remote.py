"""The remote half of the Runner seam: submit a compiled pipeline to a KFP API (kfp.Client)."""

from __future__ import annotations

import json
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
    namespace: str | None = None,
) -> str:
    """Upload a compiled pipeline to the KFP API at ``host`` and start a run; returns its id.

    ``namespace``: the Kubeflow profile namespace (multi-user Kubeflow) whose experiment
    the run joins and whose pods run it; None on standalone KFP."""
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
            namespace=namespace or None,
            enable_caching=False,
        )
    except DatawheelError:
        raise
    except Exception as exc:
        raise api_error(host, "the submission", exc) from exc
    return str(getattr(result, "run_id", result))


def api_error(host: str, what: str, exc: Exception) -> DatawheelError:
    """A KFP API failure (``what`` it was asked) as one line: the API's own message (from the
    body of a kfp_server_api ApiException, else the first line) and the fix."""
    status = getattr(exc, "status", None)
    message = _body_message(getattr(exc, "body", None))
    if not message:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    fix = "check --host (the KFP API URL, e.g. http://localhost:8080) and your credentials"
    if "namespace" in message.lower():
        fix = "on multi-user Kubeflow pass your profile's namespace: --namespace PROFILE"
    head = f"{status}: " if status and str(status) not in message else ""
    return DatawheelError(f"KFP API at {host} refused or failed {what}: {head}{message[:200]}", fix)


def _body_message(body: Any) -> str:
    """The ``error_message`` (or ``message``) of a KFP API error body, if it has one."""
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        return str(body).strip().splitlines()[0] if str(body).strip() else ""
    if isinstance(doc, dict):
        return str(doc.get("error_message") or doc.get("message") or doc.get("error") or "")
    return ""
