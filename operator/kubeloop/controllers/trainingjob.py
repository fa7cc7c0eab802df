"""TrainingJob reconcile: one Indexed Job per attempt, gang restarts, truthful status.

The pure planners (controllers/trainingjob_plan.py) decide the whole new status and
the actions from the spec, the previous status and the observed children;
`reconcile()` reads what it observes, plans, and hands the plan to `execute`.
"""

from __future__ import annotations

from typing import Any

from kubeloop import conditions as c
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeloop.controllers import computetemplate, trainingprogress
from kubeloop.controllers.common import Ctx, begin
from kubeloop.controllers.execute import execute
from kubeloop.controllers.k8sread import job_finished, owned_by
from kubeloop.controllers.registration import ChildWatch, Controller, slim_pod
from kubeloop.controllers.runtime import Key, Result
from kubeloop.controllers.trainingjob_plan import (
    GONE,
    JOB,
    SERVICE,
    TERMINAL,
    Observed,
    plan,
)
from kubeloop.names import TRAINING_JOB_LABEL
from kubeloop.render.trainingjob import service_name

KIND = "TrainingJob"

__all__ = ["GONE", "JOB", "KIND", "SERVICE", "TERMINAL", "Observed", "plan", "reconcile"]


def forget_gone_jobs(ctx: Ctx, namespace: str, name: str) -> None:
    for job in ctx.store.owned(JOB, namespace, name):
        if job.get(GONE):
            ctx.store.remove(JOB, namespace, job["metadata"]["name"], owner=name)


def kept_after_deletion(ctx: Ctx, job: dict[str, Any], owner: str) -> dict[str, Any] | None:
    """A finished Job removed by its TTL before its end was recorded: its final state
    stays in the store, marked, until the TrainingJob's status records it; not when that
    TrainingJob is gone (the garbage collector deletes its Jobs after it)."""
    tj = ctx.store.get(KIND, job["metadata"]["namespace"], owner)
    if not job_finished(job) or not owned_by([job], (tj or {}).get("metadata", {}).get("uid")):
        return None
    return {**job, GONE: True}


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, namespace, name = key
    started = await begin(ctx, key, TrainingJobSpec, TrainingJobStatus())
    if started is None:
        return None
    body, spec, now = started
    prev = TrainingJobStatus.model_validate(body.get("status") or {})
    applied = computetemplate.for_training(
        ctx, spec, prev.compute, started=prev.job_name is not None, namespace=namespace
    )
    if applied.blocked is not None:
        return await computetemplate.hold(ctx, body, applied, TrainingJobStatus)
    # Only what this TrainingJob owns, by UID: a Job left by an earlier TrainingJob of
    # the same name (deleted and made again) is not its run.
    jobs = owned_by(ctx.store.owned(JOB, namespace, name), body["metadata"].get("uid"))
    pods = ctx.store.owned("Pod", namespace, name)
    observed = Observed(
        jobs=jobs,
        pods=[p for job in jobs for p in owned_by(pods, job["metadata"].get("uid"))],
        nodes=ctx.store.all("Node"),
        service_exists=ctx.store.get(SERVICE, namespace, service_name(name)) is not None,
    )
    decided = plan(applied.spec, body, observed, now)
    decided.status.compute = applied.template
    decided.requeue(
        await trainingprogress.observe(key, applied.spec, decided.status, prev, observed.pods)
    )
    decided.conds += computetemplate.conditions(applied)
    return await execute(ctx, body, decided)


def _dependents(ctx: Ctx, kind: str, obj: dict[str, Any]) -> list[Key]:
    """Runs that take a template that changed (named, or the default)."""
    if kind != computetemplate.KIND:
        return []
    return computetemplate.takers(ctx, KIND, obj["metadata"]["name"])


def _waiting_for_capacity(ctx: Ctx) -> list[Key]:
    return [
        (KIND, tj["metadata"]["namespace"], tj["metadata"]["name"])
        for tj in ctx.store.all(KIND)
        if (tj.get("status") or {}).get("phase") in (c.PENDING, None)
    ]


def _forget(ctx: Ctx, key: Key) -> None:
    forget_gone_jobs(ctx, key[1], key[2])
    trainingprogress.forget(key)


CONTROLLER = Controller(
    kind=KIND,
    plural="trainingjobs",
    reconcile=reconcile,
    children=(
        ChildWatch(
            "batch", "v1", "jobs", "Job", JOB, TRAINING_JOB_LABEL, keep_deleted=kept_after_deletion
        ),
        ChildWatch("", "v1", "pods", "Pod", "Pod", TRAINING_JOB_LABEL, slim=slim_pod),
        ChildWatch("", "v1", "services", "Service", SERVICE, TRAINING_JOB_LABEL),
    ),
    dependents=_dependents,
    on_capacity=_waiting_for_capacity,
    forget=_forget,
)
