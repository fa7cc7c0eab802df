"""Pieces every renderer uses: labels, owner references, safe pod defaults."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Protocol

from kubeloop.api.common import GPU, ComputeResources, EnvVar, Toleration
from kubeloop.names import GPU_PRODUCT_LABEL

# On every container the operator creates: one that fails without writing a termination
# message gets the end of its log as one, which the operator quotes in the resource's
# conditions and Events (controllers/k8sread.py).
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"


def spec_hash(obj: Any) -> str:
    """A short stable hash of a rendered template, to notice spec changes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def env_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()


def env_list(env: list[EnvVar]) -> list[dict[str, Any]]:
    return [e.dump() for e in env]


def container_security(run_as_root: bool = False) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
    }
    if not run_as_root:
        ctx["runAsNonRoot"] = True
    return ctx


def pod_security(run_as_root: bool = False) -> dict[str, Any]:
    ctx: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if not run_as_root:
        ctx["runAsNonRoot"] = True
    return ctx


def resources(compute: ComputeResources | None, gpu: GPU | None) -> dict[str, Any]:
    """Requests for cpu/memory, memory also as limit (no CPU limit: avoids throttling);
    GPUs as a limit, which Kubernetes copies to the request."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if compute is not None:
        if compute.cpu:
            requests["cpu"] = compute.cpu
        if compute.memory:
            requests["memory"] = compute.memory
            limits["memory"] = compute.memory
    if gpu is not None and gpu.count > 0:
        limits[gpu.resource_name] = str(gpu.count)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


class Placement(Protocol):
    """The scheduling fields that TrainingJob and ModelDeployment share."""

    priority_class_name: str | None
    node_selector: dict[str, str]
    tolerations: list[Toleration]


def placement(gpu: GPU | None, sched: Placement | None) -> dict[str, Any]:
    """Pod spec fields that place the pods: the GPU's node selector and toleration, then
    the user's own (which win on a key both set), and the priority class."""
    gpu_selector, gpu_tolerations = gpu_placement(gpu)
    node_selector = {**gpu_selector, **(sched.node_selector if sched else {})}
    tolerations = gpu_tolerations + [t.dump() for t in (sched.tolerations if sched else [])]
    fields: dict[str, Any] = {}
    if node_selector:
        fields["nodeSelector"] = node_selector
    if tolerations:
        fields["tolerations"] = tolerations
    if sched and sched.priority_class_name:
        fields["priorityClassName"] = sched.priority_class_name
    return fields


def gpu_placement(gpu: GPU | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Node selector and toleration that put GPU pods on GPU nodes."""
    if gpu is None or gpu.count <= 0:
        return {}, []
    selector = {GPU_PRODUCT_LABEL: gpu.type} if gpu.type else {}
    toleration = {"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
    return selector, [toleration]
