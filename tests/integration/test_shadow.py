"""A ModelDeployment's shadow on the local control plane, operator in-process: its own
Deployment and Service that no client request reaches, the stable's pods told where to
mirror, the comparison's state in the status, and everything gone with `shadow:`."""

from __future__ import annotations

from typing import Any

from tests.kubetest import Cluster, or_none, wait_for

MD = "ModelDeployment"
CLIENT_SELECTOR = "app.kubernetes.io/managed-by=kubeloop,kubeloop.io/model-deployment=web"


def _deployment(cluster: Cluster, namespace: str, name: str) -> Any:
    return or_none(cluster.apps.read_namespaced_deployment, name, namespace)


def _service(cluster: Cluster, namespace: str, name: str) -> Any:
    return or_none(cluster.core.read_namespaced_service, name, namespace)


def _stable_args(cluster: Cluster, namespace: str) -> list[str]:
    dep = _deployment(cluster, namespace, "web")
    return list(dep.spec.template.spec.containers[0].args) if dep else []


def test_shadow_gets_its_own_deployment_unseen_by_clients_and_goes(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(
        MD,
        namespace,
        "web",
        {
            "model": {"uri": "s3://m/v1"},
            "replicas": 2,
            "shadow": {
                "model": {"uri": "s3://m/v2"},
                "mirrorPercent": 25,
                "replicas": 1,
                "resources": {"cpu": "200m", "memory": "128Mi"},
                "minSamples": 50,
            },
        },
    )
    shadow = wait_for(
        lambda: _deployment(cluster, namespace, "web-shadow"), 30, "shadow Deployment"
    )
    assert shadow.metadata.owner_references[0].name == "web"
    assert shadow.spec.replicas == 1
    pod_labels = shadow.spec.template.metadata.labels
    assert pod_labels == {
        "app.kubernetes.io/managed-by": "kubeloop",
        "kubeloop.io/shadow-of": "web",
        "kubeloop.io/track": "shadow",
    }
    server = shadow.spec.template.spec.containers[0]
    assert server.resources.requests["cpu"] == "200m"
    assert shadow.spec.template.spec.init_containers[0].args[1] == "s3://m/v2"
    assert "--shadow-url" not in server.args  # the shadow mirrors to nobody
    svc = wait_for(lambda: _service(cluster, namespace, "web-shadow"), 30, "shadow Service")
    assert svc.spec.selector == pod_labels

    # The stable's pods mirror to the shadow's Service once a shadow pod is ready.
    url = f"http://web-shadow.{namespace}.svc:8080"
    wait_for(lambda: url in _stable_args(cluster, namespace), 30, "the stable mirroring")
    args = _stable_args(cluster, namespace)
    assert args[args.index("--shadow-percent") + 1] == "25"
    # Clients never reach the shadow: the client Service's selector matches none of its pods.
    client = cluster.core.read_namespaced_service("web", namespace)
    assert not set(client.spec.selector.items()) <= set(pod_labels.items())
    tracks = wait_for(
        lambda: (
            (pods := cluster.core.list_namespaced_pod(namespace, label_selector=CLIENT_SELECTOR))
            and len(pods.items) == 2
            and {p.metadata.labels["kubeloop.io/track"] for p in pods.items}
        ),
        30,
        "the client Service's two stable pods",
    )
    assert tracks == {"stable"}

    def comparing() -> dict[str, Any] | None:
        status = cluster.status(MD, namespace, "web")
        state = (status.get("shadow") or {}).get("state")
        return status if state == "Comparing" and status.get("phase") == "Ready" else None

    # A shadow never holds Ready back (kwok: the stable's rollout to mirror is quick).
    status = wait_for(comparing, 40, "status.shadow comparing, the ModelDeployment Ready")
    assert status["shadow"]["modelUri"] == "s3://m/v2"
    assert status["shadow"]["url"] == url
    assert status["shadow"]["readyReplicas"] == 1
    compared = cluster.condition(MD, namespace, "web", "ShadowCompared")
    assert compared is not None and compared["status"] == "False"
    # kwok's pods run no server: nothing to read, and the condition says so.
    assert compared["reason"] == "ShadowMetricsUnavailable"

    cluster.patch_spec(MD, namespace, "web", {"shadow": None})
    wait_for(lambda: _deployment(cluster, namespace, "web-shadow") is None, 30, "shadow gone")
    wait_for(lambda: _service(cluster, namespace, "web-shadow") is None, 30, "its Service gone")
    wait_for(
        lambda: "--shadow-url" not in _stable_args(cluster, namespace), 30, "mirroring stopped"
    )
    wait_for(
        lambda: (
            "shadow" not in cluster.status(MD, namespace, "web")
            and cluster.condition(MD, namespace, "web", "ShadowCompared") is None
        ),
        30,
        "status.shadow and ShadowCompared gone",
    )


def test_shadow_from_a_training_job_waits_for_it(cluster: Cluster, namespace: str) -> None:
    cluster.create(
        MD,
        namespace,
        "web",
        {"model": {"uri": "s3://m/v1"}, "shadow": {"model": {"fromTrainingJob": {"name": "nope"}}}},
    )

    def waiting() -> dict[str, Any] | None:
        cond = cluster.condition(MD, namespace, "web", "ShadowCompared")
        return cond if cond and cond["reason"] == "TrainingJobNotFound" else None

    wait_for(waiting, 30, "ShadowCompared waiting for the TrainingJob")
    status = cluster.wait_phase(MD, namespace, "web", "Ready", 30)  # a shadow never holds it
    assert status["shadow"]["state"] == "Waiting"
    assert _deployment(cluster, namespace, "web-shadow") is None
    assert "--shadow-url" not in _stable_args(cluster, namespace)
