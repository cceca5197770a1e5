"""apps/v1 Deployments in one namespace: the only Kubernetes API a canary rollout needs.

:class:`Deployments` is the seam; :class:`KubeDeployments` implements it with the official
``kubernetes`` client (``AppsV1Api``). Objects travel as the API's own JSON (plain dicts,
camelCase keys), so what is sent is exactly what a reader of the code sees.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Protocol

from datawheel.errors import DatawheelError

__all__ = ["Deployments", "KubeDeployments", "KubeError", "connect"]

_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)


class KubeError(DatawheelError):
    """The Kubernetes API could not be reached or refused a request."""


class Deployments(Protocol):
    """Deployments of one namespace, as API JSON dicts."""

    namespace: str

    def get(self, name: str) -> dict[str, Any] | None:
        """The Deployment, or None when it does not exist."""
        ...

    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A strategic-merge patch (for the fields used here the same as a JSON merge patch)."""
        ...

    def delete(self, name: str) -> None:
        """Delete (pods first: foreground propagation); a missing Deployment is not an error."""
        ...


class KubeDeployments:
    """:class:`Deployments` over ``kubernetes.client.AppsV1Api``."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.host = str(api_client.configuration.host)
        self._api = client.AppsV1Api(api_client)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = fn(*args, _preload_content=False, _request_timeout=_TIMEOUT, **kwargs)
            return json.loads(response.data) if response.data else {}
        except ApiException as exc:
            if exc.status == 404:
                raise _NotFound from None
            raise KubeError(
                f"Kubernetes API refused to {what} in namespace {self.namespace!r}: "
                f"{exc.status} {_message(exc)}",
                _fix_for(exc.status),
            ) from None
        except (HTTPError, OSError) as exc:
            raise KubeError(
                f"cannot reach the Kubernetes API at {self.host} to {what}: {exc}",
                "check that kubectl reaches the cluster (kubectl get deployments) or pass "
                "--kubeconfig/--context",
            ) from None

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = self._call(
                f"read deployment {name}",
                self._api.read_namespaced_deployment,
                name,
                self.namespace,
            )
        except _NotFound:
            return None
        return doc

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name", "?")
        try:
            doc: dict[str, Any] = self._call(
                f"create deployment {name}",
                self._api.create_namespaced_deployment,
                self.namespace,
                body,
            )
        except _NotFound:
            raise KubeError(
                f"namespace {self.namespace!r} does not exist", "pass --namespace"
            ) from None
        return doc

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = self._call(
                f"patch deployment {name}",
                self._api.patch_namespaced_deployment,
                name,
                self.namespace,
                patch,
            )
        except _NotFound:
            raise KubeError(
                f"deployment {name!r} disappeared from namespace {self.namespace!r}",
                "something else deleted it; check 'kubectl get deployments'",
            ) from None
        return doc

    def delete(self, name: str) -> None:
        with contextlib.suppress(_NotFound):
            self._call(
                f"delete deployment {name}",
                self._api.delete_namespaced_deployment,
                name,
                self.namespace,
                propagation_policy="Foreground",
            )


class _NotFound(Exception):
    pass


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)


def _fix_for(status: int | None) -> str:
    if status in (401, 403):
        return (
            "use credentials that may get, create, patch and delete deployments there "
            "(kubectl auth can-i patch deployments -n NAMESPACE)"
        )
    if status == 409:
        return "another change raced this one; run the command again"
    return "see the message; 'kubectl get deployments' shows the current state"


def connect(
    namespace: str, *, kubeconfig: str | None = None, context: str | None = None
) -> KubeDeployments:
    """Deployments in ``namespace`` of the cluster that kubeconfig (or the pod's service
    account, inside a cluster) points at."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise DatawheelError(
            "the kubernetes Python client is not installed", "pip install 'kubernetes>=29'"
        ) from None
    cfg = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(
                config_file=kubeconfig,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
    except (config.ConfigException, OSError) as exc:
        raise KubeError(
            f"no Kubernetes cluster configured: {exc}",
            "set KUBECONFIG or pass --kubeconfig PATH (and --context NAME), "
            "or run inside the cluster with a service account",
        ) from None
    return KubeDeployments(client.ApiClient(cfg), namespace)
