"""ModelDeployment `spec.shadow` -> the shadow's Deployment and its own Service.

The shadow's pods carry `kubeloop.io/shadow-of` in place of the model-deployment label
that the client Service (and the route's track Services) select, so no client request
ever reaches them; only the stable's pods do, through the shadow's own ClusterIP
Service, with a copy of the requests they answered (serving/mirror.py).
"""

from __future__ import annotations

from typing import Any

from kubeloop.api.modeldeployment import ModelDeploymentSpec, Shadow
from kubeloop.names import MANAGED_BY, SERVER_PORT, SHADOW_OF_LABEL, TRACK_LABEL
from kubeloop.render.modeldeployment import (
    SHADOW,
    MirrorTarget,
    deployment_name,
    labels,
    render_deployment,
)


def shadow_name(name: str) -> str:
    """The shadow's Deployment and Service, e.g. `iris-shadow`."""
    return deployment_name(name, SHADOW)


def shadow_pod_labels(name: str) -> dict[str, str]:
    return {**MANAGED_BY, SHADOW_OF_LABEL: name, TRACK_LABEL: SHADOW}


def _port(spec: ModelDeploymentSpec) -> int:
    return spec.runtime.port if spec.runtime else SERVER_PORT


def shadow_url(spec: ModelDeploymentSpec, name: str, namespace: str) -> str:
    return f"http://{shadow_name(name)}.{namespace}.svc:{_port(spec)}"


def mirror_target(
    spec: ModelDeploymentSpec, name: str, namespace: str, shadow_uri: str
) -> MirrorTarget:
    assert spec.shadow is not None
    return MirrorTarget(shadow_url(spec, name, namespace), spec.shadow.mirror_percent, shadow_uri)


def _shadow_spec(spec: ModelDeploymentSpec, shadow: Shadow) -> ModelDeploymentSpec:
    """The stable's serving settings with the shadow's replicas and resources; a
    ComputeTemplate's resources (already in `spec`) win."""
    update: dict[str, Any] = {"autoscaling": None, "replicas": shadow.replicas}
    if shadow.resources is not None and spec.compute is None:
        update["resources"] = shadow.resources
    return spec.model_copy(update=update)


def render_shadow_deployment(
    spec: ModelDeploymentSpec,
    name: str,
    namespace: str,
    model_uri: str,
    image: str,
    owner: dict[str, Any],
) -> dict[str, Any]:
    """The shadow's Deployment: the same server (served under the same model name, so
    that the copies' paths need no rewriting), never selected by the client Service."""
    assert spec.shadow is not None
    shadow = spec.shadow
    dep = render_deployment(
        _shadow_spec(spec, shadow),
        name,
        namespace,
        SHADOW,
        model_uri,
        shadow.replicas,
        image,
        owner,
    )
    pod_labels = shadow_pod_labels(name)
    dep["spec"]["selector"] = {"matchLabels": pod_labels}
    dep["spec"]["template"]["metadata"]["labels"] = pod_labels
    # The Deployment itself keeps the model-deployment label: the operator's watch.
    dep["metadata"]["labels"] = {**labels(name), TRACK_LABEL: SHADOW}
    return dep


def render_shadow_service(
    spec: ModelDeploymentSpec, name: str, namespace: str, owner: dict[str, Any]
) -> dict[str, Any]:
    """The shadow's own ClusterIP Service: the stable's pods send the copies there."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": shadow_name(name),
            "namespace": namespace,
            "labels": {**labels(name), TRACK_LABEL: SHADOW},
            "ownerReferences": [owner],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": shadow_pod_labels(name),
            "ports": [{"name": "http", "port": _port(spec), "targetPort": "http"}],
        },
    }
