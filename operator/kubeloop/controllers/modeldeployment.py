"""ModelDeployment reconcile: resolve the model, serve it, split canary traffic.

The pure planners (controllers/modeldeployment_plan.py, over the tracks of
controllers/modeldeployment_tracks.py) decide the children and the status; Ready is
the AND of ModelResolved and Available. `reconcile()` reads what it observes, measures
the canary when its window is open, plans, and hands the plan to `execute`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from kubeloop.canary.measure import METER, Measured, serving_pods
from kubeloop.controllers import computetemplate, shadow_trial
from kubeloop.controllers.canary_state import analysis_of, judging
from kubeloop.controllers.common import Ctx, begin
from kubeloop.controllers.execute import execute
from kubeloop.controllers.modeldeployment_plan import plan
from kubeloop.controllers.modeldeployment_resolve import (
    referenced_experiments,
    referenced_jobs,
    resolve,
)
from kubeloop.controllers.modeldeployment_shadow import mirrored_uri
from kubeloop.controllers.modeldeployment_tracks import (
    DEPLOYMENT,
    HPA,
    POD,
    ROUTE,
    SERVICE,
    Observed,
    crash_message,
)
from kubeloop.controllers.registration import ChildWatch, Controller, slim_pod
from kubeloop.controllers.runtime import Key, Result
from kubeloop.names import MODEL_DEPLOYMENT_LABEL, SERVER_PORT, SHADOW_MODEL_URI_ANNOTATION
from kubeloop.render.modeldeployment import CANARY, SHADOW, STABLE, deployment_name
from kubeloop.shadow.read import READER, Reading

KIND = "ModelDeployment"
TRAINING_JOB = "TrainingJob"
EXPERIMENT = "Experiment"

__all__ = [
    "DEPLOYMENT",
    "HPA",
    "KIND",
    "POD",
    "ROUTE",
    "SERVICE",
    "Observed",
    "crash_message",
    "plan",
    "reconcile",
    "referenced_jobs",
    "resolve",
]


def observe(ctx: Ctx, body: dict[str, Any]) -> Observed:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    deployments = {d["metadata"]["name"]: d for d in ctx.store.owned(DEPLOYMENT, namespace, name)}
    return Observed(
        stable=deployments.get(deployment_name(name, STABLE)),
        canary=deployments.get(deployment_name(name, CANARY)),
        service=ctx.store.get(SERVICE, namespace, name),
        hpa=ctx.store.get(HPA, namespace, name),
        pods=ctx.store.owned(POD, namespace, name),
        training_jobs={
            job: tj
            for job in referenced_jobs(body)
            if (tj := ctx.store.get(TRAINING_JOB, namespace, job)) is not None
        },
        route=ctx.store.get(ROUTE, namespace, name),
        experiments={
            exp_name: exp
            for exp_name in referenced_experiments(body)
            if (exp := ctx.store.get(EXPERIMENT, namespace, exp_name)) is not None
        },
        shadow=deployments.get(deployment_name(name, SHADOW)),
        shadow_service=ctx.store.get(SERVICE, namespace, deployment_name(name, SHADOW)),
    )


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    namespace = key[1]
    started = await begin(ctx, key, ModelDeploymentSpec, ModelDeploymentStatus())
    if started is None:
        return None
    body, spec, now = started
    # A DriftMonitor's challenger on trial (its annotation) runs as the shadow.
    spec = shadow_trial.served_spec(spec, body)
    template = computetemplate.for_serving(ctx, spec, namespace)
    if template.blocked is not None:
        return await computetemplate.hold(ctx, body, template, ModelDeploymentStatus)
    observed = observe(ctx, body)
    measured, due_in = await _measure(key, template.spec, body, observed, now)
    extra = tuple(computetemplate.conditions(template))
    reading = await _read_shadow(key, template.spec, body, observed, now)
    decided = plan(
        template.spec,
        body,
        observed,
        ctx.config.image,
        now,
        measured,
        due_in,
        extra_conds=extra,
        shadow_reading=reading,
    )
    return await execute(ctx, body, decided)


async def _read_shadow(
    key: Key, spec: ModelDeploymentSpec, body: dict[str, Any], observed: Observed, now: dt.datetime
) -> Reading | None:
    """The shadow counters of the stable's pods that mirror to the shadow (throttled)."""
    uri = mirrored_uri(observed.stable)
    prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
    if spec.shadow is None or uri is None or not prev.active_model_uri:
        READER.forget(key)
        return None
    port = spec.runtime.port if spec.runtime else SERVER_PORT
    mirroring = [
        pod
        for pod in observed.pods
        if (pod["metadata"].get("annotations") or {}).get(SHADOW_MODEL_URI_ANNOTATION) == uri
    ]
    pods = serving_pods(mirroring, port, {STABLE: prev.active_model_uri})
    return await READER.read(key, pods, body["metadata"]["name"], uri, now)


async def _measure(
    key: Key, spec: ModelDeploymentSpec, body: dict[str, Any], observed: Observed, now: dt.datetime
) -> tuple[Measured | None, float | None]:
    """Read both tracks' pods when the canary's window is open; judge it when it is due."""
    prev = ModelDeploymentStatus.model_validate(body.get("status") or {})
    analysis = analysis_of(spec.canary) if spec.canary else None
    if not judging(spec.canary, prev.canary) or analysis is None or prev.canary is None:
        METER.forget(key)
        return None, None
    uri = prev.canary.model_uri or ""
    tracks = {CANARY: uri, STABLE: prev.active_model_uri or ""}
    port = spec.runtime.port if spec.runtime else SERVER_PORT
    pods = serving_pods(observed.pods, port, tracks)
    step = prev.canary.step if spec.canary and spec.canary.steps else None
    return await METER.measure(key, analysis, body["metadata"]["name"], pods, uri, step, now)


def _dependents(ctx: Ctx, kind: str, obj: dict[str, Any]) -> list[Key]:
    """Those serving a TrainingJob's or an Experiment's model; those taking a template
    that changed."""
    name = obj["metadata"]["name"]
    if kind == computetemplate.KIND:
        return computetemplate.takers(ctx, KIND, name)
    referenced = {TRAINING_JOB: referenced_jobs, EXPERIMENT: referenced_experiments}.get(kind)
    if referenced is None:
        return []
    namespace = obj["metadata"]["namespace"]
    return [
        (KIND, namespace, md["metadata"]["name"])
        for md in ctx.store.all(KIND)
        if md["metadata"]["namespace"] == namespace and name in referenced(md)
    ]


def _forget(ctx: Ctx, key: Key) -> None:
    METER.forget(key)
    READER.forget(key)


def _child(group: str, version: str, plural: str, kind: str, store_kind: str) -> ChildWatch:
    slim = slim_pod if kind == "Pod" else None
    return ChildWatch(group, version, plural, kind, store_kind, MODEL_DEPLOYMENT_LABEL, slim)


CONTROLLER = Controller(
    kind=KIND,
    plural="modeldeployments",
    reconcile=reconcile,
    children=(
        _child("apps", "v1", "deployments", "Deployment", DEPLOYMENT),
        _child("", "v1", "services", "Service", SERVICE),
        _child("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", HPA),
        _child("", "v1", "pods", "Pod", POD),
    ),
    dependents=_dependents,
    forget=_forget,
)
