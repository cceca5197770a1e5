"""Kubernetes platform config for the pipeline's tasks (kfp-kubernetes). kfp.local ignores it.

Pure DSL: the values come from datawheel.orchestration.cluster (settings with defaults).
"""

from kfp import kubernetes
from kfp.dsl import PipelineTask

from datawheel.orchestration.cluster import (
    CHECKPOINT_MOUNT,
    RETRIED_STEPS,
    STEP_RESOURCES,
    Platform,
)

PLATFORM = Platform.from_env()

# Read by datawheel.storage.settings.S3Settings inside the step's container.
_S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
_SETTINGS_KEYS = {"DATAWHEEL_S3_ENDPOINT": "DATAWHEEL_S3_ENDPOINT"}
# Platform-only (kfp.local would apply a plain container env var on this machine too):
# the settings ConfigMap says DATAWHEEL_CHECKPOINT_DIR=store (checkpoints in the run's store).
_TRAIN_SETTINGS_KEYS = {**_SETTINGS_KEYS, "DATAWHEEL_CHECKPOINT_DIR": "DATAWHEEL_CHECKPOINT_DIR"}


def on_cluster(task: PipelineTask, step: str, platform: Platform = PLATFORM) -> PipelineTask:
    """Resources, timeout, retries and store credentials for ``step``; GPU for train."""
    res = STEP_RESOURCES[step]
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    kubernetes.set_timeout(task, res.timeout_seconds)
    if step in RETRIED_STEPS:
        task.set_retry(
            num_retries=platform.retries,
            backoff_duration=platform.retry_backoff,
            backoff_factor=platform.retry_backoff_factor,
            backoff_max_duration=platform.retry_backoff_max,
        )
    kubernetes.use_secret_as_env(task, platform.s3_secret, _S3_KEYS)
    keys = _TRAIN_SETTINGS_KEYS if step == "train" else _SETTINGS_KEYS
    kubernetes.use_config_map_as_env(task, platform.settings_configmap, keys)
    if step == "train":
        gpu = platform.gpu
        task.set_accelerator_type(gpu.resource).set_accelerator_limit(gpu.count)
        kubernetes.add_node_selector(task, *gpu.node_selector)
        kubernetes.add_toleration(
            task,
            key=gpu.toleration_key,
            operator="Equal" if gpu.toleration_value is not None else "Exists",
            value=gpu.toleration_value,
            effect=gpu.toleration_effect,
        )
        # checkpoints survive the pod: a retried train step resumes from the last epoch. They
        # go to the store (DATAWHEEL_CHECKPOINT_DIR=store); a volume only when one is named.
        if platform.checkpoint_pvc:
            kubernetes.mount_pvc(task, platform.checkpoint_pvc, CHECKPOINT_MOUNT)
    return task
