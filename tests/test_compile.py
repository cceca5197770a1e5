"""The checked-in compiled pipeline is current, loads, and has the expected shape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from datawheel.orchestration.compiler import COMPILED_DIR, compile_pipeline, stale

TRAINING = COMPILED_DIR / "training.yaml"
FLYWHEEL = COMPILED_DIR / "flywheel.yaml"
ROOT = Path(__file__).resolve().parent.parent
# the container steps of each pipeline (keys of cluster.STEP_RESOURCES)
STEPS = {
    "training": {
        "ingest",
        "validate",
        "prep",
        "lr-grid",
        "train",
        "pick-best",
        "compress",
        "evaluate",
        "register",
    },
    "flywheel": {
        "harvest",
        "validate",
        "drift-report",
        "prep",
        "train",
        "compress",
        "evaluate",
        "decision-alias",
        "register",
        "unchanged",
    },
}
PIPELINE_NAMES = sorted(STEPS)


def test_checked_in_yaml_is_not_stale() -> None:
    for path in (TRAINING, FLYWHEEL):
        assert path.exists(), f"{path.name}: run `make compile` and commit pipelines/compiled/"
    assert stale() == [], "pipelines/compiled/ is stale: run `make compile` and commit it"


def test_stale_detects_a_changed_file(tmp_path: Path) -> None:
    compile_pipeline("training", tmp_path)
    compile_pipeline("flywheel", tmp_path)
    assert stale(tmp_path) == []
    path = tmp_path / "training.yaml"
    path.write_text(path.read_text().replace("datawheel-training", "edited"))
    assert stale(tmp_path) == ["training"]


def test_compiled_yaml_loads_as_a_component() -> None:
    from kfp.components import load_component_from_file

    component = load_component_from_file(str(TRAINING))
    assert component.name == "datawheel-training"
    inputs = component.component_spec.inputs
    for name in (
        "source",
        "store",
        "epochs",
        "batch_size",
        "learning_rate",
        "model_kind",
        "seed",
        "sweep_learning_rates",
        "compress",
        "distill_temperature",
        "distill_alpha",
        "accuracy_tolerance",
        "latency_budget_ms",
    ):
        assert name in inputs, name


def _documents(name: str = "training") -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and its Kubernetes platform spec (the YAML's two documents)."""
    docs = list(yaml.safe_load_all((COMPILED_DIR / f"{name}.yaml").read_text()))
    assert len(docs) == 2, "the compiled YAML should carry a platform spec document"
    return docs[0], docs[1]


def _all_tasks(spec: dict[str, Any]) -> dict[str, Any]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_compiled_dag_branches_on_the_decision() -> None:
    spec, _ = _documents()
    root = spec["root"]["dag"]["tasks"]
    assert {
        "ingest",
        "validate",
        "prep",
        "lr-grid",
        "for-loop-1",
        "pick-best",
        "importer",
        "compress",
        "evaluate",
    } <= set(root)
    assert "validate" in root["prep"]["dependentTasks"]  # no prep on unvalidated data
    _assert_compressed_model_goes_on(_all_tasks(spec), "importer", "artifact")
    tasks = _all_tasks(spec)
    conditions = {
        name: t["triggerPolicy"]["condition"] for name, t in tasks.items() if "triggerPolicy" in t
    }
    promote = [c for c in conditions.values() if "'promote'" in c and not c.startswith("!")]
    reject = [c for c in conditions.values() if c.startswith("!") and "'promote'" in c]
    assert len(promote) == 1 and len(reject) == 1
    aliases = sorted(
        t["inputs"]["parameters"]["alias"]["runtimeValue"]["constant"]
        for t in tasks.values()
        if t.get("componentRef", {}).get("name", "").startswith("comp-register")
    )
    assert aliases == ["challenger", "champion"]
    # every executor runs a datawheel image, never the python:3.x default
    images = {
        e["container"]["image"]
        for e in spec["deploymentSpec"]["executors"].values()
        if "container" in e
    }
    assert images and all("datawheel" in image for image in images)


def _assert_compressed_model_goes_on(tasks: dict[str, Any], producer: str, output: str) -> None:
    """compress takes the trained model and the splits; evaluate and register take its folder
    (teacher and student), never the trained model directly."""
    given = tasks["compress"]["inputs"]
    model = given["artifacts"]["model"]["taskOutputArtifact"]
    assert (model["producerTask"], model["outputArtifactKey"]) == (producer, output)
    assert given["artifacts"]["splits"]["taskOutputArtifact"]["producerTask"] == "prep"
    params = {
        k: v["componentInputParameter"].removeprefix("pipelinechannel--")  # in a sub-DAG
        for k, v in given["parameters"].items()
    }
    assert params == {
        "mode": "compress",
        "temperature": "distill_temperature",
        "alpha": "distill_alpha",
        "seed": "seed",
    }
    consumers = [n for n in tasks if n.removesuffix("-2") in ("evaluate", "register")]
    assert consumers
    for name in consumers:
        source = tasks[name]["inputs"]["artifacts"]["model"]
        if "taskOutputArtifact" in source:
            produced = source["taskOutputArtifact"]
            assert (produced["producerTask"], produced["outputArtifactKey"]) == (
                "compress",
                "compressed",
            )
        else:  # inside a condition's sub-DAG: the parent's channel, named after its producer
            assert source["componentInputArtifact"] == "pipelinechannel--compress-compressed"


# --- the Kubernetes platform config (kfp-kubernetes), carried by the compiled YAML --------------


def _executors(name: str = "training") -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = _documents(name)
    return (
        spec["deploymentSpec"]["executors"],
        platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"],
    )


def _step_executor(step: str) -> str:
    return f"exec-{step}"


@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_every_step_has_cpu_and_memory_requests_and_limits(pipeline: str) -> None:
    from datawheel.orchestration.cluster import STEP_RESOURCES

    executors, _ = _executors(pipeline)
    containers = {name for name, e in executors.items() if "container" in e}
    # every container step is configured (importer is not a container)
    assert {_step_executor(s) for s in STEPS[pipeline]} == {
        n.removesuffix("-2") for n in containers
    }
    assert STEPS[pipeline] <= set(STEP_RESOURCES)
    for name in containers:
        step = name.removeprefix("exec-").removesuffix("-2")
        res = executors[name]["container"].get("resources", {})
        expected = STEP_RESOURCES[step]
        assert res.get("resourceCpuRequest") == expected.cpu_request, name
        assert res.get("resourceCpuLimit") == expected.cpu_limit, name
        assert res.get("resourceMemoryRequest") == expected.memory_request, name
        assert res.get("resourceMemoryLimit") == expected.memory_limit, name


@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_train_asks_for_a_gpu_on_a_gpu_node(pipeline: str) -> None:
    executors, k8s = _executors(pipeline)
    accelerator = executors["exec-train"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == "1"
    train = k8s["exec-train"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert train["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    for step in STEPS[pipeline] - {"train"}:  # only training needs a GPU
        name = _step_executor(step)
        assert "accelerator" not in executors[name]["container"].get("resources", {}), step
        assert "nodeSelector" not in k8s.get(name, {}), step


@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_store_credentials_come_from_a_secret_never_a_literal(pipeline: str) -> None:
    executors, k8s = _executors(pipeline)
    text = (COMPILED_DIR / f"{pipeline}.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" in text
    for name, executor in executors.items():
        if "container" not in executor:
            continue
        env = {e["name"]: e.get("value") for e in executor["container"].get("env", [])}
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), name
        secret = k8s[name]["secretAsEnv"]
        assert secret[0]["secretName"] == "datawheel-s3", name
        assert {k["envVar"] for k in secret[0]["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }, name
        config = k8s[name]["configMapAsEnv"][0]
        assert config["configMapName"] == "datawheel-settings", name


@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_checkpoints_go_to_the_store_so_parallel_trials_share_no_volume(pipeline: str) -> None:
    """A sweep's train pods run in parallel on several GPU nodes: a ReadWriteOnce PVC they all
    mounted would leave all but the first hanging on Multi-Attach. They mount none; the
    ConfigMap points them at the run's store (each trial under its own fingerprint)."""
    _, k8s = _executors(pipeline)
    train = k8s["exec-train"]
    assert "pvcMount" not in train
    keys = {k["envVar"]: k["configMapKey"] for k in train["configMapAsEnv"][0]["keyToEnv"]}
    assert keys["DATAWHEEL_CHECKPOINT_DIR"] == "DATAWHEEL_CHECKPOINT_DIR"
    config = yaml.safe_load((ROOT / "manifests/base/configmap.yaml").read_text())
    assert config["data"]["DATAWHEEL_CHECKPOINT_DIR"] == "store"


def test_a_named_checkpoint_volume_is_still_mounted(tmp_path: Path) -> None:
    from datawheel.pipelines.platform import on_cluster
    from kfp import dsl

    from datawheel.orchestration.cluster import CHECKPOINT_MOUNT, Platform

    platform = Platform.from_env({"DATAWHEEL_CHECKPOINT_PVC": "rwx-ckpt"})
    assert Platform.from_env({}).checkpoint_pvc == ""

    def step():  # type: ignore[no-untyped-def]  # kfp reads annotations; none here
        pass

    step = dsl.component(step)

    def p():  # type: ignore[no-untyped-def]
        on_cluster(step(), "train", platform)  # type: ignore[no-untyped-call]

    p = dsl.pipeline(p)

    from kfp.compiler import Compiler

    out = tmp_path / "pvc-pipeline.yaml"
    Compiler().compile(p, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    (executor,) = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert executor["pvcMount"][0]["mountPath"] == CHECKPOINT_MOUNT
    assert executor["pvcMount"][0]["constant"] == "rwx-ckpt"


@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_timeouts_on_every_step_and_retries_on_the_transient_ones(pipeline: str) -> None:
    from datawheel.orchestration.cluster import RETRIED_STEPS, STEP_RESOURCES

    spec, _ = _documents(pipeline)
    _, k8s = _executors(pipeline)
    for step in STEPS[pipeline]:
        res = STEP_RESOURCES[step]
        assert k8s[_step_executor(step)]["activeDeadlineSeconds"] == str(res.timeout_seconds)
    tasks = _all_tasks(spec)
    for step in STEPS[pipeline]:
        named = [t for n, t in tasks.items() if n.removesuffix("-2") == step]
        assert named, step
        for task in named:
            policy = task.get("retryPolicy")
            if step in RETRIED_STEPS:
                assert policy == {
                    "maxRetryCount": 3,
                    "backoffDuration": "30s",
                    "backoffFactor": 2.0,
                    "backoffMaxDuration": "600s",
                }, step
            else:
                assert policy is None, step


def test_flywheel_yaml_loads_and_its_dag_runs_in_order() -> None:
    """harvest first; everything else only when it created a version; validate before prep,
    drift and training; the evaluator's decision picks the alias; no new labels: unchanged."""
    from kfp.components import load_component_from_file

    component = load_component_from_file(str(FLYWHEEL))
    assert component.name == "datawheel-flywheel"
    for name in ("store", "model_name", "since", "until", "reason", "warm_start", "epochs"):
        assert name in component.component_spec.inputs, name
    spec, _ = _documents("flywheel")
    root = spec["root"]["dag"]["tasks"]
    assert "harvest" in root
    tasks = _all_tasks(spec)
    conditions = {
        n: t["triggerPolicy"]["condition"] for n, t in tasks.items() if "triggerPolicy" in t
    }
    created = [c for c in conditions.values() if "harvest-created" in c]
    assert len(created) == 2  # the new-labels branch and its else
    assert "validate" in tasks["prep"]["dependentTasks"]
    assert "validate" in tasks["drift-report"]["dependentTasks"]
    assert tasks["train"]["inputs"]["parameters"]["warm_start"]["componentInputParameter"]
    _assert_compressed_model_goes_on(tasks, "train", "model")
    alias = tasks["register"]["inputs"]["parameters"]["alias"]
    assert alias["taskOutputParameter"]["producerTask"] == "decision-alias"
    assert "unchanged" in tasks
    assert tasks["drift-report"]["inputs"]["parameters"]["required"]["runtimeValue"] == {
        "constant": False
    }


def test_platform_settings_from_the_environment() -> None:
    from datawheel.orchestration.cluster import Platform

    p = Platform.from_env(
        {
            "DATAWHEEL_GPU_NODE_SELECTOR": "cloud.google.com/gke-accelerator=nvidia-h100-80gb",
            "DATAWHEEL_GPU_TOLERATION": "gpu=h100:NoExecute",
            "DATAWHEEL_GPU_COUNT": "2",
            "DATAWHEEL_S3_SECRET": "team-s3",
        }
    )
    assert p.gpu.node_selector == ("cloud.google.com/gke-accelerator", "nvidia-h100-80gb")
    assert (p.gpu.toleration_key, p.gpu.toleration_value, p.gpu.toleration_effect) == (
        "gpu",
        "h100",
        "NoExecute",
    )
    assert p.gpu.count == 2 and p.s3_secret == "team-s3"
    assert Platform.from_env({}) == Platform()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DATAWHEEL_GPU_COUNT", "zero", "not a positive integer"),
        ("DATAWHEEL_GPU_COUNT", "0", "not a positive integer"),
        ("DATAWHEEL_GPU_NODE_SELECTOR", "gpu", "not key=value"),
        ("DATAWHEEL_GPU_TOLERATION", "gpu:Sometimes", "not key[=value]:Effect"),
    ],
)
def test_bad_platform_settings_say_how_to_fix(key: str, value: str, message: str) -> None:
    from datawheel.errors import DatawheelError
    from datawheel.orchestration.cluster import Platform

    with pytest.raises(DatawheelError, match=re.escape(message)) as info:
        Platform.from_env({key: value})
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize("name", ["training", "flywheel"])
def test_the_variant_choice_parameters_reach_evaluate(name: str) -> None:
    spec, _ = _documents(name)
    params = _all_tasks(spec)["evaluate"]["inputs"]["parameters"]
    for key in ("accuracy_tolerance", "latency_budget_ms"):
        assert params[key]["componentInputParameter"].endswith(key), params[
            key
        ]  # in a dsl.If: pipelinechannel--KEY
