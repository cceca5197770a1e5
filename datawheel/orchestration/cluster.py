"""Where and how each pipeline step runs on Kubernetes: the compile-time platform settings.

kfp.local ignores all of this; the compiled YAML carries it (resources, GPU, toleration and
node selector, the S3 Secret, the checkpoint volume, retries and timeouts). Every value has a
default and can be set at compile time through the environment:

=================================  ========================================================
DATAWHEEL_GPU_RESOURCE             accelerator resource name (``nvidia.com/gpu``)
DATAWHEEL_GPU_COUNT                GPUs for the train step (1)
DATAWHEEL_GPU_NODE_SELECTOR        ``key=value`` the train pod's node must carry
DATAWHEEL_GPU_TOLERATION           ``key[=value]:Effect`` tolerated by the train pod
DATAWHEEL_S3_SECRET                Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
DATAWHEEL_SETTINGS_CONFIGMAP       ConfigMap with DATAWHEEL_S3_ENDPOINT
DATAWHEEL_CHECKPOINT_PVC           a PVC to mount at /mnt/checkpoints on the train step
                                   (none by default: checkpoints go to the store)
=================================  ========================================================

Checkpoints: the settings ConfigMap says ``DATAWHEEL_CHECKPOINT_DIR=store``, so each train
pod checkpoints into the run's own store (:mod:`datawheel.orchestration.checkpoint_store`):
the parallel trials of a sweep never share a ReadWriteOnce volume (a pod on a second GPU
node would hang on Multi-Attach), and a profile namespace needs no PVC. A PVC named by
``DATAWHEEL_CHECKPOINT_PVC`` must be ReadWriteMany for a sweep; then set
``DATAWHEEL_CHECKPOINT_DIR=/mnt/checkpoints`` in the ConfigMap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from datawheel.errors import DatawheelError

__all__ = [
    "CHECKPOINT_MOUNT",
    "RETRIED_STEPS",
    "STEP_RESOURCES",
    "GpuPlacement",
    "Platform",
    "StepResources",
]

CHECKPOINT_MOUNT = "/mnt/checkpoints"


class PlatformSettingError(DatawheelError):
    """A DATAWHEEL_* platform setting has the wrong form."""


@dataclass(frozen=True)
class StepResources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    timeout_seconds: int


# Sized for the digits-scale defaults; a cluster admin overrides them per step by editing here.
STEP_RESOURCES: dict[str, StepResources] = {
    "ingest": StepResources("500m", "2", "1Gi", "4Gi", 3600),
    "validate": StepResources("250m", "1", "512Mi", "2Gi", 1800),
    "prep": StepResources("500m", "2", "1Gi", "4Gi", 1800),
    "lr-grid": StepResources("100m", "250m", "128Mi", "256Mi", 300),
    "train": StepResources("2", "8", "8Gi", "32Gi", 6 * 3600),
    "pick-best": StepResources("100m", "250m", "128Mi", "256Mi", 300),
    # distils a student on the CPU when the model is large, else only copies the folder
    "compress": StepResources("1", "4", "2Gi", "8Gi", 2 * 3600),
    "evaluate": StepResources("1", "4", "2Gi", "8Gi", 3600),
    "register": StepResources("250m", "1", "512Mi", "2Gi", 900),
    "harvest": StepResources("500m", "2", "1Gi", "4Gi", 3600),
    "drift-report": StepResources("500m", "2", "1Gi", "4Gi", 1800),
    "decision-alias": StepResources("100m", "250m", "128Mi", "256Mi", 300),
    "unchanged": StepResources("100m", "250m", "128Mi", "256Mi", 300),
}

# A pod-level retry repeats the whole step, so only steps whose failures can pass are retried:
# train (a preempted or lost GPU node; it resumes from its checkpoint), evaluate and register
# (idempotent: a retried register finds its own claimed version, an alias move is a CAS).
# ingest, validate and prep are not: their failures are about the data (a missing source, a
# column that is not numeric, a split training cannot use) and a retry fails the same way
# minutes later. Their store calls already retry network blips inside the S3 client.
# lr-grid and pick-best are pure functions of their inputs. harvest is not retried either:
# its failures are about the model or the ledger (no such model, no dataset), and a rerun of
# the pipeline is safe, since its output is content-addressed.
RETRIED_STEPS = frozenset({"train", "evaluate", "register"})


@dataclass(frozen=True)
class GpuPlacement:
    resource: str = "nvidia.com/gpu"
    count: int = 1
    node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    toleration_key: str = "nvidia.com/gpu"
    toleration_value: str | None = None  # None: operator Exists
    toleration_effect: str = "NoSchedule"


@dataclass(frozen=True)
class Platform:
    gpu: GpuPlacement = field(default_factory=GpuPlacement)
    s3_secret: str = "datawheel-s3"
    settings_configmap: str = "datawheel-settings"
    checkpoint_pvc: str = ""  # none: checkpoints go to the store
    retries: int = 3
    retry_backoff: str = "30s"
    retry_backoff_factor: float = 2.0
    retry_backoff_max: str = "10m"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Platform:
        default = cls()
        gpu = default.gpu
        count_raw = environ.get("DATAWHEEL_GPU_COUNT", str(gpu.count)).strip()
        if not count_raw.isdigit() or int(count_raw) < 1:
            raise PlatformSettingError(
                f"DATAWHEEL_GPU_COUNT={count_raw!r} is not a positive integer",
                "set DATAWHEEL_GPU_COUNT to 1 or more",
            )
        selector = gpu.node_selector
        if raw := environ.get("DATAWHEEL_GPU_NODE_SELECTOR", "").strip():
            key, sep, value = raw.partition("=")
            if not sep or not key:
                raise PlatformSettingError(
                    f"DATAWHEEL_GPU_NODE_SELECTOR={raw!r} is not key=value",
                    "set it like nvidia.com/gpu.present=true",
                )
            selector = (key, value)
        tol_key, tol_value, tol_effect = (
            gpu.toleration_key,
            gpu.toleration_value,
            gpu.toleration_effect,
        )
        if raw := environ.get("DATAWHEEL_GPU_TOLERATION", "").strip():
            key_value, sep, effect = raw.rpartition(":")
            if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise PlatformSettingError(
                    f"DATAWHEEL_GPU_TOLERATION={raw!r} is not key[=value]:Effect",
                    "set it like nvidia.com/gpu:NoSchedule (Effect: NoSchedule, "
                    "PreferNoSchedule or NoExecute)",
                )
            tol_key, _, value = key_value.partition("=")
            tol_value, tol_effect = value or None, effect
        return cls(
            gpu=GpuPlacement(
                resource=environ.get("DATAWHEEL_GPU_RESOURCE", gpu.resource).strip()
                or gpu.resource,
                count=int(count_raw),
                node_selector=selector,
                toleration_key=tol_key,
                toleration_value=tol_value,
                toleration_effect=tol_effect,
            ),
            s3_secret=environ.get("DATAWHEEL_S3_SECRET", default.s3_secret).strip()
            or default.s3_secret,
            settings_configmap=environ.get(
                "DATAWHEEL_SETTINGS_CONFIGMAP", default.settings_configmap
            ).strip()
            or default.settings_configmap,
            checkpoint_pvc=environ.get("DATAWHEEL_CHECKPOINT_PVC", default.checkpoint_pvc).strip(),
        )
