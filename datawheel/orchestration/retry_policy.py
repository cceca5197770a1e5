"""A pipeline for a local run: the same graph without the pod-level retries.

A pod-level retry (:data:`datawheel.orchestration.cluster.RETRIED_STEPS`) is for what a
cluster does to a pod: a preempted GPU node, a lost node, an evicted pod. kfp.local honours
the same policy, but on this machine nothing preempts a step, so a failed step fails again
the same way after the backoff: a register that filled the disk took 30 + 60 + 120 s of
retries to print its one line. :func:`without_retries` gives the local runner a copy of the
pipeline with every task's retry policy cleared, so the error comes at once; the pipeline
object itself (what the compiler and ``datawheel submit`` use) keeps its retries.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

__all__ = ["retried_tasks", "without_retries"]

_P = TypeVar("_P")


def _graph(pipeline: Any) -> Any:
    """The PipelineSpec proto a kfp pipeline (GraphComponent) runs, or None."""
    implementation = getattr(getattr(pipeline, "component_spec", None), "implementation", None)
    return getattr(implementation, "graph", None)


def _dags(graph: Any) -> list[Any]:
    dags = [graph.root.dag]
    dags += [c.dag for c in graph.components.values() if c.WhichOneof("implementation") == "dag"]
    return dags


def retried_tasks(pipeline: Any) -> list[str]:
    """The names of the tasks (in every sub-DAG) that have a retry policy, sorted."""
    graph = _graph(pipeline)
    if graph is None:
        return []
    names = {name for dag in _dags(graph) for name, task in dag.tasks.items()
             if task.HasField("retry_policy")}  # fmt: skip
    return sorted(names)


def without_retries(pipeline: _P) -> _P:
    """A copy of ``pipeline`` whose tasks are never retried; ``pipeline`` is left as it is.
    Anything that is not a kfp pipeline (a plain function in a test) comes back unchanged."""
    graph = _graph(pipeline)
    if graph is None:
        return pipeline
    clone = copy.copy(pipeline)
    spec = copy.deepcopy(pipeline.component_spec)  # type: ignore[attr-defined]
    for dag in _dags(spec.implementation.graph):
        for task in dag.tasks.values():
            task.ClearField("retry_policy")
    clone.component_spec = spec  # type: ignore[attr-defined]
    return clone
