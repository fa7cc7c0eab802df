"""The TrainingJob renderer, field by field."""

from __future__ import annotations

from typing import Any

from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.render.trainingjob import render_job, render_service

OWNER = {"apiVersion": "kubeloop.io/v1alpha1", "kind": "TrainingJob", "name": "t",
         "uid": "u-1", "controller": True, "blockOwnerDeletion": True}


def job(**spec: Any) -> dict[str, Any]:
    return render_job(TrainingJobSpec.model_validate({"image": "img:1", **spec}), "t", "ns",
                      0, OWNER)


def container(rendered: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = rendered["spec"]["template"]["spec"]["containers"][0]
    return result


def env(rendered: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(rendered)["env"]}


def test_indexed_job_with_one_pod_per_worker() -> None:
    rendered = job(workers=4)
    spec = rendered["spec"]
    assert rendered["metadata"]["name"] == "t-r0"
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["template"]["spec"]["subdomain"] == "t-workers"
    assert rendered["metadata"]["ownerReferences"] == [OWNER]
    assert rendered["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kubeloop", "kubeloop.io/training-job": "t",
        "kubeloop.io/attempt": "0"}


def test_attempt_number_names_the_job_and_the_master() -> None:
    rendered = render_job(TrainingJobSpec(image="i", workers=2), "t", "ns", 3, OWNER)
    assert rendered["metadata"]["name"] == "t-r3"
    assert env(rendered)["MASTER_ADDR"] == "t-r3-0.t-workers.ns.svc"


def test_single_worker_is_its_own_master_without_a_service() -> None:
    rendered = job()
    assert env(rendered)["MASTER_ADDR"] == env(rendered)["PET_MASTER_ADDR"] == "t-r0-0"
    assert "subdomain" not in rendered["spec"]["template"]["spec"]
    assert job(workers=2)["spec"]["template"]["spec"]["subdomain"] == "t-workers"


def test_rendezvous_environment_for_torchrun() -> None:
    values = env(job(workers=2, gpu={"count": 8}, masterPort=23456))
    index = {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert values["MASTER_ADDR"] == "t-r0-0.t-workers.ns.svc"
    assert values["MASTER_PORT"] == "23456"
    assert values["WORLD_SIZE"] == "2"
    assert values["RANK"] == values["NODE_RANK"] == values["PET_NODE_RANK"] == index
    assert values["NPROC_PER_NODE"] == values["PET_NPROC_PER_NODE"] == "8"
    assert values["PET_NNODES"] == "2"
    assert values["PET_MASTER_ADDR"] == values["MASTER_ADDR"]
    assert values["PET_MASTER_PORT"] == "23456"


def test_cpu_job_runs_one_process_per_node() -> None:
    assert env(job())["NPROC_PER_NODE"] == "1"


def test_gpu_limit_toleration_and_product_selector() -> None:
    rendered = job(gpu={"count": 4, "type": "NVIDIA-H100-80GB-HBM3"})
    pod = rendered["spec"]["template"]["spec"]
    assert container(rendered)["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_custom_gpu_resource_name() -> None:
    rendered = job(gpu={"count": 1, "resourceName": "amd.com/gpu"})
    assert container(rendered)["resources"]["limits"] == {"amd.com/gpu": "1"}
    assert rendered["spec"]["template"]["spec"]["tolerations"][0]["key"] == "amd.com/gpu"


def test_no_gpu_means_no_toleration_or_selector() -> None:
    pod = job(gpu={"count": 0})["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod


def test_cpu_and_memory_resources() -> None:
    res = container(job(resources={"cpu": "2", "memory": "4Gi"}))["resources"]
    assert res == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}


def test_hyperparameters_as_env_and_args() -> None:
    rendered = job(args=["--epochs=3"], hyperparameters={"learning-rate": "0.01", "batch": "64"})
    values = env(rendered)
    assert values["HP_LEARNING_RATE"] == "0.01" and values["HP_BATCH"] == "64"
    assert container(rendered)["args"] == ["--epochs=3", "--batch=64", "--learning-rate=0.01"]
    no_args = job(hyperparameters={"a": "1"}, passHyperparametersAsArgs=False)
    assert "args" not in container(no_args)


def test_dataset_output_and_user_env_last() -> None:
    rendered = job(dataset={"uri": "s3://d"}, output={"uri": "s3://m"},
                   env=[{"name": "MASTER_PORT", "value": "1"}])
    names = [e["name"] for e in container(rendered)["env"]]
    values = env(rendered)
    assert values["KUBELOOP_DATASET_URI"] == "s3://d"
    assert values["KUBELOOP_OUTPUT_URI"] == "s3://m"
    assert names[-1] == "MASTER_PORT"  # the user's value comes last and wins


def test_kueue_queue_creates_suspended_labelled_job() -> None:
    rendered = job(scheduling={"queueName": "team-a"})
    assert rendered["spec"]["suspend"] is True
    assert rendered["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job()["spec"]["suspend"] is False
    assert job(suspend=True)["spec"]["suspend"] is True


def test_scheduling_pass_throughs() -> None:
    rendered = job(gpu={"count": 1}, scheduling={
        "priorityClassName": "high", "schedulerName": "volcano",
        "nodeSelector": {"pool": "a"},
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]})
    pod = rendered["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "high" and pod["schedulerName"] == "volcano"
    assert pod["nodeSelector"] == {"pool": "a"}
    assert {"key": "spot", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert len(pod["tolerations"]) == 2


def test_deadline_and_ttl() -> None:
    spec = job(activeDeadlineSeconds=60, ttlSecondsAfterFinished=30)["spec"]
    assert spec["activeDeadlineSeconds"] == 60 and spec["ttlSecondsAfterFinished"] == 30
    assert "activeDeadlineSeconds" not in job()["spec"]


def test_safe_pod_defaults_and_opt_out() -> None:
    rendered = job()
    pod = rendered["spec"]["template"]["spec"]
    sc = container(rendered)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    root = job(runAsRoot=True, serviceAccountName="trainer")
    assert "runAsNonRoot" not in container(root)["securityContext"]
    assert root["spec"]["template"]["spec"]["serviceAccountName"] == "trainer"
    assert "automountServiceAccountToken" not in root["spec"]["template"]["spec"]


def test_volumes_and_pod_metadata_pass_through() -> None:
    rendered = job(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
                   volumeMounts=[{"name": "data", "mountPath": "/data"}],
                   podMetadata={"labels": {"team": "a"}, "annotations": {"x": "y"}})
    meta = rendered["spec"]["template"]["metadata"]
    assert rendered["spec"]["template"]["spec"]["volumes"][0]["name"] == "data"
    assert container(rendered)["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert meta["labels"]["team"] == "a" and meta["annotations"] == {"x": "y"}


def test_spec_hash_changes_with_the_template_only() -> None:
    a = job()["metadata"]["annotations"]["kubeloop.io/spec-hash"]
    assert a == job()["metadata"]["annotations"]["kubeloop.io/spec-hash"]
    assert a != job(image="img:2")["metadata"]["annotations"]["kubeloop.io/spec-hash"]


def test_a_worker_that_fails_silently_leaves_the_end_of_its_log() -> None:
    assert container(job())["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_policy_alone_does_not_replace_a_running_attempt() -> None:
    """A Job rendered before the policy existed keeps its spec hash: an operator upgrade
    must not restart the attempts that are running."""
    from kubeloop.render.common import spec_hash

    rendered = job()
    template = rendered["spec"]["template"]
    del template["spec"]["containers"][0]["terminationMessagePolicy"]
    assert rendered["metadata"]["annotations"]["kubeloop.io/spec-hash"] == spec_hash(template)


def test_headless_service() -> None:
    svc = render_service(TrainingJobSpec(image="i", masterPort=1234), "t", "ns", OWNER)
    assert svc["metadata"]["name"] == "t-workers"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"kubeloop.io/training-job": "t"}
    assert svc["spec"]["ports"] == [{"name": "rendezvous", "port": 1234}]
