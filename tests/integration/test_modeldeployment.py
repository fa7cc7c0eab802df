"""ModelDeployment end to end on the local control plane, operator in-process."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from tests.kubetest import Cluster, or_none, wait_for

MD, TJ = "ModelDeployment", "TrainingJob"


def deployment(cluster: Cluster, ns: str, name: str) -> Any:
    """The Deployment, or None when the API server says it does not exist."""
    return or_none(cluster.apps.read_namespaced_deployment, name, ns)


def test_children_are_created_owned_and_ready(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        MD,
        namespace,
        "web",
        {
            "model": {"uri": "https://models.local/iris/v1"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 7, "targetCPUUtilization": 60},
        },
    )
    status = wait_for(
        lambda: (
            cluster.status(MD, namespace, "web").get("phase") == "Ready"
            and cluster.status(MD, namespace, "web")
        ),
        30,
        "Ready",
    )
    assert status["url"] == f"http://web.{namespace}.svc:8080"
    assert status["activeModelUri"] == "https://models.local/iris/v1"
    dep = cluster.apps.read_namespaced_deployment("web", namespace)
    owner = dep.metadata.owner_references[0]
    assert owner.kind == MD and owner.name == "web" and owner.controller
    strategy = dep.spec.strategy.rolling_update
    assert strategy.max_unavailable == 0
    pod = dep.spec.template.spec
    assert pod.init_containers[0].args == [
        "fetch-model",
        "https://models.local/iris/v1",
        "/mnt/models",
    ]
    assert pod.containers[0].readiness_probe.http_get.path == "/v2/health/ready"
    assert pod.containers[0].security_context.run_as_non_root is True
    hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler("web", namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 7)
    assert hpa.spec.metrics[0].resource.target.average_utilization == 60
    assert hpa.metadata.owner_references[0].name == "web"
    svc = cluster.core.read_namespaced_service("web", namespace)
    assert svc.spec.selector == {
        "app.kubernetes.io/managed-by": "kubeloop",
        "kubeloop.io/model-deployment": "web",
    }
    for ctype in ("Ready", "ModelResolved", "Available"):
        cond = cluster.condition(MD, namespace, "web", ctype)
        assert cond and cond["status"] == "True", cond


def test_from_training_job_waits_then_resolves(cluster: Cluster, namespace: str) -> None:
    cluster.create(MD, namespace, "served", {"model": {"fromTrainingJob": {"name": "trainer"}}})
    cond = wait_for(
        lambda: cluster.condition(MD, namespace, "served", "ModelResolved"), 15, "ModelResolved"
    )
    assert cond["status"] == "False" and cond["reason"] == "TrainingJobNotFound"
    assert deployment(cluster, namespace, "served") is None
    cluster.create(
        TJ,
        namespace,
        "trainer",
        {
            "image": "train:1",
            "output": {"uri": "s3://models/trainer"},
            "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "3s"}},
        },
    )
    wait_for(
        lambda: (
            (cluster.condition(MD, namespace, "served", "ModelResolved") or {}).get("reason")
            == "TrainingJobNotSucceeded"
        ),
        15,
        "waiting on the job",
    )
    assert deployment(cluster, namespace, "served") is None
    cluster.wait_phase(TJ, namespace, "trainer", "Succeeded", 30)
    status = cluster.wait_phase(MD, namespace, "served", "Ready", 30)
    assert status["activeModelUri"] == "s3://models/trainer"
    assert status["sourceTrainingJob"] == "trainer"
    dep = cluster.apps.read_namespaced_deployment("served", namespace)
    assert dep.spec.template.metadata.annotations["kubeloop.io/model-uri"] == (
        "s3://models/trainer"
    )


def test_canary_split_by_replica_ratio_and_promotion(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        MD,
        namespace,
        "split",
        {
            "model": {"uri": "s3://m/v1"},
            "replicas": 10,
            "canary": {"model": {"uri": "s3://m/v2"}, "trafficPercent": 10},
        },
    )
    wait_for(
        lambda: (
            (cluster.status(MD, namespace, "split").get("canary") or {}).get("state") == "Available"
        ),
        30,
        "canary available",
    )
    stable = cluster.apps.read_namespaced_deployment("split", namespace)
    canary = cluster.apps.read_namespaced_deployment("split-canary", namespace)
    assert (stable.spec.replicas, canary.spec.replicas) == (9, 1)
    assert canary.spec.template.metadata.annotations["kubeloop.io/model-uri"] == "s3://m/v2"
    # Promotion: the canary's model moves into `model` and the canary goes away.
    cluster.kubectl(
        "patch",
        "mdep",
        "split",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps(
            [
                {"op": "replace", "path": "/spec/model/uri", "value": "s3://m/v2"},
                {"op": "remove", "path": "/spec/canary"},
            ]
        ),
    )
    wait_for(
        lambda: deployment(cluster, namespace, "split-canary") is None,
        30,
        "canary Deployment removed",
    )
    # The canary goes before the status of the new generation is written: wait for it.
    status = wait_for(
        lambda: (s := cluster.status(MD, namespace, "split")).get("phase") == "Ready"
        and s.get("observedGeneration", 0) >= 2
        and s,
        30,
        "Ready at generation 2",
    )
    wait_for(
        lambda: cluster.status(MD, namespace, "split").get("activeModelUri") == "s3://m/v2",
        30,
        "stable rolled to v2",
    )
    stable = cluster.apps.read_namespaced_deployment("split", namespace)
    assert stable.spec.replicas == 10
    assert "canary" not in cluster.status(MD, namespace, "split")
    assert status["observedGeneration"] >= 2


def test_canary_share_is_what_the_replicas_give(cluster: Cluster, namespace: str) -> None:
    # 10% of 3 replicas: the nearest share with a pod on each side is 1 of 3.
    cluster.create(
        MD,
        namespace,
        "third",
        {
            "model": {"uri": "s3://m/v1"},
            "replicas": 3,
            "canary": {"model": {"uri": "s3://m/v2"}, "trafficPercent": 10},
        },
    )
    canary = wait_for(
        lambda: (
            (c := cluster.status(MD, namespace, "third").get("canary"))
            and c.get("state") == "Available"
            and c
        ),
        30,
        "canary available",
    )
    assert (canary["trafficPercent"], canary["actualTrafficPercent"]) == (10, 33)
    assert (
        cluster.apps.read_namespaced_deployment("third", namespace).spec.replicas,
        cluster.apps.read_namespaced_deployment("third-canary", namespace).spec.replicas,
    ) == (2, 1)
    cond = cluster.condition(MD, namespace, "third", "CanaryAvailable")
    assert cond and "serves 33% of traffic (1 of 3 ready pods)" in cond["message"]
    assert "10% requested" in cond["message"]

    # 100: every replica moves to the canary, and the resource is Ready, not stuck.
    cluster.patch_spec(MD, namespace, "third", {"canary": {"trafficPercent": 100}})
    status = wait_for(
        lambda: (
            (s := cluster.status(MD, namespace, "third")).get("phase") == "Ready"
            and (s.get("canary") or {}).get("actualTrafficPercent") == 100
            and s
        ),
        30,
        "all traffic on the canary, Ready",
    )
    assert cluster.apps.read_namespaced_deployment("third", namespace).spec.replicas == 0
    assert cluster.apps.read_namespaced_deployment("third-canary", namespace).spec.replicas == 3
    assert not [c for c in status["conditions"] if c["type"] in ("Reconciling", "Stalled")]

    # 0: the canary is kept at zero, the stable serves everything, Ready.
    cluster.patch_spec(MD, namespace, "third", {"canary": {"trafficPercent": 0}})
    status = wait_for(
        lambda: (
            (s := cluster.status(MD, namespace, "third")).get("phase") == "Ready"
            and (s.get("canary") or {}).get("state") == "Idle"
            and s
        ),
        30,
        "canary idle, Ready",
    )
    assert cluster.apps.read_namespaced_deployment("third", namespace).spec.replicas == 3
    assert cluster.apps.read_namespaced_deployment("third-canary", namespace).spec.replicas == 0
    cond = cluster.condition(MD, namespace, "third", "CanaryAvailable")
    assert cond and cond["reason"] == "NoTraffic" and "kept at zero" in cond["message"]
    # The local cluster itself warns about nothing (simulated pods' addresses are
    # valid endpoints): every Warning in the namespace would be a finding.
    warnings = [
        (e.reason, e.message)
        for e in cluster.core.list_namespaced_event(namespace).items
        if e.type == "Warning"
    ]
    assert not warnings


def test_failing_canary_is_rolled_back_and_stable_keeps_serving(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(
        MD,
        namespace,
        "risky",
        {
            "model": {"uri": "s3://m/v1"},
            "replicas": 4,
            # On the local cluster, kwok makes this model fail to load (hack/kwok-stages.yaml).
            "canary": {
                "model": {"uri": "s3://kwok/broken-model"},
                "trafficPercent": 25,
                "progressDeadlineSeconds": 10,
            },
        },
    )
    cond = wait_for(
        lambda: (
            (c := cluster.condition(MD, namespace, "risky", "CanaryAvailable"))
            and c["reason"] == "CanaryRolledBack"
            and c
        ),
        40,
        "canary rolled back",
    )
    assert "not available within 10s" in cond["message"]
    wait_for(
        lambda: (
            cluster.apps.read_namespaced_deployment("risky-canary", namespace).spec.replicas == 0
        ),
        20,
        "canary scaled to zero",
    )
    wait_for(
        lambda: cluster.apps.read_namespaced_deployment("risky", namespace).spec.replicas == 4,
        20,
        "stable back to all replicas",
    )
    status = cluster.wait_phase(MD, namespace, "risky", "Ready", 30)
    assert status["canary"]["state"] == "RolledBack"
    cluster.await_events(namespace, "risky", {"CanaryRolledBack"}, kind=MD)


def test_crash_looping_pods_keep_ready_false(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        MD, namespace, "crashy", {"model": {"uri": "s3://kwok/broken-model"}, "replicas": 1}
    )
    cond = wait_for(
        lambda: (
            (c := cluster.condition(MD, namespace, "crashy", "Available"))
            and c["reason"] == "PodsCrashing"
            and c
        ),
        40,
        "PodsCrashing",
    )
    assert "CrashLoopBackOff" in cond["message"] and "fetch-model" in cond["message"]
    assert "sha256 mismatch" in cond["message"]
    ready = cluster.condition(MD, namespace, "crashy", "Ready")
    assert ready and ready["status"] == "False"


def test_pods_that_cannot_be_placed_quote_the_scheduler(cluster: Cluster, namespace: str) -> None:
    """More CPU than any node has, and a claim that does not exist: the scheduler says
    which, and so does the ModelDeployment, instead of "0 replicas available"."""
    cluster.create(
        MD,
        namespace,
        "huge",
        {"model": {"uri": "s3://m/v1"}, "resources": {"cpu": "900"}},
    )
    cluster.create(MD, namespace, "unclaimed", {"model": {"uri": "pvc://nosuchclaim/iris/v1"}})
    nodes = len(cluster.core.list_node().items)

    def waiting(name: str) -> dict[str, Any] | None:
        cond = cluster.condition(MD, namespace, name, "Available")
        return cond if cond and cond["reason"] == "WaitingForScheduler" else None

    for name, words in (
        ("huge", "Insufficient cpu"),
        ("unclaimed", 'persistentvolumeclaim "nosuchclaim" not found'),
    ):
        cond = wait_for(partial(waiting, name), 20, f"{name}: Available False, WaitingForScheduler")
        assert cond["status"] == "False"
        assert f"0/{nodes} nodes are available" in cond["message"] and words in cond["message"]
        ready = cluster.condition(MD, namespace, name, "Ready")
        assert ready and ready["reason"] == "WaitingForScheduler" and words in ready["message"]
        assert words in cluster.status(MD, namespace, name)["message"]


def test_deletion_cleans_up(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        MD,
        namespace,
        "tmp",
        {
            "model": {"uri": "s3://m/v1"},
            "autoscaling": {"maxReplicas": 3},
            "canary": {"model": {"uri": "s3://m/v2"}, "trafficPercent": 50},
        },
    )
    cluster.wait_phase(MD, namespace, "tmp", "Ready", 30)
    cluster.delete(MD, namespace, "tmp")

    def gone() -> bool:
        sel = "kubeloop.io/model-deployment=tmp"
        return not (
            cluster.apps.list_namespaced_deployment(namespace, label_selector=sel).items
            or cluster.core.list_namespaced_service(namespace, label_selector=sel).items
            or cluster.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, label_selector=sel
            ).items
        )

    wait_for(gone, 30, "children garbage-collected")


def hpa(cluster: Cluster, ns: str, name: str) -> Any:
    """The HPA, or None when the API server says it does not exist."""
    return or_none(cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler, name, ns)


def test_autoscaling_removed_deletes_the_hpa(cluster: Cluster, namespace: str) -> None:
    """Children the spec no longer asks for are deleted by the operator (not left to the
    garbage collector, which only acts when the ModelDeployment goes): the HPA when
    `autoscaling` goes, the canary's Deployment when `canary` goes."""
    cluster.create(
        MD,
        namespace,
        "web",
        {
            "model": {"uri": "s3://m/v1"},
            "autoscaling": {"maxReplicas": 3},
            "canary": {"model": {"uri": "s3://m/v2"}, "trafficPercent": 50},
        },
    )
    cluster.wait_phase(MD, namespace, "web", "Ready", 30)
    wait_for(lambda: hpa(cluster, namespace, "web"), 20, "the HPA")
    wait_for(lambda: deployment(cluster, namespace, "web-canary"), 20, "the canary Deployment")

    cluster.patch_spec(MD, namespace, "web", {"autoscaling": None, "canary": None})
    wait_for(lambda: hpa(cluster, namespace, "web") is None, 30, "the HPA deleted")
    wait_for(
        lambda: deployment(cluster, namespace, "web-canary") is None,
        30,
        "the canary Deployment deleted",
    )
    assert cluster.get(MD, namespace, "web")  # the ModelDeployment itself stays
    assert deployment(cluster, namespace, "web") is not None
