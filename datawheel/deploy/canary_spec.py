"""The Kubernetes side of a canary, as pure functions on Deployment JSON.

* :func:`canary_deployment` clones the stable Deployment into the canary one: same pod
  template, ``datawheel.dev/track=canary`` in the selector and pod labels (so the two
  ReplicaSets never adopt each other's pods, while the Service, which selects only
  ``app.kubernetes.io/name``, sends traffic to both), and the serve container's
  ``--model`` pinned to the candidate version.
* :func:`canary_replicas` turns a traffic share into a replica count: without a service mesh,
  the share of traffic a track gets is its share of the ready pods behind the Service.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

from datawheel.errors import DatawheelError
from datawheel.registry import parse_ref

__all__ = [
    "CANARY_ANNOTATION",
    "TRACK_LABEL",
    "canary_deployment",
    "canary_replicas",
    "check_follows_champion",
    "model_arg",
    "parse_steps",
]

TRACK_LABEL = "datawheel.dev/track"
CANARY_ANNOTATION = "datawheel.dev/last-canary"
CANARY_OF_ANNOTATION = "datawheel.dev/canary-of"
_SERVE_CONTAINER = "serve"


def parse_steps(text: str) -> tuple[float, ...]:
    """``"0.1,0.25,0.5"`` -> canary traffic shares, strictly increasing, each in (0, 1).

    1 is not a step: the promotion itself moves all traffic (the stable pods hot-swap).
    """
    try:
        steps = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        steps = ()
    ok = bool(steps) and all(0 < w < 1 for w in steps)
    if not ok or any(b <= a for a, b in itertools.pairwise(steps)):
        raise DatawheelError(
            f"canary steps {text!r} are not increasing traffic shares between 0 and 1",
            "pass --steps like 0.1,0.25,0.5 (promotion moves the rest of the traffic)",
        )
    return steps


def canary_replicas(stable: int, share: float) -> int:
    """Canary pods that take ``share`` of the traffic next to ``stable`` pods (at least 1).

    The stable Deployment is never scaled (its HorizontalPodAutoscaler owns its size, and a
    bad canary must not take capacity away), so the canary is sized against it:
    ``c / (c + stable) = share``, i.e. ``c = stable * share / (1 - share)``, rounded half
    up. A share of 0.5 doubles the pods while it lasts.
    """
    return max(1, math.floor(stable * share / (1 - share) + 0.5))


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _serve_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = _containers(deployment)
    named = [c for c in containers if c.get("name") == _SERVE_CONTAINER]
    if named:
        return named[0]
    if len(containers) == 1:
        return containers[0]
    raise DatawheelError(
        f"deployment {deployment['metadata']['name']!r} has no container named "
        f"{_SERVE_CONTAINER!r}",
        "name the container that runs 'datawheel serve' 'serve' (as manifests/base does)",
    )


def model_arg(deployment: dict[str, Any]) -> tuple[int, str]:
    """(index, value) of the serve container's ``--model`` argument."""
    args: list[str] = _serve_container(deployment).get("args") or []
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            return i + 1, args[i + 1]
        if arg.startswith("--model="):
            return i, arg[len("--model=") :]
    raise DatawheelError(
        f"deployment {deployment['metadata']['name']!r} runs no 'serve --model ...' in its "
        f"{_SERVE_CONTAINER!r} container's args",
        "deploy the serving manifests from manifests/base, whose args name the model",
    )


def check_follows_champion(deployment: dict[str, Any], model: str) -> None:
    """Promotion moves the ``champion`` alias; only a stable that follows it picks that up."""
    _, value = model_arg(deployment)
    name, ref = parse_ref(value)
    if ref != "champion" or (not name.startswith("$(") and name != model):
        raise DatawheelError(
            f"deployment {deployment['metadata']['name']!r} serves {value!r}, not {model}@champion",
            "a canary is promoted by moving the champion alias; point the stable Deployment's "
            "--model at NAME@champion",
        )


def canary_deployment(
    stable: dict[str, Any], name: str, model_ref: str, replicas: int
) -> dict[str, Any]:
    """A new Deployment ``name``: ``stable``'s pod template on the canary track, serving
    ``model_ref`` (``NAME:vN``, pinned: it does not follow an alias)."""
    meta = stable["metadata"]
    spec = copy.deepcopy(stable["spec"])
    spec["replicas"] = replicas
    spec.pop("paused", None)
    match = dict(spec.get("selector", {}).get("matchLabels") or {})
    spec["selector"] = {"matchLabels": {**match, TRACK_LABEL: "canary"}}
    template_meta = spec["template"].setdefault("metadata", {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), TRACK_LABEL: "canary"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": {**(meta.get("labels") or {}), TRACK_LABEL: "canary"},
            "annotations": {CANARY_OF_ANNOTATION: f"{meta['name']} {model_ref}"},
        },
        "spec": spec,
    }
    index, _ = model_arg(body)
    args: list[str] = _serve_container(body)["args"]
    args[index] = f"--model={model_ref}" if args[index].startswith("--model=") else model_ref
    return body
