"""TrainingJob end to end on the local control plane, operator in-process."""

from __future__ import annotations

import time
from typing import Any

from tests.kubetest import HOLD, Cluster, InProcessOperator, stays, wait_for

TJ = "TrainingJob"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def spec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"image": "registry.local/train:1", "command": ["python", "train.py"]}
    annotations = extra.pop("annotations", None)
    if annotations:
        base["podMetadata"] = {"annotations": annotations}
    base.update(extra)
    return base


def jobs_of(cluster: Cluster, ns: str, name: str) -> list[Any]:
    return list(
        cluster.batch.list_namespaced_job(
            ns, label_selector=f"kubeloop.io/training-job={name}"
        ).items
    )


def pods_of(cluster: Cluster, ns: str, name: str) -> list[Any]:
    return list(
        cluster.core.list_namespaced_pod(
            ns, label_selector=f"kubeloop.io/training-job={name}"
        ).items
    )


def test_distributed_gpu_job_runs_on_both_gpu_nodes_and_succeeds(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(
        TJ,
        namespace,
        "ddp",
        spec(
            workers=2,
            gpu={"count": 8, "type": GPU_PRODUCT},
            output={"uri": "s3://models/ddp"},
            annotations={"kubeloop.io/fake-duration": "2s"},
        ),
    )
    running = cluster.wait_phase(TJ, namespace, "ddp", "Running", 20)
    assert running["jobName"] == "ddp-r0"
    pods = wait_for(
        lambda: [p for p in pods_of(cluster, namespace, "ddp") if p.spec.node_name] or None,
        10,
        "scheduled pods",
    )
    pods = pods_of(cluster, namespace, "ddp")
    assert sorted(p.spec.node_name for p in pods) == ["gpu-node-1", "gpu-node-2"]
    worker = pods[0].spec.containers[0]
    assert worker.resources.limits["nvidia.com/gpu"] == "8"
    env = {e.name: e for e in worker.env}
    assert env["MASTER_ADDR"].value == f"ddp-r0-0.ddp-workers.{namespace}.svc"
    assert env["PET_NNODES"].value == "2"
    svc = cluster.core.read_namespaced_service("ddp-workers", namespace)
    assert svc.spec.cluster_ip == "None"

    done = cluster.wait_phase(TJ, namespace, "ddp", "Succeeded", 30)
    assert done["modelUri"] == "s3://models/ddp"
    assert done["workers"]["succeeded"] == 2
    assert done["completionTime"] and done["startTime"]
    ready = cluster.condition(TJ, namespace, "ddp", "Ready")
    assert ready and ready["status"] == "True" and ready["observedGeneration"] == 1
    cluster.await_events(namespace, "ddp", {"Running", "Succeeded"}, kind=TJ)
    # No pod of a finished job holds a GPU.
    assert all(
        p.status.phase in ("Succeeded", "Failed") for p in pods_of(cluster, namespace, "ddp")
    )


def test_worker_that_can_never_fit_is_reported_unschedulable_at_once(
    cluster: Cluster, namespace: str
) -> None:
    started = time.monotonic()
    cluster.create(TJ, namespace, "huge", spec(gpu={"count": 16}))
    status = cluster.wait_phase(TJ, namespace, "huge", "Pending", 5)
    wait_for(
        lambda: (
            (cluster.condition(TJ, namespace, "huge", "Scheduled") or {}).get("reason")
            == "Unschedulable"
        ),
        5,
        "Unschedulable condition",
    )
    assert time.monotonic() - started < 5
    status = cluster.status(TJ, namespace, "huge")
    assert "needs 16 nvidia.com/gpu, the largest node has 8" in status["message"]
    stalled = cluster.condition(TJ, namespace, "huge", "Stalled")
    assert stalled and stalled["status"] == "True"
    # The Event's reason is the condition's, not the phase's (`Warning Unschedulable`).
    events = wait_for(
        lambda: [e for e in cluster.events_for(namespace, "huge") if e.involved_object.kind == TJ],
        10,
        "an Event",
    )
    assert [(e.type, e.reason) for e in events] == [("Warning", "Unschedulable")]


def test_unknown_gpu_type_is_unschedulable(cluster: Cluster, namespace: str) -> None:
    cluster.create(TJ, namespace, "a100", spec(gpu={"count": 1, "type": "NVIDIA-A100"}))
    wait_for(
        lambda: (
            "nvidia.com/gpu.product=NVIDIA-A100"
            in cluster.status(TJ, namespace, "a100").get("message", "")
        ),
        5,
        "message naming the missing GPU type",
    )


def test_scheduler_message_reaches_status_while_gpus_are_busy(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(
        TJ,
        namespace,
        "hog",
        spec(workers=2, gpu={"count": 8}, annotations={"kubeloop.io/fake-duration": "120s"}),
    )
    cluster.wait_phase(TJ, namespace, "hog", "Running", 20)
    cluster.create(TJ, namespace, "waiter", spec(gpu={"count": 4}))
    wait_for(
        lambda: (
            "Insufficient nvidia.com/gpu"
            in cluster.status(TJ, namespace, "waiter").get("message", "")
        ),
        15,
        "scheduler message in status",
    )
    scheduled = cluster.condition(TJ, namespace, "waiter", "Scheduled")
    assert scheduled and scheduled["reason"] == "WaitingForScheduler"
    nodes = len(cluster.core.list_node().items)
    assert f"0/{nodes} nodes are available" in scheduled["message"]
    cluster.delete(TJ, namespace, "hog")
    cluster.wait_phase(TJ, namespace, "waiter", "Succeeded", 60)


def test_failed_worker_restarts_the_gang_then_fails_after_max_restarts(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(
        TJ,
        namespace,
        "oom",
        spec(
            workers=2,
            maxRestarts=2,
            annotations={
                "kubeloop.io/fake-exit-code": "3",
                "kubeloop.io/fake-message": "CUDA out of memory",
            },
        ),
    )
    seen_restarting = wait_for(
        lambda: (
            cluster.status(TJ, namespace, "oom").get("phase") in ("Restarting", "Failed")
            and cluster.status(TJ, namespace, "oom")
        ),
        30,
        "a gang restart",
    )
    assert seen_restarting["restarts"] >= 1
    final = cluster.wait_phase(TJ, namespace, "oom", "Failed", 60)
    assert final["restarts"] == 2
    assert "exit code 3" in final["message"] and "CUDA out of memory" in final["message"]
    assert "maxRestarts=2" in final["message"]
    assert (cluster.condition(TJ, namespace, "oom", "Ready") or {})["reason"] == (
        "BackoffLimitExceeded"
    )
    # One Job per attempt: the earlier attempts' Jobs are gone, only the last remains.
    names = [
        j.metadata.name
        for j in jobs_of(cluster, namespace, "oom")
        if not j.metadata.deletion_timestamp
    ]
    assert names == ["oom-r2"]
    reasons = cluster.await_events(namespace, "oom", {"BackoffLimitExceeded"}, kind=TJ)
    # Each Event names the condition's reason: why it failed, not only that it did.
    assert reasons.count("Restarting") == 2 and "BackoffLimitExceeded" in reasons


def test_active_deadline_fails_the_run_and_frees_the_gpus(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        TJ,
        namespace,
        "slow",
        spec(
            gpu={"count": 1},
            activeDeadlineSeconds=3,
            annotations={"kubeloop.io/fake-duration": "300s"},
        ),
    )
    cluster.wait_phase(TJ, namespace, "slow", "Running", 20)
    final = cluster.wait_phase(TJ, namespace, "slow", "Failed", 30)
    assert (cluster.condition(TJ, namespace, "slow", "Ready") or {})["reason"] == (
        "DeadlineExceeded"
    )
    assert "activeDeadlineSeconds=3" in final["message"] or "deadline" in final["message"]
    wait_for(
        lambda: (
            all(
                p.status.phase in ("Succeeded", "Failed") or p.metadata.deletion_timestamp
                for p in pods_of(cluster, namespace, "slow")
            )
            or not pods_of(cluster, namespace, "slow")
        ),
        30,
        "no running pod left",
    )


def test_ttl_removes_job_and_pods_but_keeps_status(cluster: Cluster, namespace: str) -> None:
    cluster.create(TJ, namespace, "ttl", spec(ttlSecondsAfterFinished=0))
    cluster.wait_phase(TJ, namespace, "ttl", "Succeeded", 30)
    wait_for(lambda: not jobs_of(cluster, namespace, "ttl"), 30, "the Job removed by its TTL")
    wait_for(lambda: not pods_of(cluster, namespace, "ttl"), 30, "pods removed")
    status = cluster.status(TJ, namespace, "ttl")
    assert status["phase"] == "Succeeded" and status["workers"]["succeeded"] == 1
    # And the operator does not start the run again.
    stays(lambda: not jobs_of(cluster, namespace, "ttl"), 3, "no Job re-created")


def test_suspend_frees_the_pods_and_resume_finishes(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        TJ,
        namespace,
        "pause",
        # Runs until released: the suspend lands while it runs, however fast the machine.
        spec(gpu={"count": 2}, annotations=HOLD),
    )
    cluster.wait_phase(TJ, namespace, "pause", "Running", 20)
    cluster.patch_spec(TJ, namespace, "pause", {"suspend": True})
    cluster.wait_phase(TJ, namespace, "pause", "Suspended", 20)
    wait_for(lambda: jobs_of(cluster, namespace, "pause")[0].spec.suspend, 10, "Job suspended")
    wait_for(
        lambda: (
            not [
                p for p in pods_of(cluster, namespace, "pause") if not p.metadata.deletion_timestamp
            ]
        ),
        30,
        "pods gone",
    )
    cluster.patch_spec(TJ, namespace, "pause", {"suspend": False})
    cluster.wait_phase(TJ, namespace, "pause", "Running", 20)
    cluster.release(namespace, "pause")
    cluster.wait_phase(TJ, namespace, "pause", "Succeeded", 30)
    assert len(jobs_of(cluster, namespace, "pause")) == 1


def test_deleting_the_training_job_removes_everything_it_owns(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(TJ, namespace, "gone", spec(annotations={"kubeloop.io/fake-duration": "120s"}))
    cluster.wait_phase(TJ, namespace, "gone", "Running", 20)
    cluster.delete(TJ, namespace, "gone")
    wait_for(lambda: not jobs_of(cluster, namespace, "gone"), 30, "Job garbage-collected")
    wait_for(
        lambda: (
            not cluster.core.list_namespaced_service(
                namespace, label_selector="kubeloop.io/training-job=gone"
            ).items
        ),
        30,
        "Service gone",
    )
    wait_for(lambda: not pods_of(cluster, namespace, "gone"), 30, "pods gone")


def test_operator_restart_mid_run_creates_no_duplicate_and_loses_no_status(
    cluster: Cluster, namespace: str, operator: InProcessOperator
) -> None:
    cluster.create(
        TJ, namespace, "steady", spec(workers=2, annotations={"kubeloop.io/fake-duration": "6s"})
    )
    before = cluster.wait_phase(TJ, namespace, "steady", "Running", 20)
    operator.stop()
    try:
        assert cluster.status(TJ, namespace, "steady")["startTime"] == before["startTime"]
    finally:
        operator.start()
    done = cluster.wait_phase(TJ, namespace, "steady", "Succeeded", 40)
    assert [j.metadata.name for j in jobs_of(cluster, namespace, "steady")] == ["steady-r0"]
    assert done["restarts"] == 0 and done["startTime"] == before["startTime"]


def test_spec_change_while_running_ends_with_the_last_spec(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(TJ, namespace, "edit", spec(annotations={"kubeloop.io/fake-duration": "60s"}))
    cluster.wait_phase(TJ, namespace, "edit", "Running", 20)
    cluster.patch_spec(
        TJ,
        namespace,
        "edit",
        {
            "image": "registry.local/train:2",
            "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
        },
    )
    done = cluster.wait_phase(TJ, namespace, "edit", "Succeeded", 40)
    assert done["observedGeneration"] == 2
    jobs = jobs_of(cluster, namespace, "edit")
    assert len(jobs) == 1
    assert jobs[0].spec.template.spec.containers[0].image == "registry.local/train:2"
