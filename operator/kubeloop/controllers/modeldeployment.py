"""ModelDeployment reconcile: resolve the model, serve it, split canary traffic.

Sub-reconcilers per child (Deployment stable/canary, Service, HPA) are driven by one
pure `plan()`; Ready is the AND of ModelResolved and Available.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelSource,
)
from kubeloop.canary.measure import METER, Measured, serving_pods
from kubeloop.controllers import canary, computetemplate, history
from kubeloop.controllers.common import (
    Ctx,
    begin,
    finish_status,
    log_forbidden,
    owner_reference,
    record_event,
    refused,
    report_refused_child,
    rfc3339,
    transition_event,
    write_status,
)
from kubeloop.controllers.k8sread import crash_reason, scheduler_message
from kubeloop.controllers.runtime import Key, Result
from kubeloop.kube import KubeError
from kubeloop.names import MODEL_URI_ANNOTATION, SERVER_PORT, TRACK_LABEL
from kubeloop.render.modeldeployment import (
    CANARY,
    STABLE,
    canary_beside,
    deployment_name,
    render_deployment,
    render_hpa,
    render_service,
    service_url,
    split_replicas,
    traffic_share,
)
from kubeloop.render.route import ROUTE_API_VERSION, render_route, render_track_service

KIND = "ModelDeployment"
DEPLOYMENT = "ModelDeployment/Deployment"
SERVICE = "ModelDeployment/Service"
HPA = "ModelDeployment/HPA"
POD = "ModelDeployment/Pod"
ROUTE = "ModelDeployment/HTTPRoute"
TRAINING_JOB = "TrainingJob"


@dataclass
class Resolution:
    uri: str | None
    reason: str
    message: str
    training_job: str | None = None


def resolve(
    source: ModelSource, namespace: str, training_jobs: dict[str, dict[str, Any]]
) -> Resolution:
    if source.uri:
        return Resolution(source.uri, c.RESOLVED, f"model {source.uri}")
    assert source.from_training_job is not None
    tj_name = source.from_training_job.name
    tj = training_jobs.get(tj_name)
    if tj is None:
        return Resolution(
            None,
            c.TRAINING_JOB_NOT_FOUND,
            f"TrainingJob {namespace}/{tj_name} does not exist",
            tj_name,
        )
    status = tj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == c.FAILED:
        return Resolution(
            None,
            c.TRAINING_JOB_FAILED,
            f"TrainingJob {tj_name} failed: {status.get('message', '')}",
            tj_name,
        )
    if phase != c.SUCCEEDED or not status.get("modelUri"):
        return Resolution(
            None,
            c.TRAINING_JOB_NOT_SUCCEEDED,
            f"waiting for TrainingJob {tj_name} to succeed (phase {phase})",
            tj_name,
        )
    uri = str(status["modelUri"])
    return Resolution(uri, c.RESOLVED, f"model {uri} from TrainingJob {tj_name}", tj_name)


def referenced_jobs(body: dict[str, Any]) -> set[str]:
    """Names of the TrainingJobs whose models this ModelDeployment serves (raw body)."""
    spec = body.get("spec") or {}
    names = set()
    for source in (spec.get("model") or {}, ((spec.get("canary") or {}).get("model") or {})):
        ref = source.get("fromTrainingJob") or {}
        if ref.get("name"):
            names.add(str(ref["name"]))
    return names


@dataclass
class Observed:
    stable: dict[str, Any] | None
    canary: dict[str, Any] | None
    service: dict[str, Any] | None
    hpa: dict[str, Any] | None
    pods: list[dict[str, Any]]
    training_jobs: dict[str, dict[str, Any]]


@dataclass
class Plan:
    status: ModelDeploymentStatus
    conds: list[c.Cond]
    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)  # (apiVersion, kind, name)
    route: dict[str, Any] | None = None  # the HTTPRoute, applied apart: it may fail alone
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None


def track_pods(pods: list[dict[str, Any]], track: str) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"].get("labels", {}).get(TRACK_LABEL) == track]


def crash_message(pods: list[dict[str, Any]], track: str) -> str | None:
    """Why pods of a track cannot serve: crash loops, failed model fetches, bad images,
    in the container's own words (the end of its log) where it left any."""
    return crash_reason(track_pods(pods, track))


def plan(
    spec: ModelDeploymentSpec,
    body: dict[str, Any],
    observed: Observed,
    image: str,
    now: dt.datetime,
    measured: Measured | None = None,
    due_in: float | None = None,
) -> Plan:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    owner = owner_reference(body)
    prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
    port = spec.runtime.port if spec.runtime else SERVER_PORT
    status = ModelDeploymentStatus(url=service_url(name, namespace, port))
    result = Plan(status=status, conds=[])

    stable_res = resolve(spec.model, namespace, observed.training_jobs)
    status.source_training_job = stable_res.training_job
    model_resolved = c.Cond(
        c.MODEL_RESOLVED, stable_res.uri is not None, stable_res.reason, stable_res.message
    )
    # A canary that passed every step stands in for spec.model until spec.model changes.
    promotion = canary.current_promotion(prev, stable_res.uri)
    # Without a resolved model, keep serving what runs now; never deploy a missing model.
    stable_uri = (promotion.uri if promotion else stable_res.uri) or (
        (observed.stable or {}).get("metadata", {}).get("annotations", {}).get(MODEL_URI_ANNOTATION)
    )
    current = 0
    if spec.autoscaling is not None:
        current = int(((observed.stable or {}).get("spec") or {}).get("replicas") or 0)
        current = max(current, spec.autoscaling.min_replicas)

    def canary_replicas_for(share: int | None) -> int:
        if spec.autoscaling is not None:
            return canary_beside(current, share)
        return split_replicas(spec.replicas, share)[1]

    decision: canary.Decision | None = None
    if spec.canary is not None:
        canary_res = resolve(spec.canary.model, namespace, observed.training_jobs)
        if canary_res.uri is None:
            waiting = CanaryStatus(state=canary.WAITING, message=canary_res.message)
            cond = c.Cond(c.CANARY_AVAILABLE, False, canary_res.reason, canary_res.message)
            decision = canary.Decision(waiting, None, False, cond, promotion=promotion)
        else:
            decision = canary.decide(
                canary.Inputs(
                    canary=spec.canary,
                    uri=canary_res.uri,
                    prev=prev.canary or CanaryStatus(),
                    stable_uri=stable_uri,
                    model_uri=stable_res.uri,
                    promotion=promotion,
                    world=canary.World(
                        observed.stable, observed.canary, crash_message(observed.pods, CANARY)
                    ),
                    measured=measured,
                    due_in=due_in,
                    replicas_for=canary_replicas_for,
                    stable_total=current if spec.autoscaling is not None else spec.replicas,
                    now=now,
                )
            )
        promotion = decision.promotion
        stable_uri = (promotion.uri if promotion else stable_res.uri) or stable_uri
        result.events = decision.events
        result.requeue_after = decision.requeue_after
    elif observed.canary is not None:
        result.delete.append(("apps/v1", "Deployment", deployment_name(name, CANARY)))
    status.promotion = promotion
    share = decision.share if decision is not None else None
    canary_uri = decision.status.model_uri if decision and decision.status else None

    canary_replicas = canary_replicas_for(share) if share else 0
    if decision is not None and decision.keep_canary is not None:
        canary_replicas = decision.keep_canary
    if spec.autoscaling is not None:
        stable_replicas: int | None = None
        status.replicas = current
    else:
        stable_replicas = split_replicas(spec.replicas, share)[0]
        status.replicas = stable_replicas
    canary_status = decision.status if decision is not None else None
    if canary_status is not None and share:
        canary_ready = canary.ready(observed.canary)
        canary_status.replicas = canary_replicas
        canary_status.ready_replicas = canary_ready
        canary_status.actual_traffic_percent = traffic_share(
            canary.ready(observed.stable), canary_ready
        )
        if canary_status.state == canary.AVAILABLE and decision and decision.cond:
            decision.cond = c.Cond(
                c.CANARY_AVAILABLE,
                True,
                c.CANARY_AVAILABLE_REASON,
                _share_message(canary_uri, share, observed),
            )
    elif canary_status is not None:
        canary_status.ready_replicas = canary.ready(observed.canary)
    status.canary = canary_status
    canary_cond = decision.cond if decision is not None else None

    # Children.
    if stable_uri:
        result.apply.append(
            render_deployment(
                spec, name, namespace, STABLE, stable_uri, stable_replicas, image, owner
            )
        )
        status.active_model_uri = stable_uri
    status.history = history.update(
        prev.history,
        status.active_model_uri,
        rfc3339(now),
        meta.get("annotations") or {},
        stable_res.training_job,
        observed.pods,
    )
    if spec.canary is not None and canary_uri and (share or observed.canary is not None):
        result.apply.append(
            render_deployment(
                spec,
                name,
                namespace,
                CANARY,
                canary_uri,
                canary_replicas,
                image,
                owner,
                progress_deadline_seconds=spec.canary.progress_deadline_seconds,
            )
        )
    result.apply.append(render_service(spec, name, namespace, owner))
    if spec.route is not None:
        result.apply.append(render_track_service(spec, name, namespace, STABLE, owner))
        if spec.canary is not None:
            result.apply.append(render_track_service(spec, name, namespace, CANARY, owner))
        weight = share if decision is None or decision.route_share == -1 else decision.route_share
        result.route = render_route(spec, name, namespace, owner, weight or None)
    hpa = render_hpa(spec, name, namespace, owner)
    if hpa is not None:
        result.apply.append(hpa)
    elif observed.hpa is not None:
        result.delete.append(("autoscaling/v2", "HorizontalPodAutoscaler", name))

    # Availability: the stable track, and the canary while it takes traffic.
    status.ready_replicas = canary.ready(observed.stable)
    crashing = crash_message(observed.pods, STABLE)
    serving = canary.available(observed.stable) + (
        canary.available(observed.canary) if share else 0
    )
    if observed.stable is None:
        available = c.Cond(c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, "no Deployment yet")
    elif crashing and serving == 0:
        available = c.Cond(c.AVAILABLE, False, c.PODS_CRASHING, crashing)
    elif serving >= 1:
        available = c.Cond(
            c.AVAILABLE, True, c.MINIMUM_REPLICAS_AVAILABLE, f"{serving} replicas available"
        )
    elif unscheduled := scheduler_message(track_pods(observed.pods, STABLE)):
        # The scheduler's words: no node fits, or a claim the pods mount does not exist.
        available = c.Cond(
            c.AVAILABLE, False, c.WAITING_FOR_SCHEDULER, f"pods pending: {unscheduled}"
        )
    else:
        available = c.Cond(
            c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, "0 replicas available"
        )

    ready = c.ready_from([model_resolved, available], c.RECONCILED, "serving " + (stable_uri or ""))
    conds = [ready, model_resolved, available]
    if canary_cond is not None:
        conds.append(canary_cond)
    rolled_out = canary.rolled_out(observed.stable) or stable_replicas == 0
    if ready.status and not rolled_out and crashing is None:
        conds.append(c.Cond(c.RECONCILING, True, c.PROGRESSING, "rolling out"))
        phase = "Progressing"
    elif ready.status and decision is not None and decision.under_way and canary_cond:
        message = (canary_status.message if canary_status else None) or canary_cond.message
        conds.append(c.Cond(c.RECONCILING, True, canary_cond.reason, f"canary: {message}"))
        phase = "Progressing"
    elif ready.status:
        phase = "Ready"
    elif not model_resolved.status and stable_res.reason == c.TRAINING_JOB_FAILED:
        conds.append(c.Cond(c.STALLED, True, stable_res.reason, stable_res.message))
        phase = "Failed"
    elif available.reason == c.PODS_CRASHING:
        conds.append(c.Cond(c.STALLED, True, available.reason, available.message))
        phase = "Failed"
    else:
        conds.append(c.Cond(c.RECONCILING, True, ready.reason, ready.message))
        phase = "Pending" if not model_resolved.status else "Progressing"
    status.phase = phase
    status.message = ready.message
    if canary_cond is not None and canary_cond.reason in (c.CANARY_ROLLED_BACK, c.CANARY_ABORTED):
        status.message = f"{canary_cond.reason}: {canary_cond.message}"
    result.conds = conds
    return result


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, namespace, name = key
    started = await begin(ctx, key, ModelDeploymentSpec, ModelDeploymentStatus())
    if started is None:
        return None
    body, spec, now = started
    template = computetemplate.for_serving(ctx, spec, namespace)
    if template.blocked is not None:
        return await computetemplate.hold(ctx, body, template, ModelDeploymentStatus)
    spec = template.spec
    tjs = {
        job: tj
        for job in referenced_jobs(body)
        if (tj := ctx.store.get(TRAINING_JOB, namespace, job)) is not None
    }
    deployments = {d["metadata"]["name"]: d for d in ctx.store.owned(DEPLOYMENT, namespace, name)}
    observed = Observed(
        stable=deployments.get(deployment_name(name, STABLE)),
        canary=deployments.get(deployment_name(name, CANARY)),
        service=ctx.store.get(SERVICE, namespace, name),
        hpa=ctx.store.get(HPA, namespace, name),
        pods=ctx.store.owned(POD, namespace, name),
        training_jobs=tjs,
    )
    measured, due_in = await _measure(key, spec, body, observed, now)
    decided = plan(spec, body, observed, ctx.config.image, now, measured, due_in)
    template_cond = computetemplate.condition(template)
    if template_cond is not None:
        decided.conds.append(template_cond)
    for obj in decided.apply:
        if _unchanged(ctx, obj):
            continue
        try:
            applied = await ctx.kube.apply(obj)
        except KubeError as exc:
            if not refused(exc):
                raise
            await report_refused_child(ctx, body, ModelDeploymentStatus(), exc, now)
            return None
        ctx.store.put(_store_kind(obj["kind"]), applied, owner=name)
    for api_version, kind, child in decided.delete:
        await ctx.kube.delete(api_version, kind, namespace, child)
    routed = any(
        cond.get("type") == c.ROUTED for cond in (body.get("status") or {}).get("conditions", [])
    )
    route_cond = await _route(ctx, namespace, name, decided.route, routed)
    if route_cond is not None:
        decided.conds.append(route_cond)
    new_status = finish_status(body, decided.status, decided.conds, rfc3339(now))
    prev_phase = (body.get("status") or {}).get("phase")
    written = await write_status(ctx, body, new_status)
    if decided.events and written:
        for event in decided.events:
            await record_event(ctx, body, *event)
    elif written and decided.status.phase != prev_phase:
        await record_event(
            ctx,
            body,
            *transition_event(decided.status.phase, decided.status.message or "", decided.conds),
        )
    return Result(requeue_after=decided.requeue_after)


async def _route(
    ctx: Ctx, namespace: str, name: str, route: dict[str, Any] | None, routed: bool
) -> c.Cond | None:
    """Apply the HTTPRoute, or delete the one this operator applied when `route` went.

    Routes are not watched (the Gateway API may not be installed): what was applied is
    remembered in the store, and the status's `Routed` condition says that a route was
    applied, so that removing `spec.route` after a restart deletes it too."""
    if route is None:
        if routed or ctx.store.get(ROUTE, namespace, name) is not None:
            await ctx.kube.delete(ROUTE_API_VERSION, "HTTPRoute", namespace, name)
            ctx.store.remove(ROUTE, namespace, name, owner=name)
        return None
    if not _unchanged(ctx, route):
        try:
            applied = await ctx.kube.apply(route)
        except KubeError as exc:
            log_forbidden(exc, f"HTTPRoute {namespace}/{name}")
            why = "the Gateway API is not installed" if exc.status == 404 else exc.message
            return c.Cond(c.ROUTED, False, c.ROUTE_FAILED, f"HTTPRoute {name}: {why}")
        ctx.store.put(ROUTE, applied, owner=name)
    weights = [
        f"{ref['name']} {ref['weight']}"
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    ]
    return c.Cond(c.ROUTED, True, c.ROUTE_APPLIED, f"HTTPRoute {name}: {', '.join(weights)}")


async def _measure(
    key: Key, spec: ModelDeploymentSpec, body: dict[str, Any], observed: Observed, now: dt.datetime
) -> tuple[Measured | None, float | None]:
    """Read both tracks' pods when the canary's window is open; judge it when it is due."""
    prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
    analysis = canary.analysis_of(spec.canary) if spec.canary else None
    if not canary.judging(spec.canary, prev.canary) or analysis is None or prev.canary is None:
        METER.forget(key)
        return None, None
    uri = prev.canary.model_uri or ""
    tracks = {CANARY: uri, STABLE: prev.active_model_uri or ""}
    port = spec.runtime.port if spec.runtime else SERVER_PORT
    pods = serving_pods(observed.pods, port, tracks)
    step = prev.canary.step if spec.canary and spec.canary.steps else None
    return await METER.measure(key, analysis, body["metadata"]["name"], pods, uri, step, now)


def _share_message(uri: str | None, requested: int, observed: Observed) -> str:
    stable, canaries = canary.ready(observed.stable), canary.ready(observed.canary)
    actual = traffic_share(stable, canaries) or 0
    message = (
        f"canary {uri} serves {actual}% of traffic ({canaries} of {stable + canaries} ready pods)"
    )
    if actual != requested:
        message += f"; {requested}% requested, the nearest share these replica counts allow"
    return message


def _store_kind(kind: str) -> str:
    return {
        "Deployment": DEPLOYMENT,
        "Service": SERVICE,
        "HorizontalPodAutoscaler": HPA,
        "HTTPRoute": ROUTE,
    }[kind]


def _unchanged(ctx: Ctx, obj: dict[str, Any]) -> bool:
    """Skip an apply whose every field already has the rendered value (no write)."""
    meta = obj["metadata"]
    have = ctx.store.get(_store_kind(obj["kind"]), meta["namespace"], meta["name"])
    return have is not None and _contains(have, obj)


def _contains(have: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_contains(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)
