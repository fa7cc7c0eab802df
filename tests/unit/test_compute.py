"""ComputeTemplate merge rules, field by field, and fit counting."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from kubeloop import compute
from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.api.computetemplate import ComputeTemplateSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.names import GPU_PRODUCT_LABEL

H100 = "NVIDIA-H100-80GB-HBM3"
GPU8 = ComputeTemplateSpec.model_validate({
    "cpu": "32", "memory": "256Gi", "gpu": {"count": 8, "type": H100},
    "nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    "priorityClassName": "training", "queueName": "gpu-queue",
    "maxRunSeconds": 3600, "maxWorkers": 4,
})  # fmt: skip
OPEN = ComputeTemplateSpec.model_validate({})


def tj(**spec: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"image": "t:1", **spec})


def md(**spec: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m/1"}, **spec})


def test_a_training_job_gets_everything_the_template_sets() -> None:
    out, errors = compute.for_training(tj(compute="gpu-8"), "gpu-8", GPU8)
    assert errors == []
    assert out.resources and (out.resources.cpu, out.resources.memory) == ("32", "256Gi")
    assert out.gpu and (out.gpu.count, out.gpu.type) == (8, H100)
    assert out.scheduling is not None
    assert out.scheduling.node_selector == {"pool": "gpu"}
    assert [t.key for t in out.scheduling.tolerations] == ["dedicated"]
    assert out.scheduling.priority_class_name == "training"
    assert out.scheduling.queue_name == "gpu-queue"
    assert out.active_deadline_seconds == 3600  # the limit is the deadline when unset


def test_an_open_template_changes_nothing() -> None:
    spec = tj(workers=3, resources={"cpu": "2"}, activeDeadlineSeconds=99)
    out, errors = compute.for_training(spec, "open", OPEN)
    assert errors == [] and out == spec
    serving = md(replicas=2)
    out_md, errors = compute.for_serving(serving, "open", OPEN)
    assert errors == [] and out_md == serving


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"resources": {"cpu": "64"}}, "spec.resources.cpu", "fixes it at 32"),
        ({"resources": {"memory": "1Ti"}}, "spec.resources.memory", "fixes it at 256Gi"),
        ({"gpu": {"count": 16}}, "spec.gpu.count", "fixes it at 8"),
        ({"gpu": {"count": 8, "type": "NVIDIA-A100"}}, "spec.gpu.type", H100),
        ({"scheduling": {"nodeSelector": {"pool": "cpu"}}},
         "spec.scheduling.nodeSelector[pool]", "fixes it at gpu"),
        ({"scheduling": {"priorityClassName": "urgent"}},
         "spec.scheduling.priorityClassName", "fixes it at training"),
        ({"scheduling": {"queueName": "other"}}, "spec.scheduling.queueName", "gpu-queue"),
        ({"workers": 5}, "spec.workers is 5", "maxWorkers 4"),
        ({"activeDeadlineSeconds": 7200}, "spec.activeDeadlineSeconds is 7200",
         "maxRunSeconds 3600"),
    ],
)
def test_each_override_of_a_fixed_field_is_named(
    spec: dict[str, Any], field: str, words: str
) -> None:
    _, errors = compute.for_training(tj(**spec), "gpu-8", GPU8)
    assert len(errors) == 1, errors
    assert field in errors[0] and words in errors[0] and "ComputeTemplate gpu-8" in errors[0]


@pytest.mark.parametrize(
    "spec",
    [
        {"resources": {"cpu": "32"}},  # the template's own value, repeated
        {"gpu": {"count": 8, "type": H100}},
        {"scheduling": {"nodeSelector": {"pool": "gpu", "zone": "a"}}},  # an extra key
        {"scheduling": {"tolerations": [{"key": "spot", "operator": "Exists"}]}},
        {"scheduling": {"schedulerName": "volcano"}},  # left open
        {"workers": 4},
        {"activeDeadlineSeconds": 60},
        {"resources": {"memory": "256Gi"}, "env": [{"name": "A", "value": "b"}]},
    ],
)
def test_what_the_template_leaves_open_may_be_set(spec: dict[str, Any]) -> None:
    out, errors = compute.for_training(tj(**spec), "gpu-8", GPU8)
    assert errors == []
    assert out.scheduling is not None
    assert out.scheduling.node_selector["pool"] == "gpu"
    names = [t.key for t in out.scheduling.tolerations]
    assert names[0] == "dedicated"  # the template's come first, the user's after
    if "tolerations" in spec.get("scheduling", {}):
        assert names == ["dedicated", "spot"]
    if spec.get("activeDeadlineSeconds"):
        assert out.active_deadline_seconds == spec["activeDeadlineSeconds"]
    # What the template leaves open survives the merge as the user wrote it.
    if "schedulerName" in spec.get("scheduling", {}):
        assert out.scheduling.scheduler_name == "volcano"
    if "env" in spec:
        assert [e.name for e in out.env] == ["A"]
    if "workers" in spec:
        assert out.workers == spec["workers"]


def test_a_model_deployment_gets_resources_gpus_and_placement_only() -> None:
    out, errors = compute.for_serving(md(replicas=3), "gpu-8", GPU8)
    assert errors == []
    assert out.resources and out.resources.cpu == "32"
    assert out.gpu and out.gpu.count == 8
    assert out.scheduling and out.scheduling.priority_class_name == "training"
    assert out.replicas == 3
    _, errors = compute.for_serving(md(gpu={"count": 1}), "gpu-8", GPU8)
    assert errors and "spec.gpu.count" in errors[0]


def template(name: str, default: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"default": default}}


def test_a_template_without_a_gpu_type_says_so() -> None:
    untyped = ComputeTemplateSpec.model_validate({"gpu": {"count": 1}})
    _, errors = compute.for_training(tj(gpu={"count": 1, "type": H100}), "any", untyped)
    assert errors == [f"spec.gpu.type is {H100}, but ComputeTemplate any leaves spec.gpu.type "
                      "unset"]


def test_choose_the_named_then_the_one_default() -> None:
    one = {"a": template("a"), "b": template("b", default=True)}
    assert compute.choose("a", one) == ("a", one["a"])
    assert compute.choose("missing", one) == ("missing", None)
    assert compute.choose(None, one) == ("b", one["b"])
    two = {**one, "c": template("c", default=True)}
    assert compute.choose(None, two) == (None, None)  # two defaults: none is used
    assert compute.choose(None, {}) == (None, None)


def node(name: str, labels: dict[str, str], allocatable: dict[str, str],
         taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints or []},
            "status": {"allocatable": allocatable}}


NODES = [
    node("gpu-1", {"pool": "gpu", GPU_PRODUCT_LABEL: H100},
         {"cpu": "96", "memory": "1000Gi", "pods": "110", "nvidia.com/gpu": "8"},
         [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
          {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]),
    node("gpu-2", {"pool": "gpu", GPU_PRODUCT_LABEL: H100},
         {"cpu": "96", "memory": "1000Gi", "pods": "110", "nvidia.com/gpu": "8"},
         [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]),
    node("cpu-1", {"pool": "cpu"}, {"cpu": "16", "memory": "64Gi", "pods": "110"}),
    # Tainted for something the templates do not tolerate.
    node("gpu-3", {"pool": "gpu", GPU_PRODUCT_LABEL: H100},
         {"cpu": "96", "memory": "1000Gi", "pods": "110", "nvidia.com/gpu": "8"},
         [{"key": "maintenance", "value": "yes", "effect": "NoSchedule"}]),
]


def test_fits_count_whole_pods_on_eligible_nodes() -> None:
    gpu1 = ComputeTemplateSpec.model_validate(
        {"cpu": "8", "memory": "64Gi", "gpu": {"count": 1, "type": H100}})
    # gpu-1's `dedicated` taint and gpu-3's `maintenance` keep it to gpu-2's 8 GPUs.
    assert compute.count_fit(gpu1, NODES, {}) == compute.Fit(now=8, max=8)
    # gpu-1 is tainted `dedicated`: a template that tolerates it gets both nodes.
    assert compute.count_fit(GPU8, NODES, {}) == compute.Fit(now=2, max=2)
    untolerating = GPU8.model_copy(update={"tolerations": []})
    assert compute.count_fit(untolerating, NODES, {}) == compute.Fit(now=1, max=1)
    small = ComputeTemplateSpec.model_validate({"cpu": "2", "memory": "4Gi"})
    # CPU pods: only the untainted CPU node takes them; 16 cores / 2 = 8.
    assert compute.count_fit(small, NODES, {}) == compute.Fit(now=8, max=8)


def test_fits_now_subtract_what_the_pods_on_a_node_request() -> None:
    running = [
        {"spec": {"nodeName": "gpu-2", "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "8"}, "requests": {"cpu": "32"}}}]},
         "status": {"phase": "Running"}},
        {"spec": {"nodeName": "gpu-1", "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "3"}}}],
                  "initContainers": [{"resources": {"requests": {"cpu": "90"}}}]},
         "status": {"phase": "Running"}},
        # Ended pods hold nothing.
        {"spec": {"nodeName": "gpu-1", "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
         "status": {"phase": "Succeeded"}},
    ]
    used = compute.requested_per_node(running)
    assert used["gpu-2"]["nvidia.com/gpu"] == Decimal(8) and used["gpu-2"]["pods"] == 1
    assert used["gpu-1"]["cpu"] == Decimal(90)  # the init container's request counts
    gpu1 = ComputeTemplateSpec.model_validate(
        {"cpu": "2", "gpu": {"count": 1, "type": H100},
         "tolerations": [{"key": "dedicated", "operator": "Exists"}]})
    # gpu-1: 5 GPUs free but only 6 cores: 3 pods; gpu-2: no GPU free.
    assert compute.count_fit(gpu1, NODES, used) == compute.Fit(now=3, max=16)


def test_a_template_with_no_requests_counts_pod_slots() -> None:
    assert compute.count_fit(OPEN, NODES[2:3], {}) == compute.Fit(now=110, max=110)


def bp(**spec: Any) -> BatchPredictionSpec:
    return BatchPredictionSpec.model_validate({
        "model": {"uri": "s3://m/1"}, "input": {"uri": "pvc://d/in"},
        "output": {"uri": "pvc://d/out"}, **spec,
    })  # fmt: skip


CPU4 = ComputeTemplateSpec.model_validate({
    "cpu": "4", "memory": "8Gi", "nodeSelector": {"pool": "batch"},
    "priorityClassName": "batch", "queueName": "batch-queue",
    "maxRunSeconds": 7200, "maxWorkers": 8,
})  # fmt: skip


def test_a_batch_prediction_takes_a_template_as_a_training_job_does() -> None:
    out, errors = compute.for_batch(bp(compute="cpu-4", parallelism=8), "cpu-4", CPU4)
    assert errors == []
    assert out.resources and (out.resources.cpu, out.resources.memory) == ("4", "8Gi")
    assert out.scheduling is not None and out.scheduling.node_selector == {"pool": "batch"}
    assert out.scheduling.priority_class_name == "batch"
    assert out.scheduling.queue_name == "batch-queue"
    assert out.active_deadline_seconds == 7200


def test_a_batch_prediction_may_not_exceed_its_template() -> None:
    _, errors = compute.for_batch(
        bp(parallelism=9, activeDeadlineSeconds=9999, resources={"cpu": "16"}), "cpu-4", CPU4
    )
    assert errors == [
        "spec.resources.cpu is 16, but ComputeTemplate cpu-4 fixes it at 4",
        "spec.parallelism is 9, more than ComputeTemplate cpu-4 allows (maxWorkers 8)",
        "spec.activeDeadlineSeconds is 9999, longer than ComputeTemplate cpu-4 allows "
        "(maxRunSeconds 7200)",
    ]
    _, errors = compute.for_batch(bp(), "gpu-8", GPU8)
    assert "ComputeTemplate gpu-8 gives GPUs; batch prediction pods use none" in errors
