"""The shadow of a ModelDeployment: its Deployment and Service, whether the stable's
pods mirror to it, and `status.shadow` with the ShadowCompared condition. Pure.

The stable's pods start mirroring once the shadow has had a ready replica (not while
its first pods start, which would count as the shadow's errors) and keep mirroring to
it while it is set: each change of the mirror rolls the stable's pods, and with them
the counters start again, so what `status.shadow` shows is about this shadow only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.shadow import ShadowStatus
from kubeloop.controllers.common import owner_reference, rfc3339
from kubeloop.controllers.execute import Child, Delete, Event
from kubeloop.controllers.k8sread import deployment_ready
from kubeloop.controllers.modeldeployment_resolve import resolve
from kubeloop.controllers.modeldeployment_tracks import DEPLOYMENT, SERVICE, Observed
from kubeloop.names import SHADOW_MODEL_URI_ANNOTATION
from kubeloop.render.modeldeployment import MirrorTarget
from kubeloop.render.shadow import (
    mirror_target,
    render_shadow_deployment,
    render_shadow_service,
    shadow_name,
    shadow_url,
)
from kubeloop.shadow import report
from kubeloop.shadow.read import READ_INTERVAL, Reading

WAITING, PROGRESSING, COMPARING, COMPARED = "Waiting", "Progressing", "Comparing", "Compared"


@dataclass
class ShadowPlan:
    apply: list[Child] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    status: ShadowStatus | None = None
    cond: c.Cond | None = None
    events: list[Event] = field(default_factory=list)
    mirror: MirrorTarget | None = None  # what the stable's pods mirror to
    requeue_after: float | None = None


def mirrored_uri(stable: dict[str, Any] | None) -> str | None:
    """The shadow model the stable's pod template mirrors to now, if any."""
    template = ((stable or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(
        SHADOW_MODEL_URI_ANNOTATION
    )


def _cleanup(name: str, observed: Observed) -> list[Delete]:
    gone = []
    if observed.shadow is not None:
        gone.append(Delete("apps/v1", "Deployment", shadow_name(name)))
    if observed.shadow_service is not None:
        gone.append(Delete("v1", "Service", shadow_name(name)))
    return gone


def shadow_plan(
    spec: ModelDeploymentSpec,
    body: dict[str, Any],
    observed: Observed,
    image: str,
    reading: Reading | None,
) -> ShadowPlan:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    if spec.shadow is None:
        return ShadowPlan(delete=_cleanup(name, observed))
    shadow = spec.shadow
    out = ShadowPlan()
    res = resolve(shadow.model, namespace, observed.training_jobs, observed.experiments)
    status = ShadowStatus(
        replicas=shadow.replicas,
        url=shadow_url(spec, name, namespace),
        mirror_percent=shadow.mirror_percent,
    )
    out.status = status
    if res.uri is None:
        status.state, status.message = WAITING, res.message
        out.cond = c.Cond(c.SHADOW_COMPARED, False, res.reason, f"shadow: {res.message}")
        out.delete = _cleanup(name, observed)
        return _finish(out, body)
    status.model_uri = res.uri
    owner = owner_reference(body)
    out.apply = [
        Child(render_shadow_deployment(spec, name, namespace, res.uri, image, owner), DEPLOYMENT),
        Child(render_shadow_service(spec, name, namespace, owner), SERVICE),
    ]
    ready = deployment_ready(observed.shadow) if observed.shadow is not None else 0
    status.ready_replicas = ready
    if ready or mirrored_uri(observed.stable) == res.uri:
        out.mirror = mirror_target(spec, name, namespace, res.uri)
    if out.mirror is None or mirrored_uri(observed.stable) != res.uri:
        status.state = PROGRESSING
        status.message = f"waiting for the shadow's pods ({ready} ready) and the stable's to mirror"
        out.cond = c.Cond(c.SHADOW_COMPARED, False, c.SHADOW_PROGRESSING, status.message)
        return _finish(out, body)
    out.requeue_after = READ_INTERVAL
    _compare(out, status, shadow.min_samples, reading)
    return _finish(out, body)


def _compare(
    out: ShadowPlan, status: ShadowStatus, min_samples: int, reading: Reading | None
) -> None:
    status.state = COMPARING
    if reading is None or reading.pods == 0:
        why = next(iter(reading.unreadable.values()), "") if reading else ""
        status.message = "no stable pod's counters could be read" + (f": {why}" if why else "")
        out.cond = c.Cond(c.SHADOW_COMPARED, False, c.SHADOW_METRICS_UNAVAILABLE, status.message)
        return
    figures = report.figures(reading.total, reading.pods)
    for field_name in ShadowStatus.model_fields:
        if (value := getattr(figures, field_name)) is not None:
            setattr(status, field_name, value)
    status.read_time = rfc3339(reading.time)
    samples = status.samples or 0
    if samples < min_samples:
        status.message = f"{samples} of {min_samples} answers compared"
        out.cond = c.Cond(c.SHADOW_COMPARED, False, c.TOO_FEW_SAMPLES, status.message)
        return
    status.state = COMPARED
    status.message = report.summary(status)
    out.cond = c.Cond(
        c.SHADOW_COMPARED, True, c.COMPARED, f"shadow {status.model_uri}: " + status.message
    )


def _finish(out: ShadowPlan, body: dict[str, Any]) -> ShadowPlan:
    """The summary column, and an Event when the comparison first has enough samples."""
    status = out.status
    assert status is not None
    status.summary = report.summary(status)
    before = ((body.get("status") or {}).get("shadow") or {}).get("state")
    if status.state == COMPARED and before != COMPARED and out.cond is not None:
        out.events.append(("Normal", c.SHADOW_COMPARED, out.cond.message))
    return out
