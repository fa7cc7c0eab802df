"""ModelDeployment -> stable Deployment, canary Deployment, Service and HPA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.names import (
    MANAGED_BY,
    MODEL_DEPLOYMENT_LABEL,
    MODEL_URI_ANNOTATION,
    PROMETHEUS_PATH_ANNOTATION,
    PROMETHEUS_PORT_ANNOTATION,
    PROMETHEUS_SCRAPE_ANNOTATION,
    SERVER_GRPC_PORT,
    SERVER_PORT,
    SHADOW_MODEL_URI_ANNOTATION,
    TRACK_LABEL,
)
from kubeloop.render import storage
from kubeloop.render.common import (
    TERMINATION_MESSAGE_POLICY,
    container_security,
    env_list,
    placement,
    pod_security,
    resources,
)
from kubeloop.render.fit import parse_quantity

STABLE, CANARY, SHADOW = "stable", "canary", "shadow"
MODEL_DIR = "/mnt/models"
SERVER_CONTAINER = "server"
FETCH_CONTAINER = "fetch-model"
RPS_METRIC = "kubeloop_model_requests_per_second"
DEFAULT_CPU_TARGET = 80
# How long a stopping server keeps answering after its pod leaves the Service's
# endpoints: kube-proxy and other clients take a moment to stop sending to it.
DRAIN_SECONDS = 5


@dataclass(frozen=True)
class MirrorTarget:
    """Where the stable's pods copy a share of their requests: the shadow's Service."""

    url: str
    percent: int
    model_uri: str


def deployment_name(name: str, track: str) -> str:
    return name if track == STABLE else f"{name}-{track}"


def labels(name: str) -> dict[str, str]:
    return {**MANAGED_BY, MODEL_DEPLOYMENT_LABEL: name}


def service_url(name: str, namespace: str, port: int) -> str:
    return f"http://{name}.{namespace}.svc:{port}"


def _nearest(x: float) -> int:
    return int(x + 0.5)


def split_replicas(total: int, canary_percent: int | None) -> tuple[int, int]:
    """(stable, canary) replicas out of `total` whose ratio is the nearest to the share.

    The Service spreads requests evenly over ready pods, so the canary's share is
    canary / (stable + canary), in steps of 100 / total percent. 0 keeps the canary at
    zero; 100 moves every replica to the canary. Between them each track keeps at
    least one replica, so a total below 2 is raised to 2.
    """
    total = max(total, 0)
    if not canary_percent or total == 0:
        return total, 0
    if canary_percent >= 100:
        return 0, total
    total = max(total, 2)
    canary = min(max(_nearest(total * canary_percent / 100), 1), total - 1)
    return total - canary, canary


def canary_beside(stable: int, canary_percent: int | None) -> int:
    """Canary replicas beside `stable` replicas that the HPA owns (0 < share < 100)."""
    if not canary_percent or stable <= 0:
        return 0
    return max(_nearest(stable * canary_percent / (100 - min(canary_percent, 99))), 1)


def traffic_share(stable: int, canary: int) -> int | None:
    """The canary's share of requests, in percent, with this many pods ready on each side."""
    total = stable + canary
    return _nearest(100 * canary / total) if total else None


def server_workers(spec: ModelDeploymentSpec) -> int:
    """`runtime.workers`, else the CPU request in whole CPUs, at least 1."""
    if spec.runtime and spec.runtime.workers:
        return spec.runtime.workers
    cpu = spec.resources.cpu if spec.resources else None
    return max(1, int(parse_quantity(cpu))) if cpu else 1


def pod_template(
    spec: ModelDeploymentSpec,
    name: str,
    track: str,
    model_uri: str,
    image: str,
    mirror: MirrorTarget | None = None,
) -> dict[str, Any]:
    runtime = spec.runtime
    port = runtime.port if runtime else SERVER_PORT
    server_image = runtime.image if runtime and runtime.image else image
    monitoring = spec.monitoring.enabled if spec.monitoring else True
    args = ["serve", "--model-dir", MODEL_DIR, "--name", name, "--port", str(port)]
    if not monitoring:
        args.append("--no-monitoring")
    args += ["--workers", str(server_workers(spec))]
    grpc_port = runtime.grpc_port if runtime else SERVER_GRPC_PORT
    if grpc_port:
        args += ["--grpc-port", str(grpc_port)]
    if runtime and runtime.batching:
        args += [
            "--max-batch-size",
            str(runtime.batching.max_batch_size),
            "--max-batch-wait-ms",
            f"{runtime.batching.max_wait_ms:g}",
        ]
    if mirror is not None:
        args += ["--shadow-url", mirror.url, "--shadow-percent", str(mirror.percent)]
    if runtime:
        args += runtime.args
    probe_common = {"periodSeconds": 5, "timeoutSeconds": 2}
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": server_image,
        "args": args,
        "ports": [
            {"name": "http", "containerPort": port},
            *([{"name": "grpc", "containerPort": grpc_port}] if grpc_port else []),
        ],
        "env": [
            {"name": "KUBELOOP_MODEL_URI", "value": model_uri},
            *(env_list(runtime.env) if runtime else []),
        ],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "failureThreshold": 3,
            **probe_common,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "failureThreshold": 6,
            "initialDelaySeconds": 10,
            **probe_common,
        },
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR, "readOnly": True},
            # The root filesystem is read-only; worker processes meet on unix sockets here.
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {**container_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        # A pod scaled away (a canary taking its share, the HPA scaling down) keeps
        # serving while the endpoint removal reaches every node, then gets SIGTERM.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
    }
    res = resources(spec.resources, spec.gpu)
    if res:
        server["resources"] = res
    claim_volumes, claim_mounts = storage.claim_mounts([model_uri], read_only=True)
    fetch = {
        "name": FETCH_CONTAINER,
        "image": image,
        "args": ["fetch-model", storage.local_uri(model_uri), MODEL_DIR],
        "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}, *claim_mounts],
        "securityContext": {**container_security(), "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": [fetch],
        "containers": [server],
        "volumes": [
            {"name": "model", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            *claim_volumes,
        ],
    }
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    else:
        pod_spec["automountServiceAccountToken"] = False
    pod_spec.update(placement(spec.gpu, spec.scheduling))
    annotations = {
        MODEL_URI_ANNOTATION: model_uri,
        PROMETHEUS_SCRAPE_ANNOTATION: "true",
        PROMETHEUS_PORT_ANNOTATION: str(port),
        PROMETHEUS_PATH_ANNOTATION: "/metrics",
    }
    if mirror is not None:
        annotations[SHADOW_MODEL_URI_ANNOTATION] = mirror.model_uri
    return {
        "metadata": {"labels": {**labels(name), TRACK_LABEL: track}, "annotations": annotations},
        "spec": pod_spec,
    }


def render_deployment(
    spec: ModelDeploymentSpec,
    name: str,
    namespace: str,
    track: str,
    model_uri: str,
    replicas: int | None,
    image: str,
    owner: dict[str, Any],
    progress_deadline_seconds: int = 600,
    mirror: MirrorTarget | None = None,
) -> dict[str, Any]:
    """`replicas=None` leaves the count to the HPA (the field is not ours then)."""
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": {**labels(name), TRACK_LABEL: track}},
        "strategy": {
            "type": "RollingUpdate",
            # A new model rolls out without dropping below the serving capacity.
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "progressDeadlineSeconds": progress_deadline_seconds,
        "revisionHistoryLimit": 3,
        "template": pod_template(spec, name, track, model_uri, image, mirror),
    }
    if replicas is not None:
        dep_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, track),
            "namespace": namespace,
            "labels": {**labels(name), TRACK_LABEL: track},
            "annotations": {MODEL_URI_ANNOTATION: model_uri},
            "ownerReferences": [owner],
        },
        "spec": dep_spec,
    }


def service_ports(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """HTTP, and gRPC unless it is off."""
    port = spec.runtime.port if spec.runtime else SERVER_PORT
    grpc_port = spec.runtime.grpc_port if spec.runtime else SERVER_GRPC_PORT
    ports = [{"name": "http", "port": port, "targetPort": "http"}]
    if grpc_port:
        ports.append({"name": "grpc", "port": grpc_port, "targetPort": "grpc"})
    return ports


def render_service(
    spec: ModelDeploymentSpec, name: str, namespace: str, owner: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": {
            "type": "ClusterIP",
            # Both tracks: the canary's share of traffic is its share of ready pods.
            "selector": labels(name),
            "ports": service_ports(spec),
        },
    }


def render_hpa(
    spec: ModelDeploymentSpec, name: str, namespace: str, owner: dict[str, Any]
) -> dict[str, Any] | None:
    auto = spec.autoscaling
    if auto is None:
        return None
    metrics: list[dict[str, Any]] = []
    cpu = auto.target_cpu_utilization
    if cpu is None and auto.target_requests_per_second is None:
        cpu = DEFAULT_CPU_TARGET
    if cpu is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu},
                },
            }
        )
    if auto.target_requests_per_second is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": RPS_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(auto.target_requests_per_second),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(name, STABLE),
            },
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": metrics,
        },
    }
