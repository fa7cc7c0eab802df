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
from kubeloop.controllers import computetemplate, history
from kubeloop.controllers.common import (
    Ctx,
    begin,
    finish_status,
    owner_reference,
    parse_time,
    record_event,
    refused,
    report_refused_child,
    rfc3339,
    transition_event,
    write_status,
)
from kubeloop.controllers.runtime import Key, Result
from kubeloop.kube import KubeError
from kubeloop.render.modeldeployment import (
    CANARY,
    MODEL_URI_ANNOTATION,
    SERVER_CONTAINER,
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

KIND = "ModelDeployment"
DEPLOYMENT = "ModelDeployment/Deployment"
SERVICE = "ModelDeployment/Service"
HPA = "ModelDeployment/HPA"
POD = "ModelDeployment/Pod"
TRAINING_JOB = "TrainingJob"
ROLLED_BACK = "RolledBack"
IDLE = "Idle"


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
    event: tuple[str, str, str] | None = None
    requeue_after: float | None = None


def _dep_ready(dep: dict[str, Any] | None) -> int:
    return int(((dep or {}).get("status") or {}).get("readyReplicas", 0) or 0)


def _dep_available(dep: dict[str, Any] | None) -> int:
    return int(((dep or {}).get("status") or {}).get("availableReplicas", 0) or 0)


def _rolled_out(dep: dict[str, Any] | None) -> bool:
    """The Deployment controller has seen the latest spec and every replica is updated."""
    if dep is None:
        return False
    status = dep.get("status") or {}
    want = dep.get("spec", {}).get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
        and int(status.get("updatedReplicas", 0) or 0) >= want
        and int(status.get("availableReplicas", 0) or 0) >= want
        and int(status.get("replicas", 0) or 0) <= want
    )


def crash_message(pods: list[dict[str, Any]], track: str) -> str | None:
    """Why pods of a track cannot serve: crash loops, failed model fetches, bad images."""
    bad_reasons = {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerError",
        "InvalidImageName",
        "CreateContainerConfigError",
    }
    for pod in pods:
        if pod["metadata"].get("labels", {}).get("kubeloop.io/track") != track:
            continue
        status = pod.get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for cs in status.get(key, []) or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                term = (cs.get("lastState") or {}).get("terminated") or (
                    (cs.get("state") or {}).get("terminated") or {}
                )
                if waiting.get("reason") in bad_reasons or (
                    cs.get("restartCount", 0) and term.get("exitCode", 0) != 0
                ):
                    what = waiting.get("reason") or f"exit code {term.get('exitCode')}"
                    detail = term.get("message") or waiting.get("message") or ""
                    container = cs.get("name", SERVER_CONTAINER)
                    text = f"pod {pod['metadata']['name']} container {container}: {what}"
                    return f"{text}: {detail}" if detail else text
    return None


def plan(
    spec: ModelDeploymentSpec,
    body: dict[str, Any],
    observed: Observed,
    image: str,
    now: dt.datetime,
) -> Plan:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    owner = owner_reference(body)
    prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
    port = spec.runtime.port if spec.runtime else 8080
    status = ModelDeploymentStatus(url=service_url(name, namespace, port))
    result = Plan(status=status, conds=[])

    stable_res = resolve(spec.model, namespace, observed.training_jobs)
    status.source_training_job = stable_res.training_job
    model_resolved = c.Cond(
        c.MODEL_RESOLVED, stable_res.uri is not None, stable_res.reason, stable_res.message
    )
    # Without a resolved model, keep serving what runs now; never deploy a missing model.
    stable_uri = stable_res.uri or (
        (observed.stable or {}).get("metadata", {}).get("annotations", {}).get(MODEL_URI_ANNOTATION)
    )

    # Canary: resolve, time its progress, roll it back when it misses its deadline.
    canary_pct: int | None = None
    canary_status: CanaryStatus | None = None
    canary_uri: str | None = None
    canary_cond: c.Cond | None = None
    if spec.canary is not None:
        canary_res = resolve(spec.canary.model, namespace, observed.training_jobs)
        canary_uri = canary_res.uri
        prev_canary = prev.canary or CanaryStatus()
        canary_status = CanaryStatus(
            model_uri=canary_uri,
            traffic_percent=spec.canary.traffic_percent,
            state="Progressing",
            start_time=prev_canary.start_time,
        )
        if canary_uri is None:
            canary_status.state = "Waiting"
            canary_cond = c.Cond(c.CANARY_AVAILABLE, False, canary_res.reason, canary_res.message)
        elif prev_canary.state == ROLLED_BACK and prev_canary.model_uri == canary_uri:
            canary_status.state = ROLLED_BACK
            canary_status.start_time = prev_canary.start_time
            canary_status.message = prev_canary.message
            canary_cond = c.Cond(
                c.CANARY_AVAILABLE,
                False,
                c.CANARY_ROLLED_BACK,
                prev_canary.message or "canary rolled back",
            )
        else:
            if prev_canary.model_uri != canary_uri or not prev_canary.start_time:
                canary_status.start_time = rfc3339(now)
            canary_pct = spec.canary.traffic_percent
    elif observed.canary is not None:
        result.delete.append(("apps/v1", "Deployment", deployment_name(name, CANARY)))

    if spec.autoscaling is not None:
        current = int(((observed.stable or {}).get("spec") or {}).get("replicas") or 0)
        current = max(current, spec.autoscaling.min_replicas)
        canary_replicas = canary_beside(current, canary_pct)
        stable_replicas: int | None = None
        status.replicas = current
    else:
        stable_replicas, canary_replicas = split_replicas(spec.replicas, canary_pct)
        status.replicas = stable_replicas

    # Canary deadline, from its own start time (kept in status across restarts).
    if canary_status is not None and spec.canary is not None and canary_pct == 0:
        canary_status.state = IDLE
        canary_status.replicas = 0
        canary_status.actual_traffic_percent = 0
        canary_cond = c.Cond(
            c.CANARY_AVAILABLE,
            False,
            c.CANARY_NO_TRAFFIC,
            f"trafficPercent is 0: canary {canary_uri} is kept at zero replicas",
        )
    elif canary_status is not None and canary_pct:
        canary_ready = _dep_ready(observed.canary)
        canary_status.replicas = canary_replicas
        canary_status.ready_replicas = canary_ready
        canary_status.actual_traffic_percent = traffic_share(
            _dep_ready(observed.stable), canary_ready
        )
        started = parse_time(canary_status.start_time) or now
        deadline = spec.canary.progress_deadline_seconds if spec.canary else 600
        elapsed = (now - started).total_seconds()
        if canary_replicas and _dep_available(observed.canary) >= canary_replicas:
            canary_status.state = "Available"
            canary_cond = c.Cond(
                c.CANARY_AVAILABLE,
                True,
                c.CANARY_AVAILABLE_REASON,
                _share_message(canary_uri, canary_pct, observed),
            )
        elif elapsed >= deadline:
            why = crash_message(observed.pods, CANARY) or (
                f"{canary_ready} of {canary_replicas} canary replicas ready"
            )
            message = (
                f"canary {canary_uri} not available within {deadline}s ({why}); "
                "scaled to zero, the stable model keeps serving"
            )
            canary_status.state = ROLLED_BACK
            canary_status.message = message
            canary_cond = c.Cond(c.CANARY_AVAILABLE, False, c.CANARY_ROLLED_BACK, message)
            result.event = ("Warning", c.CANARY_ROLLED_BACK, message)
            canary_pct = None
            canary_replicas = 0
            if spec.autoscaling is None:
                stable_replicas = spec.replicas
                status.replicas = stable_replicas
        else:
            canary_cond = c.Cond(
                c.CANARY_AVAILABLE,
                False,
                c.CANARY_PROGRESSING,
                f"{canary_ready} of {canary_replicas} canary replicas ready",
            )
            result.requeue_after = deadline - elapsed
    if canary_status is not None and canary_status.state == ROLLED_BACK:
        canary_status.replicas = 0
        canary_status.ready_replicas = _dep_ready(observed.canary)
        canary_replicas = 0
    status.canary = canary_status

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
    if spec.canary is not None and canary_uri and canary_status is not None:
        if canary_status.state == ROLLED_BACK and observed.canary is None:
            pass
        else:
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
    hpa = render_hpa(spec, name, namespace, owner)
    if hpa is not None:
        result.apply.append(hpa)
    elif observed.hpa is not None:
        result.delete.append(("autoscaling/v2", "HorizontalPodAutoscaler", name))

    # Availability: the stable track, and the canary while it takes traffic.
    status.ready_replicas = _dep_ready(observed.stable)
    crashing = crash_message(observed.pods, STABLE)
    serving = _dep_available(observed.stable) + (
        _dep_available(observed.canary) if canary_pct else 0
    )
    if observed.stable is None:
        available = c.Cond(c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, "no Deployment yet")
    elif crashing and serving == 0:
        available = c.Cond(c.AVAILABLE, False, c.PODS_CRASHING, crashing)
    elif serving >= 1:
        available = c.Cond(
            c.AVAILABLE, True, c.MINIMUM_REPLICAS_AVAILABLE, f"{serving} replicas available"
        )
    else:
        available = c.Cond(
            c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, "0 replicas available"
        )

    ready = c.ready_from([model_resolved, available], c.RECONCILED, "serving " + (stable_uri or ""))
    conds = [ready, model_resolved, available]
    if canary_cond is not None:
        conds.append(canary_cond)
    rolled_out = _rolled_out(observed.stable) or stable_replicas == 0
    if ready.status and not rolled_out and crashing is None:
        conds.append(c.Cond(c.RECONCILING, True, c.PROGRESSING, "rolling out"))
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
    if canary_cond is not None and canary_cond.reason == c.CANARY_ROLLED_BACK:
        status.message = canary_cond.message
    result.conds = conds
    return result


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, namespace, name = key
    started = await begin(ctx, key, ModelDeploymentSpec, ModelDeploymentStatus())
    if started is None:
        return None
    body, spec, now = started
    template = computetemplate.for_serving(ctx, spec)
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
    decided = plan(spec, body, observed, ctx.config.image, now)
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
    new_status = finish_status(body, decided.status, decided.conds, rfc3339(now))
    prev_phase = (body.get("status") or {}).get("phase")
    written = await write_status(ctx, body, new_status)
    if decided.event is not None and written:
        await record_event(ctx, body, *decided.event)
    elif written and decided.status.phase != prev_phase:
        await record_event(
            ctx,
            body,
            *transition_event(decided.status.phase, decided.status.message or "", decided.conds),
        )
    return Result(requeue_after=decided.requeue_after)


def _share_message(uri: str | None, requested: int, observed: Observed) -> str:
    stable, canary = _dep_ready(observed.stable), _dep_ready(observed.canary)
    actual = traffic_share(stable, canary) or 0
    message = f"canary {uri} serves {actual}% of traffic ({canary} of {stable + canary} ready pods)"
    if actual != requested:
        message += f"; {requested}% requested, the nearest share these replica counts allow"
    return message


def _store_kind(kind: str) -> str:
    return {"Deployment": DEPLOYMENT, "Service": SERVICE, "HorizontalPodAutoscaler": HPA}[kind]


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
