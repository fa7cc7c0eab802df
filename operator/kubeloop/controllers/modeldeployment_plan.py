"""ModelDeployment planners: pure, one per concern, from the spec, the previous status
and the observed children to the new status and the actions (an `execute.Plan`).

`plan()` asks them in order: `stable_model` (spec.model resolved, or a promoted canary
standing in), `canary_decision` (kubeloop.controllers.canary), `split` (replicas and
shares of the two tracks), `deployments`, `service_and_route`, `autoscaler`,
`availability`, and `phase` (Ready is the AND of ModelResolved and Available).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Promotion,
)
from kubeloop.canary.measure import Measured
from kubeloop.controllers import canary, history, promotion_note
from kubeloop.controllers.canary_state import World
from kubeloop.controllers.common import owner_reference, rfc3339
from kubeloop.controllers.execute import Child, Delete, Plan
from kubeloop.controllers.k8sread import rolled_out
from kubeloop.controllers.modeldeployment_resolve import FINAL_REASONS, Resolution, resolve
from kubeloop.controllers.modeldeployment_shadow import shadow_plan
from kubeloop.controllers.modeldeployment_tracks import (
    DEPLOYMENT,
    HPA,
    ROUTE,
    SERVICE,
    URGENT,
    Observed,
    Split,
    autoscaled,
    availability,
    canary_replicas,
    canary_report,
    crash_message,
    split,
)
from kubeloop.kube import KubeError
from kubeloop.names import MODEL_URI_ANNOTATION, SERVER_PORT
from kubeloop.render.modeldeployment import (
    CANARY,
    STABLE,
    MirrorTarget,
    deployment_name,
    render_deployment,
    render_hpa,
    render_service,
    service_url,
)
from kubeloop.render.route import ROUTE_API_VERSION, render_route, render_track_service
from kubeloop.shadow.read import Reading

MDPlan = Plan[ModelDeploymentStatus]


@dataclass
class Models:
    """The stable track's model."""

    resolution: Resolution  # spec.model
    promotion: Promotion | None  # a canary that passed every step stands in for it
    uri: str | None  # what the stable serves

    def follow(self, decision: canary.Decision) -> None:
        """After the canary's decision: a promotion it made or ended."""
        self.promotion = decision.promotion
        promoted = self.promotion.uri if self.promotion else None
        self.uri = (promoted or self.resolution.uri) or self.uri


def stable_model(
    spec: ModelDeploymentSpec, prev: ModelDeploymentStatus, observed: Observed, namespace: str
) -> Models:
    resolution = resolve(spec.model, namespace, observed.training_jobs, observed.experiments)
    promotion = canary.current_promotion(prev, resolution.uri)
    # Without a resolved model, keep serving what runs now; never deploy a missing model.
    running = (observed.stable or {}).get("metadata", {}).get("annotations", {})
    uri = (promotion.uri if promotion else resolution.uri) or running.get(MODEL_URI_ANNOTATION)
    return Models(resolution, promotion, uri)


def canary_decision(
    spec: ModelDeploymentSpec,
    prev: ModelDeploymentStatus,
    models: Models,
    observed: Observed,
    namespace: str,
    now: dt.datetime,
    measured: Measured | None = None,
    due_in: float | None = None,
) -> canary.Decision | None:
    """The canary's state, share and Events; None without spec.canary."""
    if spec.canary is None:
        return None
    res = resolve(spec.canary.model, namespace, observed.training_jobs, observed.experiments)
    if res.uri is None:
        waiting = CanaryStatus(state=canary.WAITING, message=res.message)
        cond = c.Cond(c.CANARY_AVAILABLE, False, res.reason, res.message)
        return canary.Decision(waiting, None, False, cond, promotion=models.promotion)
    current = autoscaled(spec, observed)
    return canary.decide(
        canary.Inputs(
            canary=spec.canary,
            uri=res.uri,
            prev=prev.canary or CanaryStatus(),
            stable_uri=models.uri,
            model_uri=models.resolution.uri,
            promotion=models.promotion,
            world=World(observed.stable, observed.canary, crash_message(observed.pods, CANARY)),
            measured=measured,
            due_in=due_in,
            replicas_for=lambda share: canary_replicas(spec, current, share),
            stable_total=current if spec.autoscaling is not None else spec.replicas,
            now=now,
        )
    )


def deployments(
    spec: ModelDeploymentSpec,
    body: dict[str, Any],
    stable_uri: str | None,
    canary_uri: str | None,
    parts: Split,
    observed: Observed,
    image: str,
    mirror: MirrorTarget | None = None,
) -> tuple[list[Child], list[Delete]]:
    """The stable Deployment (once a model is known), mirroring to the shadow when one
    is up, and the canary's."""
    meta, owner = body["metadata"], owner_reference(body)
    name, namespace = meta["name"], meta["namespace"]
    apply: list[Child] = []
    if stable_uri:
        stable = render_deployment(
            spec, name, namespace, STABLE, stable_uri, parts.stable, image, owner, mirror=mirror
        )
        apply.append(Child(stable, DEPLOYMENT))
    if spec.canary is None:
        gone = [Delete("apps/v1", "Deployment", deployment_name(name, CANARY))]
        return apply, gone if observed.canary is not None else []
    if canary_uri and (parts.share or observed.canary is not None):
        deadline = spec.canary.progress_deadline_seconds
        dep = render_deployment(
            spec,
            name,
            namespace,
            CANARY,
            canary_uri,
            parts.canary,
            image,
            owner,
            progress_deadline_seconds=deadline,
        )
        apply.append(Child(dep, DEPLOYMENT))
    return apply, []


def service_and_route(
    spec: ModelDeploymentSpec,
    body: dict[str, Any],
    weight: int | None,
    observed: Observed,
) -> tuple[list[Child], Child | None, list[Delete], c.Cond | None]:
    """The Service; with spec.route, a Service per track and the HTTPRoute, applied
    apart (the Gateway API may be missing): its condition says whether it went."""
    meta, owner = body["metadata"], owner_reference(body)
    name, namespace = meta["name"], meta["namespace"]
    services = [Child(render_service(spec, name, namespace, owner), SERVICE)]
    if spec.route is None:
        # Routes are not watched: the store remembers what was applied, and `Routed` in
        # the status says that one was, so that it goes after a restart too.
        routed = any(
            cd.get("type") == c.ROUTED for cd in (body.get("status") or {}).get("conditions", [])
        )
        if routed or observed.route is not None:
            gone = Delete(ROUTE_API_VERSION, "HTTPRoute", name, forget=ROUTE)
            return services, None, [gone], None
        return services, None, [], None
    services.append(Child(render_track_service(spec, name, namespace, STABLE, owner), SERVICE))
    if spec.canary is not None:
        services.append(Child(render_track_service(spec, name, namespace, CANARY, owner), SERVICE))
    route = render_route(spec, name, namespace, owner, weight or None)

    def failed(exc: KubeError) -> c.Cond:
        why = "the Gateway API is not installed" if exc.status == 404 else exc.message
        return c.Cond(c.ROUTED, False, c.ROUTE_FAILED, f"HTTPRoute {name}: {why}")

    weights = [
        f"{ref['name']} {ref['weight']}"
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    ]
    applied = c.Cond(c.ROUTED, True, c.ROUTE_APPLIED, f"HTTPRoute {name}: {', '.join(weights)}")
    return services, Child(route, ROUTE, on_failure=failed), [], applied


def route_weight(decision: canary.Decision | None, share: int | None) -> int | None:
    """The canary's weight on the route: what its ready pods can carry."""
    if decision is None or decision.route_share == -1:
        return share
    return decision.route_share


def autoscaler(
    spec: ModelDeploymentSpec, body: dict[str, Any], observed: Observed
) -> tuple[list[Child], list[Delete]]:
    meta = body["metadata"]
    hpa = render_hpa(spec, meta["name"], meta["namespace"], owner_reference(body))
    if hpa is not None:
        return [Child(hpa, HPA)], []
    if observed.hpa is not None:
        return [], [Delete("autoscaling/v2", "HorizontalPodAutoscaler", meta["name"])]
    return [], []


def phase(
    models: Models,
    available: c.Cond,
    crashing: str | None,
    rolled_out: bool,
    decision: canary.Decision | None,
    canary_status: CanaryStatus | None,
    canary_cond: c.Cond | None,
) -> tuple[str, str, list[c.Cond]]:
    """The phase, the message and the conditions."""
    resolution = models.resolution
    resolved = resolution.cond()
    ready = c.ready_from([resolved, available], c.RECONCILED, "serving " + (models.uri or ""))
    conds = [ready, resolved, available] + ([canary_cond] if canary_cond else [])
    if ready.status and not rolled_out and crashing is None:
        conds.append(c.Cond(c.RECONCILING, True, c.PROGRESSING, "rolling out"))
        name = "Progressing"
    elif ready.status and decision is not None and decision.under_way and canary_cond:
        message = (canary_status.message if canary_status else None) or canary_cond.message
        conds.append(c.Cond(c.RECONCILING, True, canary_cond.reason, f"canary: {message}"))
        name = "Progressing"
    elif ready.status:
        name = "Ready"
    elif not resolved.status and resolution.reason in FINAL_REASONS:
        conds.append(c.Cond(c.STALLED, True, resolution.reason, resolution.message))
        name = "Failed"
    elif available.reason == c.PODS_CRASHING:
        conds.append(c.Cond(c.STALLED, True, available.reason, available.message))
        name = "Failed"
    else:
        conds.append(c.Cond(c.RECONCILING, True, ready.reason, ready.message))
        name = "Pending" if not resolved.status else "Progressing"
    message = ready.message
    if canary_cond is not None and canary_cond.reason in (c.CANARY_ROLLED_BACK, c.CANARY_ABORTED):
        message = f"{canary_cond.reason}: {canary_cond.message}"
    return name, message, conds


def plan(
    spec: ModelDeploymentSpec,
    body: dict[str, Any],
    observed: Observed,
    image: str,
    now: dt.datetime,
    measured: Measured | None = None,
    due_in: float | None = None,
    *,
    extra_conds: tuple[c.Cond, ...] = (),
    shadow_reading: Reading | None = None,
) -> MDPlan:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
    port = spec.runtime.port if spec.runtime else SERVER_PORT
    status = ModelDeploymentStatus(url=service_url(name, namespace, port))
    out = MDPlan(status=status, urgent=URGENT)

    # A DriftMonitor's promotion kept out of the spec (its annotation) serves in place
    # of the field it was made over, while that field is unchanged.
    promoted = promotion_note.standing(body)
    spec = promotion_note.served_spec(spec, promoted)
    models = stable_model(spec, prev, observed, namespace)
    if promoted is not None and promoted.field == promotion_note.MODEL and models.resolution.uri:
        models.resolution.message = f"model {models.resolution.uri} {promoted.describe()}"
    status.source_training_job = models.resolution.training_job
    status.source_experiment = models.resolution.experiment
    decision = canary_decision(spec, prev, models, observed, namespace, now, measured, due_in)
    if decision is not None:
        models.follow(decision)
        out.events = decision.events
        out.requeue_after = decision.requeue_after
    status.promotion = models.promotion
    parts = split(spec, decision, autoscaled(spec, observed))
    status.replicas = parts.status_replicas
    status.canary, canary_cond = canary_report(decision, parts, observed)
    canary_uri = decision.status.model_uri if decision and decision.status else None

    shadow = shadow_plan(spec, body, observed, image, shadow_reading)
    status.shadow = shadow.status
    out.apply, out.delete = deployments(
        spec, body, models.uri, canary_uri, parts, observed, image, shadow.mirror
    )
    out.apply += shadow.apply
    out.delete += shadow.delete
    out.events = out.events + shadow.events
    if shadow.requeue_after is not None:
        out.requeue_after = min(out.requeue_after or shadow.requeue_after, shadow.requeue_after)
    status.active_model_uri = models.uri or None
    status.history = history.update(
        prev.history,
        status.active_model_uri,
        rfc3339(now),
        meta.get("annotations") or {},
        models.resolution.training_job,
        observed.pods,
    )
    weight = route_weight(decision, parts.share)
    services, route, unrouted, routed = service_and_route(spec, body, weight, observed)
    scaler, unscaled = autoscaler(spec, body, observed)
    # The HTTPRoute goes last: it may fail alone.
    out.apply += services + scaler + ([route] if route else [])
    out.delete += unscaled + unrouted

    status.ready_replicas = canary.ready(observed.stable)
    available, crashing = availability(observed, parts.share)
    done = rolled_out(observed.stable) or parts.stable == 0
    status.phase, status.message, out.conds = phase(
        models, available, crashing, done, decision, status.canary, canary_cond
    )
    out.conds += list(extra_conds) + ([routed] if routed else [])
    out.conds += [shadow.cond] if shadow.cond else []
    return out
