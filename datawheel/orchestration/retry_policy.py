"""How often a failed step is run again: on a cluster, as the platform says; locally, never.

A pod-level retry (:data:`datawheel.orchestration.cluster.RETRIED_STEPS`) is for what a
cluster does to a pod: a preempted GPU node, a lost node, an evicted pod. kfp.local honours
the same policy, but on this machine nothing preempts a step, so a failed step fails again
the same way after the backoff: a register that filled the disk took 30 + 60 + 120 s of
retries to print its one line. A local run (``LocalRunner`` sets :data:`LOCAL_RUN_ENV`
while it builds and runs the pipeline) gets no retries, and its error comes at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["LOCAL_RUN_ENV", "step_retries"]

LOCAL_RUN_ENV = "DATAWHEEL_LOCAL_RUN"


def step_retries(platform_retries: int, environ: Mapping[str, str] = os.environ) -> int:
    """The retries a retried step gets: ``platform_retries``, or 0 in a local run."""
    return 0 if environ.get(LOCAL_RUN_ENV, "").strip() == "1" else platform_retries
