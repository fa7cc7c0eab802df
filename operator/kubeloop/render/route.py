"""ModelDeployment `spec.route` -> one Service per track and a Gateway API HTTPRoute.

The ModelDeployment's own Service spreads requests over the ready pods of both tracks,
so its canary share moves in steps of 100/replicas percent. The HTTPRoute instead
points at one Service per track and carries the canary's exact share as weights.
"""

from __future__ import annotations

from typing import Any

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.names import SERVER_PORT, TRACK_LABEL
from kubeloop.render.modeldeployment import CANARY, STABLE, labels, service_ports

ROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
GATEWAY_GROUP = "gateway.networking.k8s.io"


def track_service_name(name: str, track: str) -> str:
    """The Service of one track, e.g. `iris-stable`, `iris-canary`."""
    return f"{name}-{track}"


def _port(spec: ModelDeploymentSpec) -> int:
    return spec.runtime.port if spec.runtime else SERVER_PORT


def render_track_service(
    spec: ModelDeploymentSpec, name: str, namespace: str, track: str, owner: dict[str, Any]
) -> dict[str, Any]:
    """A ClusterIP Service that selects only the pods of `track` (the route's backend)."""
    track_labels = {**labels(name), TRACK_LABEL: track}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": track_service_name(name, track),
            "namespace": namespace,
            "labels": track_labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": track_labels,
            "ports": service_ports(spec),
        },
    }


def _backend(name: str, track: str, port: int, weight: int) -> dict[str, Any]:
    return {
        "group": "",
        "kind": "Service",
        "name": track_service_name(name, track),
        "port": port,
        "weight": weight,
    }


def render_route(
    spec: ModelDeploymentSpec,
    name: str,
    namespace: str,
    owner: dict[str, Any],
    canary_percent: int | None,
) -> dict[str, Any]:
    """The HTTPRoute of `spec.route`: the stable track at weight 100 - p, the canary at p.

    `canary_percent` None or 0 lists the stable alone at 100; at 100 the stable stays
    listed with weight 0. Raises ValueError without `spec.route` or for a share outside
    0..100.
    """
    route = spec.route
    if route is None:
        raise ValueError(f"ModelDeployment {namespace}/{name} has no spec.route")
    percent = canary_percent or 0
    if not 0 <= percent <= 100:
        raise ValueError(f"canary share must be within 0..100 percent, got {canary_percent}")
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": route.gateway.name}
    if route.gateway.namespace:
        parent["namespace"] = route.gateway.namespace
    if route.gateway.section_name:
        parent["sectionName"] = route.gateway.section_name
    port = _port(spec)
    backends = [_backend(name, STABLE, port, 100 - percent)]
    if percent > 0:
        backends.append(_backend(name, CANARY, port, percent))
    route_spec: dict[str, Any] = {"parentRefs": [parent]}
    if route.hostnames:
        route_spec["hostnames"] = list(route.hostnames)
    route_spec["rules"] = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": route.path}}],
            "backendRefs": backends,
        }
    ]
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": route_spec,
    }
