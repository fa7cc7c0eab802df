"""ComputeTemplates applied to the resources that name them, and how many pods of a
template's shape fit on the nodes.

Merge rules, field by field (what a template sets is fixed; the resource may repeat the
same value, and may set what the template leaves open):

| template field | TrainingJob | ModelDeployment |
| --- | --- | --- |
| cpu, memory | `resources.cpu` / `resources.memory` | the same |
| gpu (count, type, resourceName) | `gpu` as a whole | the same |
| nodeSelector | merged into `scheduling.nodeSelector`; a key both set must agree | the same |
| tolerations | added before `scheduling.tolerations` | the same |
| priorityClassName | `scheduling.priorityClassName` | the same |
| queueName | `scheduling.queueName` | (not used) |
| maxWorkers | `workers` must not exceed it | (not used) |
| maxRunSeconds | `activeDeadlineSeconds` must not exceed it; the deadline when unset | (not used) |

A BatchPrediction takes a template as a TrainingJob does, `parallelism` for `workers`;
its pods have no GPU, so a template with GPUs is refused for it.

A conflict is rejected at `kubectl apply` time by the ValidatingAdmissionPolicy in
admission/; the operator checks again (a policy not installed, a template edited after
the resource was admitted) and reports `ComputeTemplateConflict` instead of running.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from kubernetes.utils.quantity import parse_quantity

from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.api.common import GPU, ComputeResources
from kubeloop.api.computetemplate import ComputeTemplateSpec
from kubeloop.api.modeldeployment import ModelDeploymentSpec, ServingScheduling
from kubeloop.api.trainingjob import Scheduling, TrainingJobSpec
from kubeloop.render.common import gpu_placement

KIND = "ComputeTemplate"
Sched = TypeVar("Sched", Scheduling, ServingScheduling)


def choose(
    name: str | None, templates: dict[str, dict[str, Any]]
) -> tuple[str | None, dict[str, Any] | None]:
    """(name, template object) that a resource uses: the one it names (None when that
    one does not exist), else the one default template, else none at all."""
    if name:
        return name, templates.get(name)
    defaults = [n for n, t in templates.items() if (t.get("spec") or {}).get("default")]
    if len(defaults) == 1:
        return defaults[0], templates[defaults[0]]
    return None, None


def _fixed(errors: list[str], field: str, have: Any, fixed: Any, name: str) -> None:
    if have is not None and have != fixed:
        at = f"fixes it at {fixed}" if fixed is not None else f"leaves {field} unset"
        errors.append(f"{field} is {have}, but ComputeTemplate {name} {at}")


def _resources(
    have: ComputeResources | None, t: ComputeTemplateSpec, name: str, errors: list[str]
) -> ComputeResources | None:
    if t.cpu is None and t.memory is None:
        return have
    out = have.model_copy() if have else ComputeResources()
    if t.cpu is not None:
        _fixed(errors, "spec.resources.cpu", out.cpu, t.cpu, name)
        out.cpu = t.cpu
    if t.memory is not None:
        _fixed(errors, "spec.resources.memory", out.memory, t.memory, name)
        out.memory = t.memory
    return out


def _gpu(have: GPU | None, t: ComputeTemplateSpec, name: str, errors: list[str]) -> GPU | None:
    if t.gpu is None:
        return have
    if have is not None:
        _fixed(errors, "spec.gpu.count", have.count, t.gpu.count, name)
        _fixed(errors, "spec.gpu.type", have.type, t.gpu.type, name)
        _fixed(errors, "spec.gpu.resourceName", have.resource_name, t.gpu.resource_name, name)
    return t.gpu.model_copy()


def _placement(sched: Sched, t: ComputeTemplateSpec, name: str, errors: list[str]) -> Sched:
    for key, value in t.node_selector.items():
        _fixed(
            errors,
            f"spec.scheduling.nodeSelector[{key}]",
            sched.node_selector.get(key),
            value,
            name,
        )
    sched.node_selector = {**sched.node_selector, **t.node_selector}
    sched.tolerations = [*t.tolerations, *sched.tolerations]
    if t.priority_class_name is not None:
        _fixed(
            errors,
            "spec.scheduling.priorityClassName",
            sched.priority_class_name,
            t.priority_class_name,
            name,
        )
        sched.priority_class_name = t.priority_class_name
    return sched


Spec = TypeVar("Spec", TrainingJobSpec, ModelDeploymentSpec)


def _pod_shape(spec: Spec, t: ComputeTemplateSpec, name: str, errors: list[str]) -> Spec:
    """A copy of the spec with the template's resources and GPUs, for either kind."""
    out = spec.model_copy(deep=True)
    out.resources = _resources(out.resources, t, name, errors)
    out.gpu = _gpu(out.gpu, t, name, errors)
    return out


Run = TypeVar("Run", TrainingJobSpec, BatchPredictionSpec)


def _run_limits(out: Run, t: ComputeTemplateSpec, name: str, errors: list[str], pods: str) -> Run:
    """What a template fixes of a run (TrainingJob, BatchPrediction) beyond the pod's
    shape: placement, the Kueue queue, how many pods (`pods`: the spec's field, workers
    or parallelism) and the run's time."""
    sched = _placement(out.scheduling or Scheduling(), t, name, errors)
    if t.queue_name is not None:
        _fixed(errors, "spec.scheduling.queueName", sched.queue_name, t.queue_name, name)
        sched.queue_name = t.queue_name
    if sched != Scheduling():
        out.scheduling = sched
    count = getattr(out, pods)
    if t.max_workers is not None and count > t.max_workers:
        errors.append(
            f"spec.{pods} is {count}, more than ComputeTemplate {name} allows "
            f"(maxWorkers {t.max_workers})"
        )
    if t.max_run_seconds is not None:
        if out.active_deadline_seconds is None:
            out.active_deadline_seconds = t.max_run_seconds
        elif out.active_deadline_seconds > t.max_run_seconds:
            errors.append(
                f"spec.activeDeadlineSeconds is {out.active_deadline_seconds}, longer than "
                f"ComputeTemplate {name} allows (maxRunSeconds {t.max_run_seconds})"
            )
    return out


def for_training(
    spec: TrainingJobSpec, name: str, t: ComputeTemplateSpec
) -> tuple[TrainingJobSpec, list[str]]:
    """The spec with the template applied, and every field that overrides it."""
    errors: list[str] = []
    out = _run_limits(_pod_shape(spec, t, name, errors), t, name, errors, "workers")
    return out, errors


def for_batch(
    spec: BatchPredictionSpec, name: str, t: ComputeTemplateSpec
) -> tuple[BatchPredictionSpec, list[str]]:
    """As for_training, `parallelism` for `workers`. A batch pod has no GPU: a template
    that gives one is refused."""
    errors: list[str] = []
    out = spec.model_copy(deep=True)
    out.resources = _resources(out.resources, t, name, errors)
    if t.gpu is not None and t.gpu.count > 0:
        errors.append(f"ComputeTemplate {name} gives GPUs; batch prediction pods use none")
    return _run_limits(out, t, name, errors, "parallelism"), errors


def for_serving(
    spec: ModelDeploymentSpec, name: str, t: ComputeTemplateSpec
) -> tuple[ModelDeploymentSpec, list[str]]:
    errors: list[str] = []
    out = _pod_shape(spec, t, name, errors)
    sched = _placement(out.scheduling or ServingScheduling(), t, name, errors)
    if sched != ServingScheduling():
        out.scheduling = sched
    return out, errors


# --- How many fit -------------------------------------------------------------------


def pod_request(t: ComputeTemplateSpec) -> dict[str, Decimal]:
    """What one pod of the template's shape asks of a node (always one pod slot)."""
    request = {"pods": Decimal(1)}
    if t.cpu:
        request["cpu"] = parse_quantity(t.cpu)
    if t.memory:
        request["memory"] = parse_quantity(t.memory)
    if t.gpu is not None and t.gpu.count > 0:
        request[t.gpu.resource_name] = Decimal(t.gpu.count)
    return request


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and (not tol.get("key") or tol["key"] == taint["key"]):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value") == taint.get("value"):
            return True
    return False


def eligible(node: dict[str, Any], t: ComputeTemplateSpec) -> bool:
    """Would the scheduler consider this node for the template's pods?"""
    gpu_selector, gpu_tolerations = gpu_placement(t.gpu)
    labels = node["metadata"].get("labels") or {}
    selector = {**gpu_selector, **t.node_selector}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = gpu_tolerations + [tol.dump() for tol in t.tolerations]
    return all(
        _tolerated(taint, tolerations) for taint in (node.get("spec") or {}).get("taints", [])
    )


@dataclass
class Fit:
    now: int
    max: int


def count_fit(
    t: ComputeTemplateSpec,
    nodes: list[dict[str, Any]],
    requested: dict[str, dict[str, Decimal]],
) -> Fit:
    """Pods of the template's shape that fit on the eligible nodes: on empty nodes
    (`max`), and beside what the pods on them request now (`now`). `requested` is per
    node name, summed over its pods that have not ended."""
    want = pod_request(t)
    now = most = 0
    for node in nodes:
        if not eligible(node, t):
            continue
        allocatable = {
            k: parse_quantity(v)
            for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()
        }
        used = requested.get(node["metadata"]["name"], {})
        free_max = [allocatable.get(r, Decimal(0)) / q for r, q in want.items() if q > 0]
        free_now = [
            (allocatable.get(r, Decimal(0)) - used.get(r, Decimal(0))) / q
            for r, q in want.items()
            if q > 0
        ]
        most += max(int(min(free_max)), 0)
        now += max(int(min(free_now)), 0)
    return Fit(now=now, max=most)


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """What a pod holds on its node: the larger of its containers' sum and any init
    container's request, per resource (the scheduler's rule), plus one pod slot."""
    spec = pod.get("spec") or {}

    def of(container: dict[str, Any]) -> dict[str, Decimal]:
        res = container.get("resources") or {}
        out = {k: parse_quantity(v) for k, v in (res.get("requests") or {}).items()}
        for k, v in (res.get("limits") or {}).items():
            out.setdefault(k, parse_quantity(v))  # a limit alone is the request
        return out

    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for k, v in of(container).items():
            total[k] = total.get(k, Decimal(0)) + v
    for container in spec.get("initContainers") or []:
        for k, v in of(container).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    total["pods"] = Decimal(1)
    return total


def requested_per_node(pods: list[dict[str, Any]]) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        slot = out.setdefault(node, {})
        for k, v in pod_requests(pod).items():
            slot[k] = slot.get(k, Decimal(0)) + v
    return out


__all__ = [
    "KIND",
    "Fit",
    "choose",
    "count_fit",
    "eligible",
    "for_batch",
    "for_serving",
    "for_training",
    "pod_request",
    "pod_requests",
    "requested_per_node",
]
