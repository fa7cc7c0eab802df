"""The closed loop of a DriftMonitor: retrain, evaluate, promote.

On drift the monitor creates one TrainingJob from its template (its name comes from a
counter kept in status, so a restart never creates two). When the run succeeds:

- without `onDrift.evaluate`, its model is promoted when `promote` is set;
- with it, an evaluation Job scores the serving model (the champion) and the new one
  (the challenger) on the same labelled data and writes its verdict to its termination
  message; only a challenger that passes is promoted. A worse one is `Rejected`, an
  evaluation that cannot run is `EvaluationFailed`; in both cases the champion keeps
  serving and the cooldown still applies.

Each retrain that ends is kept, newest first, in `status.retrains` (the last 10).

This module gathers what a step reads (`observe`: the store, by owner UID, and the API
server where the store may lag) and turns what it asks for into a Plan that
controllers/execute.py carries out (`plan`); the state machine itself is the pure
controllers/retrain_step.py, the objects it writes controllers/retrain_render.py, the
verdict controllers/retrain_verdict.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from kubeloop import compute
from kubeloop import conditions as c
from kubeloop.api.computetemplate import AppliedTemplate, ComputeTemplateSpec
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from kubeloop.api.trainingjob import Scheduling
from kubeloop.controllers import computetemplate
from kubeloop.controllers.common import Ctx
from kubeloop.controllers.execute import Child, Patch, Plan
from kubeloop.controllers.k8sread import job_finished, newest, owned_by, terminated
from kubeloop.controllers.retrain_actions import (
    EVALUATING,
    EVALUATION_FAILED,
    IN_FLIGHT,
    PROMOTED,
    REJECTED,
    RUNNING,
    Actions,
    Observed,
)
from kubeloop.controllers.retrain_render import (
    EVAL_JOB,
    EVAL_POD,
    EXPERIMENT,
    KIND,
    MODEL_DEPLOYMENT,
    PROMOTER,
    TJ_JOB,
    TRAINING_JOB,
    promotion_patch,
    retrain_name,
    training_template,
)
from kubeloop.controllers.retrain_step import step
from kubeloop.controllers.retrain_verdict import (
    RETRAIN_ACCEPTED,
    accepted_condition,
    parse_verdict,
    promotion_refused,
    retrain_blocked,
)
from kubeloop.controllers.servingpods import endpoints, live_rows_urls
from kubeloop.kube import KubeError
from kubeloop.names import API_VERSION
from kubeloop.render import evaluation as render_eval

__all__ = [
    "EVALUATING",
    "EVALUATION_FAILED",
    "EVAL_JOB",
    "EVAL_POD",
    "EXPERIMENT",
    "KIND",
    "MODEL_DEPLOYMENT",
    "PROMOTED",
    "PROMOTER",
    "REJECTED",
    "RETRAIN_ACCEPTED",
    "TJ_JOB",
    "TRAINING_JOB",
    "Actions",
    "accepted_condition",
    "advance",
    "evaluation_scheduling",
    "mine",
    "name_taken",
    "observe",
    "parse_verdict",
    "plan",
    "promotion_patch",
    "promotion_refused",
    "retrain_blocked",
]

# How many taken retrain names a new retrain steps over before it uses one anyway.
MAX_NAMES_SKIPPED = 100


def mine(obj: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any] | None:
    """The object when this monitor owns it (by UID), else None: a monitor deleted and
    made again under the same name must not take the old one's retrain for its own."""
    if obj is None or not owned_by([obj], body["metadata"].get("uid")):
        return None
    return obj


def name_taken(ctx: Ctx, body: dict[str, Any], name: str) -> str | None:
    """What holds a retrain's name that this monitor does not own: its TrainingJob, a
    Job left by an earlier TrainingJob of that name, or its evaluation Job. None when
    the name is free."""
    namespace = body["metadata"]["namespace"]
    tj = ctx.store.get(TRAINING_JOB, namespace, name)
    if tj is not None and mine(tj, body) is None:
        return f"TrainingJob {name}"
    leftovers = ctx.store.owned(TJ_JOB, namespace, name)
    if leftovers and tj is None:
        return f"Job {leftovers[0]['metadata']['name']} of an earlier TrainingJob {name}"
    evaluation = ctx.store.get(EVAL_JOB, namespace, render_eval.job_name(name))
    if evaluation is not None and mine(evaluation, body) is None:
        return f"evaluation Job {evaluation['metadata']['name']}"
    search = ctx.store.get(EXPERIMENT, namespace, name)
    if search is not None and mine(search, body) is None:
        return f"Experiment {name}"
    return None


def evaluation_scheduling(
    ctx: Ctx, spec: DriftMonitorSpec, tj: dict[str, Any] | None
) -> Scheduling | None:
    """Where the evaluation pod goes unless `evaluate.scheduling` says: where the
    retrain's pods went, i.e. its template's scheduling with its ComputeTemplate's
    placement (node selector, tolerations, priority class) applied: the template the
    run recorded, else the one it names (or the default) as it is now."""
    template = training_template(spec)
    if template is None:
        return None
    recorded = ((tj or {}).get("status") or {}).get("compute")
    if recorded:
        applied = AppliedTemplate.model_validate(recorded)
        name, applied_spec = applied.name, applied.spec
    else:
        chosen, obj = compute.choose(template.compute, computetemplate.templates(ctx))
        if chosen is None or obj is None:
            return template.scheduling
        name, applied_spec = chosen, ComputeTemplateSpec.model_validate(obj.get("spec") or {})
    merged, _ = compute.for_training(template.model_copy(deep=True), name, applied_spec)
    return merged.scheduling


async def observe(
    ctx: Ctx,
    body: dict[str, Any],
    spec: DriftMonitorSpec,
    status: DriftMonitorStatus,
    now: dt.datetime,
    wants_retrain: bool = False,
) -> Observed:
    """What the next step reads: the monitor's own children only (by UID)."""
    meta = body["metadata"]
    namespace, monitor = meta["namespace"], meta["name"]
    obs = Observed(
        monitor=body,
        spec=spec,
        now=now,
        image=ctx.config.image,
        target=ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment),
        wants_retrain=wants_retrain,
    )
    evaluate = spec.on_drift.evaluate
    if evaluate is not None and evaluate.live is not None and obs.target is not None:
        found = endpoints(ctx, spec, namespace, obs.target)
        obs.live_rows = live_rows_urls(found, spec.model_deployment)
    last = status.last_retrain
    if last is None or last.result not in IN_FLIGHT:
        if wants_retrain:
            number = status.retrain_count + 1
            name = retrain_name(monitor, number)
            while (held := name_taken(ctx, body, name)) and len(obs.skipped) < MAX_NAMES_SKIPPED:
                # Left by an earlier monitor of this name (being garbage-collected, or
                # orphaned), or made by someone else: never adopted, the next number.
                obs.skipped.append(held)
                number += 1
                name = retrain_name(monitor, number)
            obs.next_number, obs.next_name = number, name
        return obs
    if last.experiment is not None and last.result == RUNNING:
        await _observe_search(ctx, body, last.experiment, last.created, obs)
        return obs
    tj = mine(ctx.store.get(TRAINING_JOB, namespace, last.training_job), body)
    if tj is None and last.created and last.result == RUNNING:
        # Not in the store: deleted, or not seen yet. The API server knows.
        tj = mine(await ctx.kube.get(API_VERSION, TRAINING_JOB, namespace, last.training_job), body)
        obs.gone = tj is None
    obs.training_job = tj
    if tj is None:
        obs.taken = name_taken(ctx, body, last.training_job)
    evaluation = last.evaluation.job if last.evaluation else render_eval.job_name(last.training_job)
    existing = ctx.store.get(EVAL_JOB, namespace, evaluation)
    obs.evaluation_job = mine(existing, body)
    obs.evaluation_taken = existing is not None and obs.evaluation_job is None
    obs.evaluation_scheduling = evaluation_scheduling(ctx, spec, tj)
    job = obs.evaluation_job
    if job is not None and last.result == EVALUATING and job_finished(job):
        # Only a pod the Job owns (by its UID) speaks for it: a label is anyone's to copy.
        uid = job["metadata"].get("uid")
        pod = newest(owned_by(ctx.store.owned(EVAL_POD, namespace, monitor), uid))
        if not terminated(pod, render_eval.CONTAINER):
            # The pod's last state may not have reached the store yet (the watches of
            # Jobs and pods are separate streams): ask the API server.
            live = await ctx.kube.list("v1", "Pod", namespace, f"job-name={evaluation}")
            pod = newest(owned_by(live, uid)) or pod
        obs.evaluation_pod = pod
    return obs


async def _observe_search(
    ctx: Ctx, body: dict[str, Any], name: str, created: bool | None, obs: Observed
) -> None:
    """A retrain that is a search, while it runs: its Experiment (ours, by UID)."""
    namespace = body["metadata"]["namespace"]
    search = mine(ctx.store.get(EXPERIMENT, namespace, name), body)
    if search is None and created:
        search = mine(await ctx.kube.get(API_VERSION, EXPERIMENT, namespace, name), body)
        obs.gone = search is None
    obs.experiment = search
    if search is None:
        obs.taken = name_taken(ctx, body, name)
        return
    best = ((search.get("status") or {}).get("bestTrial") or {}).get("name")
    if best:
        # Its evaluation Job, made before a restart that lost the status write.
        obs.evaluation_job = mine(
            ctx.store.get(EVAL_JOB, namespace, render_eval.job_name(str(best))), body
        )


async def advance(
    ctx: Ctx,
    body: dict[str, Any],
    spec: DriftMonitorSpec,
    status: DriftMonitorStatus,
    now: dt.datetime,
    wants_retrain: bool = False,
) -> tuple[DriftMonitorStatus, Actions]:
    """One step of the loop: observe, then the pure step."""
    return step(status, await observe(ctx, body, spec, status, now, wants_retrain))


def plan(
    status: DriftMonitorStatus, conds: list[c.Cond], acts: Actions
) -> Plan[DriftMonitorStatus]:
    """The step's actions as a Plan for controllers/execute.py: the creates (the
    evaluation Job indexed under the monitor), the promotion patch (kept in the store,
    so that the next pass reads the patched spec, not a false "superseded"), the Events,
    and the status first when a retrain was counted (a crash before its create makes
    the same name again, never a second one). A refusal ends the retrain as the step
    said (its `on_refused` changes `status`); any other error raises, nothing is
    written, and the work queue takes the step again with backoff."""
    started = status.last_retrain.training_job if acts.started and status.last_retrain else None

    def refused_start(on_refused: Callable[[KubeError], bool]) -> Callable[[KubeError], bool]:
        def handle(err: KubeError) -> bool:
            if not on_refused(err):
                return False
            refused = f"; retrain {started} refused by the API server"
            status.message = (status.message or "").replace(f"; retraining in {started}", refused)
            return True

        return handle

    out = Plan(status=status, conds=conds, events=acts.events, status_first=acts.status_first)
    out.requeue(acts.requeue_after)
    for create in acts.creates:
        is_start = (
            create.obj["kind"] in (TRAINING_JOB, EXPERIMENT)
            and create.obj["metadata"]["name"] == started
        )
        out.apply.append(
            Child(
                create.obj,
                create.store_kind,
                owned=create.store_kind == EVAL_JOB,
                on_refused=refused_start(create.on_refused) if is_start else create.on_refused,
            )
        )
    if acts.promote is not None:
        out.patch.append(
            Patch(
                API_VERSION,
                MODEL_DEPLOYMENT,
                acts.promote.name,
                acts.promote.patch,
                field_manager=acts.promote.field_manager,
                store_kind=MODEL_DEPLOYMENT,
                on_refused=acts.promote.on_refused,
            )
        )
    return out
