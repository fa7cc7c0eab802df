"""The two tracks of a ModelDeployment, stable and canary, as observed: their pods,
why they cannot serve, their replicas and shares, and whether they are available."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import CanaryStatus, ModelDeploymentSpec
from kubeloop.controllers import canary
from kubeloop.controllers.execute import ALL
from kubeloop.controllers.k8sread import crash_reason, scheduler_message
from kubeloop.names import TRACK_LABEL
from kubeloop.render.modeldeployment import (
    STABLE,
    canary_beside,
    split_replicas,
    traffic_share,
)

DEPLOYMENT = "ModelDeployment/Deployment"
SERVICE = "ModelDeployment/Service"
HPA = "ModelDeployment/HPA"
POD = "ModelDeployment/Pod"
ROUTE = "ModelDeployment/HTTPRoute"

# A ModelDeployment's status is written as it changes, never held back: its figures
# (replicas ready, the canary's actual share, its analysis) are what users, canary steps
# and DriftMonitors read, and a held write would be flushed by a restart.
URGENT = (ALL,)


@dataclass
class Observed:
    stable: dict[str, Any] | None
    canary: dict[str, Any] | None
    service: dict[str, Any] | None
    hpa: dict[str, Any] | None
    pods: list[dict[str, Any]]
    training_jobs: dict[str, dict[str, Any]]
    route: dict[str, Any] | None = None  # the HTTPRoute this operator applied, if known
    # The Experiments named by fromExperiment, by name.
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    shadow: dict[str, Any] | None = None  # the shadow's Deployment
    shadow_service: dict[str, Any] | None = None


def track_pods(pods: list[dict[str, Any]], track: str) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"].get("labels", {}).get(TRACK_LABEL) == track]


def crash_message(pods: list[dict[str, Any]], track: str) -> str | None:
    """Why pods of a track cannot serve: crash loops, failed model fetches, bad images,
    in the container's own words (the end of its log) where it left any."""
    return crash_reason(track_pods(pods, track))


def autoscaled(spec: ModelDeploymentSpec, observed: Observed) -> int:
    """The stable's replicas now under its HPA (at least the minimum); 0 without."""
    if spec.autoscaling is None:
        return 0
    current = int(((observed.stable or {}).get("spec") or {}).get("replicas") or 0)
    return max(current, spec.autoscaling.min_replicas)


def canary_replicas(spec: ModelDeploymentSpec, current: int, share: int | None) -> int:
    if spec.autoscaling is not None:
        return canary_beside(current, share)
    return split_replicas(spec.replicas, share)[1]


@dataclass
class Split:
    """Replicas and shares of the two tracks."""

    share: int | None  # the canary's share of traffic
    stable: int | None  # stable replicas; None: the HPA decides
    canary: int
    status_replicas: int


def split(spec: ModelDeploymentSpec, decision: canary.Decision | None, current: int) -> Split:
    share = decision.share if decision is not None else None
    canaries = canary_replicas(spec, current, share) if share else 0
    if decision is not None and decision.keep_canary is not None:
        canaries = decision.keep_canary
    if spec.autoscaling is not None:
        return Split(share, None, canaries, current)
    stable = split_replicas(spec.replicas, share)[0]
    return Split(share, stable, canaries, stable)


def share_message(uri: str | None, requested: int, observed: Observed) -> str:
    stable, canaries = canary.ready(observed.stable), canary.ready(observed.canary)
    actual = traffic_share(stable, canaries) or 0
    message = (
        f"canary {uri} serves {actual}% of traffic ({canaries} of {stable + canaries} ready pods)"
    )
    if actual != requested:
        message += f"; {requested}% requested, the nearest share these replica counts allow"
    return message


def canary_report(
    decision: canary.Decision | None, parts: Split, observed: Observed
) -> tuple[CanaryStatus | None, c.Cond | None]:
    """status.canary and the CanaryAvailable condition, with the pods as they are."""
    if decision is None:
        return None, None
    status, cond = decision.status, decision.cond
    if status is None:
        return None, cond
    status.ready_replicas = canary.ready(observed.canary)
    if parts.share:
        status.replicas = parts.canary
        status.actual_traffic_percent = traffic_share(
            canary.ready(observed.stable), status.ready_replicas
        )
        if status.state == canary.AVAILABLE and cond is not None:
            message = share_message(status.model_uri, parts.share, observed)
            cond = c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_AVAILABLE_REASON, message)
    return status, cond


def availability(observed: Observed, share: int | None) -> tuple[c.Cond, str | None]:
    """Available: the stable track, and the canary while it takes traffic; and why the
    stable's pods crash, if they do."""
    crashing = crash_message(observed.pods, STABLE)
    serving = canary.available(observed.stable) + (
        canary.available(observed.canary) if share else 0
    )
    if observed.stable is None:
        cond = c.Cond(c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, "no Deployment yet")
    elif crashing and serving == 0:
        cond = c.Cond(c.AVAILABLE, False, c.PODS_CRASHING, crashing)
    elif serving >= 1:
        message = f"{serving} replicas available"
        cond = c.Cond(c.AVAILABLE, True, c.MINIMUM_REPLICAS_AVAILABLE, message)
    elif unscheduled := scheduler_message(track_pods(observed.pods, STABLE)):
        # The scheduler's words: no node fits, or a claim the pods mount does not exist.
        message = f"pods pending: {unscheduled}"
        cond = c.Cond(c.AVAILABLE, False, c.WAITING_FOR_SCHEDULER, message)
    else:
        message = "0 replicas available"
        cond = c.Cond(c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, message)
    return cond, crashing
