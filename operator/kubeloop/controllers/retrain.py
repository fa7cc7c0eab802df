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
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from kubeloop import compute, metrics
from kubeloop import conditions as c
from kubeloop.api.computetemplate import AppliedTemplate, ComputeTemplateSpec
from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
    Evaluation,
    RetrainRecord,
)
from kubeloop.api.trainingjob import Scheduling
from kubeloop.controllers import computetemplate
from kubeloop.controllers.common import (
    Ctx,
    finish_status,
    log_forbidden,
    owner_reference,
    parse_time,
    refused,
    rfc3339,
    write_status,
)
from kubeloop.controllers.k8sread import (
    exit_text,
    job_finished,
    newest,
    owned_by,
    terminated,
    termination_message,
)
from kubeloop.kube import KubeError
from kubeloop.names import (
    API_VERSION,
    CHAMPION_ANNOTATION,
    MANAGED_BY,
    MONITOR_LABEL,
    PROMOTION_ANNOTATION,
)
from kubeloop.progress import MAX_MESSAGE_BYTES
from kubeloop.render import evaluation as render_eval

TJ_JOB = "Job"  # a TrainingJob's Jobs in the store (controllers/trainingjob.py)

KIND = "DriftMonitor"
MODEL_DEPLOYMENT = "ModelDeployment"
TRAINING_JOB = "TrainingJob"
EVAL_JOB = "DriftMonitor/Job"
EVAL_POD = "DriftMonitor/Pod"
# The one writer of a user's spec: promotion of a retrained model (onDrift.promote).
PROMOTER = "kubeloop-promoter"
MAX_RETRAINS_KEPT = 10
# How many taken retrain names a new retrain steps over before it uses one anyway.
MAX_NAMES_SKIPPED = 100
# How long a finished evaluation Job's verdict may take to reach us with its pod.
VERDICT_GRACE = 10.0

RUNNING = "Running"
EVALUATING = c.EVALUATING
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PROMOTED = "Promoted"
REJECTED = "Rejected"
ROLLING_OUT = "RollingOut"
ROLLED_BACK = "RolledBack"
SUPERSEDED = "Superseded"
EVALUATION_FAILED = c.EVALUATION_FAILED
IN_FLIGHT = frozenset({RUNNING, EVALUATING, ROLLING_OUT})

RETRAIN_ACCEPTED = c.RETRAIN_ACCEPTED

# When this process first saw an evaluation Job finished, for the verdict's grace.
# Keyed by (namespace, monitor, Job); a deleted monitor's entries go with it (forget).
_done_seen: dict[tuple[str, str, str], float] = {}

Events = list[tuple[str, str, str]]


@dataclass
class Loop:
    """What one reconcile of a monitor's loop reads and changes: the status (changed in
    place, written once by the caller) and the Events it collects."""

    ctx: Ctx
    spec: DriftMonitorSpec
    body: dict[str, Any]
    status: DriftMonitorStatus
    events: Events
    now: dt.datetime

    def parts(
        self,
    ) -> tuple[Ctx, DriftMonitorSpec, dict[str, Any], DriftMonitorStatus, Events, dt.datetime]:
        return self.ctx, self.spec, self.body, self.status, self.events, self.now


def retrain_name(monitor: str, number: int) -> str:
    return f"{monitor}-retrain-{number}"


def forget(namespace: str, monitor: str) -> None:
    """Drop what this process remembers of a deleted monitor's evaluations."""
    for key in [k for k in _done_seen if k[:2] == (namespace, monitor)]:
        del _done_seen[key]


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
    return None


def render_retrain(spec: DriftMonitorSpec, body: dict[str, Any], name: str) -> dict[str, Any]:
    assert spec.on_drift.retrain is not None
    template = spec.on_drift.retrain.template.dump()
    output = template.get("output") or {}
    if "uri" in output:
        output["uri"] = output["uri"].replace("{trainingJob}", name)
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": TRAINING_JOB,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**MANAGED_BY, MONITOR_LABEL: meta["name"]},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": template,
    }


def promotion_patch(
    target: dict[str, Any], uri: str, monitor: str, record: RetrainRecord
) -> dict[str, Any]:
    """Canary first when the deployment has canary settings, else the model itself; the
    annotation tells the deployment's history who made the change and on what scores."""
    spec = target.get("spec") or {}
    who: dict[str, Any] = {
        "uri": uri,
        "by": f"{KIND}/{monitor}",
        "trainingJob": record.training_job,
    }
    ev = record.evaluation
    if ev is not None and ev.passed:
        who["evaluation"] = {
            "metric": ev.metric,
            "champion": ev.champion,
            "challenger": ev.challenger,
        }
    model = {"uri": uri, "fromTrainingJob": None}
    patch: dict[str, Any] = {
        "metadata": {"annotations": {PROMOTION_ANNOTATION: json.dumps(who, sort_keys=True)}}
    }
    if (spec.get("canary") or {}).get("steps"):
        # A new analysis: a pause or an abort left on the last canary does not apply.
        patch["spec"] = {"canary": {"model": model, "paused": None, "abort": None}}
    elif spec.get("canary"):
        patch["spec"] = {"canary": {"model": model}}
    else:
        patch["spec"] = {"model": model}
    return patch


def retrain_blocked(
    spec: DriftMonitorSpec, status: DriftMonitorStatus, now: dt.datetime, cooldown: float
) -> str | None:
    """None when a retrain should start now; else what holds it back, for the message."""
    if spec.on_drift.retrain is None:
        return ""
    last = status.last_retrain
    if last is not None and last.result == RUNNING:
        return f"; retraining in {last.training_job}"
    if last is not None and last.result == EVALUATING and last.evaluation is not None:
        return f"; evaluating {last.training_job} in Job {last.evaluation.job}"
    if last is not None and last.result == ROLLING_OUT:
        return f"; {last.model_uri} rolls out as the canary of {spec.model_deployment}"
    if last is not None:
        # From the end of the last retrain: a long run or evaluation does not eat it.
        since = (now - (parse_time(last.finish_time or last.time) or now)).total_seconds()
        if since < cooldown:
            until = now + dt.timedelta(seconds=cooldown - since)
            return f"; retrain cooldown until {rfc3339(until)}"
    return None


async def start(
    ctx: Ctx,
    spec: DriftMonitorSpec,
    body: dict[str, Any],
    status: DriftMonitorStatus,
    events: Events,
    now: dt.datetime,
) -> str:
    """Create the next retrain; returns the words for the monitor's message."""
    loop = Loop(ctx, spec, body, status, events, now)
    number = status.retrain_count + 1
    job = retrain_name(body["metadata"]["name"], number)
    skipped: list[str] = []
    while (held := name_taken(ctx, body, job)) is not None and len(skipped) < MAX_NAMES_SKIPPED:
        # Left by an earlier monitor of this name (being garbage-collected, or orphaned),
        # or made by someone else: never adopted, the next number instead.
        skipped.append(held)
        number += 1
        job = retrain_name(body["metadata"]["name"], number)
    # Count it in status first: a crash before the create re-creates the same name.
    status.retrain_count = number
    status.last_retrain = RetrainRecord(training_job=job, time=rfc3339(now), result=RUNNING)
    await write_status(
        ctx,
        body,
        finish_status(
            body,
            status,
            [
                c.Cond(c.READY, True, c.RECONCILED, "retraining"),
                c.Cond(c.DRIFTED, True, c.DRIFT_DETECTED, "retraining"),
            ],
            rfc3339(now),
        ),
    )
    body = ctx.store.get(KIND, body["metadata"]["namespace"], body["metadata"]["name"]) or body
    if not await _create_retrain(loop, status.last_retrain):
        return f"; retrain {job} refused by the API server"
    metrics.RETRAINS.labels(body["metadata"]["namespace"], body["metadata"]["name"]).inc()
    taken = f" ({', '.join(skipped)} exists and is not this monitor's)" if skipped else ""
    events.append(("Normal", "RetrainStarted", f"created TrainingJob {job}{taken}"))
    return f"; retraining in {job}"


async def follow(
    ctx: Ctx,
    spec: DriftMonitorSpec,
    body: dict[str, Any],
    status: DriftMonitorStatus,
    events: Events,
    now: dt.datetime,
) -> float | None:
    """Move the latest retrain on (run → evaluation → promotion); returns when to look
    again if a verdict is on its way, else None."""
    loop = Loop(ctx, spec, body, status, events, now)
    last = status.last_retrain
    if last is None or last.result not in IN_FLIGHT:
        return None
    if last.result == RUNNING:
        await _follow_training(loop, last)
    if last.result == EVALUATING:
        return await _follow_evaluation(loop, last)
    if last.result == ROLLING_OUT:
        _follow_rollout(loop, last)
    return None


def _follow_rollout(loop: Loop, last: RetrainRecord) -> None:
    """The model is the canary of a ModelDeployment with steps: Promoted only once it
    passed every step, RolledBack when its analysis failed or it was aborted."""
    ctx, spec, body, status, events, now = loop.parts()
    target = ctx.store.get(MODEL_DEPLOYMENT, body["metadata"]["namespace"], spec.model_deployment)
    uri = last.model_uri
    md_spec = (target or {}).get("spec") or {}
    md_status = (target or {}).get("status") or {}
    canary = md_status.get("canary") or {}
    # The stable serves it, and no step is under way (Promoted, or Idle once spec.model
    # was brought to it).
    promoted = md_status.get("activeModelUri") == uri and canary.get("state") in (
        "Promoted",
        "Idle",
        None,
    )
    candidate = ((md_spec.get("canary") or {}).get("model") or {}).get("uri")
    steps = (md_spec.get("canary") or {}).get("steps")
    if candidate == uri and not steps:
        # The steps were removed: a fixed canary, promoted by hand, as without steps.
        promoted = True
    if promoted:
        message = f"ModelDeployment {spec.model_deployment} serves {uri}: it passed every step"
        events.append(("Normal", PROMOTED, message))
        _conclude(status, last, PROMOTED, now)
    elif target is None or candidate != uri:
        events.append(
            (
                "Warning",
                SUPERSEDED,
                f"{uri} is no longer the canary of ModelDeployment {spec.model_deployment}",
            )
        )
        _conclude(status, last, SUPERSEDED, now)
    elif canary.get("modelUri") == uri and canary.get("state") in ("RolledBack", "Aborted"):
        message = f"the canary {uri} was rolled back: {canary.get('message', '')}"
        events.append(("Warning", ROLLED_BACK, message))
        _conclude(status, last, ROLLED_BACK, now)


async def _follow_training(
    loop: Loop,
    last: RetrainRecord,
) -> None:
    ctx, spec, body, status, events, now = loop.parts()
    namespace = body["metadata"]["namespace"]
    tj = mine(ctx.store.get(TRAINING_JOB, namespace, last.training_job), body)
    if tj is None and last.created:
        tj = mine(
            await ctx.kube.get(API_VERSION, TRAINING_JOB, namespace, last.training_job),
            body,
        )
        if tj is None:
            # Created, and gone before it ended: someone deleted it to stop the retrain.
            events.append(
                (
                    "Warning",
                    "RetrainFailed",
                    f"TrainingJob {last.training_job} was deleted before it ended; not "
                    "created again, not promoted",
                )
            )
            _conclude(status, last, FAILED, now)
            return
    if tj is None:
        held = name_taken(ctx, body, last.training_job)
        if held is not None:
            message = f"{held} exists and is not this monitor's: not adopted, not promoted"
            events.append(("Warning", "RetrainFailed", message))
            _conclude(status, last, FAILED, now)
        elif spec.on_drift.retrain is not None:
            # Counted but not created (a crash in between): create it now.
            await _create_retrain(loop, last)
        return
    tj_status = tj.get("status") or {}
    phase = tj_status.get("phase")
    if phase == "Failed":
        events.append(
            (
                "Warning",
                "RetrainFailed",
                f"TrainingJob {last.training_job} failed: "
                f"{tj_status.get('message', '')}; not promoted",
            )
        )
        _conclude(status, last, FAILED, now)
    elif phase == "Succeeded":
        last.model_uri = tj_status.get("modelUri")
        if spec.on_drift.evaluate is not None and last.model_uri:
            await _start_evaluation(loop, last)
        else:
            await _promote(loop, last)


async def _create_retrain(
    loop: Loop,
    last: RetrainRecord,
) -> bool:
    """Apply the retrain's TrainingJob; a refusal (a quota, an invalid template) ends the
    retrain as Failed with the API server's words instead of retrying it forever."""
    ctx, spec, body, status, events, now = loop.parts()
    try:
        created = await ctx.kube.apply(render_retrain(spec, body, last.training_job))
    except KubeError as err:
        if not (refused(err) or err.status == 403):
            raise
        log_forbidden(err, f"retrain TrainingJob {last.training_job}")
        events.append(("Warning", "RetrainFailed", f"TrainingJob {last.training_job}: {err}"))
        _conclude(status, last, FAILED, now)
        return False
    # In the store at once: a reconcile before its watch event must not miss it.
    ctx.store.put(TRAINING_JOB, created)
    last.created = True
    return True


async def _start_evaluation(
    loop: Loop,
    last: RetrainRecord,
) -> None:
    ctx, spec, body, status, events, now = loop.parts()
    evaluate = spec.on_drift.evaluate
    assert evaluate is not None and last.model_uri is not None
    namespace = body["metadata"]["namespace"]
    target = ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment)
    champion = ((target or {}).get("status") or {}).get("activeModelUri")
    name = render_eval.job_name(last.training_job)
    existing = mine(ctx.store.get(EVAL_JOB, namespace, name), body)
    if existing is not None:
        # Created before a restart that lost the status write: its champion stands.
        annotations = existing["metadata"].get("annotations") or {}
        champion = annotations.get(CHAMPION_ANNOTATION) or None
    last.result = EVALUATING
    last.evaluation = Evaluation(job=name, metric=evaluate.metric, champion_uri=champion)
    if champion is not None and champion == last.model_uri:
        message = (
            f"the retrain wrote its model to {champion}, where the serving model is: put "
            "{trainingJob} in the template's output.uri so that each retrain has its own"
        )
        last.evaluation.passed, last.evaluation.reason = False, EVALUATION_FAILED
        last.evaluation.message = message
        events.append(("Warning", EVALUATION_FAILED, message))
        _conclude(status, last, EVALUATION_FAILED, now)
        return
    if not await _create_evaluation(loop, last):
        return
    against = f"the champion {champion}" if champion else "no champion (only the floor)"
    events.append(
        (
            "Normal",
            "EvaluationStarted",
            f"Job {name} scores {last.model_uri} against {against} on {evaluate.metric}",
        )
    )


async def _create_evaluation(
    loop: Loop,
    last: RetrainRecord,
) -> bool:
    """Create the Job unless it exists: the same name is created again after a crash.
    A refusal by the API server (a quota, a policy) ends the evaluation as failed."""
    ctx, spec, body, status, events, now = loop.parts()
    evaluate, ev = spec.on_drift.evaluate, last.evaluation
    assert evaluate is not None and ev is not None and last.model_uri is not None
    namespace = body["metadata"]["namespace"]
    existing = ctx.store.get(EVAL_JOB, namespace, ev.job)
    if existing is not None and mine(existing, body) is not None:
        return True
    if existing is not None:
        message = f"Job {ev.job} exists and is not this monitor's: not adopted"
        ev.passed, ev.reason, ev.message = False, EVALUATION_FAILED, message
        events.append(("Warning", EVALUATION_FAILED, f"evaluation Job {ev.job}: {message}"))
        _conclude(status, last, EVALUATION_FAILED, now)
        return False
    tj = mine(ctx.store.get(TRAINING_JOB, namespace, last.training_job), body)
    job = render_eval.render_job(
        evaluate,
        name=ev.job,
        namespace=namespace,
        monitor=body["metadata"]["name"],
        champion=ev.champion_uri,
        challenger=last.model_uri,
        image=ctx.config.image,
        owner=owner_reference(body, controller=False),
        fallback_scheduling=evaluation_scheduling(ctx, spec, tj),
    )
    try:
        created = await ctx.kube.apply(job)
    except KubeError as err:
        if not (refused(err) or err.status == 403):
            raise
        log_forbidden(err, f"evaluation Job {ev.job}")
        ev.passed, ev.reason, ev.message = False, EVALUATION_FAILED, str(err)
        events.append(("Warning", EVALUATION_FAILED, f"evaluation Job {ev.job}: {err}"))
        _conclude(status, last, EVALUATION_FAILED, now)
        return False
    ctx.store.put(EVAL_JOB, created, owner=body["metadata"]["name"])
    return True


async def _follow_evaluation(
    loop: Loop,
    last: RetrainRecord,
) -> float | None:
    ctx, spec, body, status, events, now = loop.parts()
    ev = last.evaluation
    assert ev is not None
    namespace = body["metadata"]["namespace"]
    if spec.on_drift.evaluate is None:
        # The gate was taken out of the spec meanwhile: no verdict, so no promotion.
        message = "onDrift.evaluate was removed during the evaluation; not promoted"
        ev.passed, ev.reason, ev.message = False, c.EVALUATION_CANCELLED, message
        events.append(("Warning", c.EVALUATION_CANCELLED, f"{last.model_uri}: {message}"))
        _conclude(status, last, SUCCEEDED, now)
        return None
    job = mine(ctx.store.get(EVAL_JOB, namespace, ev.job), body)
    if job is None:
        # Lost (a crash, or its TTL): the same Job again.
        await _create_evaluation(loop, last)
        return None
    done = job_finished(job)
    if done is None:
        return None
    monitor = body["metadata"]["name"]
    # Only a pod the Job owns (by its UID) speaks for it: a label is anyone's to copy.
    uid = job["metadata"].get("uid")
    pod = newest(owned_by(ctx.store.owned(EVAL_POD, namespace, monitor), uid))
    if not terminated(pod, render_eval.CONTAINER):
        # The pod's last state may not have reached the store yet (the watches of Jobs
        # and pods are separate streams): ask the API server.
        live = await ctx.kube.list("v1", "Pod", namespace, f"job-name={ev.job}")
        pod = newest(owned_by(live, uid)) or pod
    verdict = parse_verdict(termination_message(pod, render_eval.CONTAINER))
    seen = _done_seen.setdefault((namespace, monitor, ev.job), time.monotonic())
    if (
        verdict is None
        and not terminated(pod, render_eval.CONTAINER)
        and time.monotonic() - seen < VERDICT_GRACE
    ):
        return 1.0  # its pod, with the verdict, has not been seen ended yet
    _done_seen.pop((namespace, monitor, ev.job), None)
    if verdict is None or "error" in verdict:
        why = (verdict or {}).get("error") or _no_verdict(job, done, pod)
        ev.passed, ev.reason, ev.message = False, EVALUATION_FAILED, str(why)
        events.append(
            (
                "Warning",
                EVALUATION_FAILED,
                f"evaluation Job {ev.job} gave no verdict: {why}; {last.model_uri} is not promoted",
            )
        )
        _conclude(status, last, EVALUATION_FAILED, now)
        return None
    ev.champion, ev.challenger = verdict.get("champion"), verdict.get("challenger")
    ev.passed, ev.reason = bool(verdict["passed"]), str(verdict.get("reason") or "")
    ev.message = str(verdict.get("message") or "")
    if ev.passed:
        target = ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment)
        serving = ((target or {}).get("status") or {}).get("activeModelUri")
        if serving != ev.champion_uri:
            # The verdict is about a model that no longer serves: it does not apply.
            ev.passed, ev.reason = False, c.CHAMPION_CHANGED
            ev.message = (
                f"{ev.message}; but the deployment now serves {serving}, not the champion "
                f"{ev.champion_uri} it was scored against: not promoted"
            )
            events.append(("Warning", c.CHAMPION_CHANGED, f"{last.model_uri}: {ev.message}"))
            _conclude(status, last, SUCCEEDED, now)
            return None
        events.append(("Normal", "EvaluationPassed", f"{last.model_uri}: {ev.message}"))
        await _promote(loop, last)
        return None
    keeps = f"; {ev.champion_uri} keeps serving" if ev.champion_uri else ""
    events.append(
        (
            "Warning",
            REJECTED,
            f"{last.model_uri} rejected by the evaluation gate: {ev.message}{keeps}",
        )
    )
    _conclude(status, last, REJECTED, now)
    return None


async def _promote(
    loop: Loop,
    last: RetrainRecord,
) -> None:
    """Point the ModelDeployment at the new model when `promote` is set."""
    ctx, spec, body, status, events, now = loop.parts()
    namespace, monitor = body["metadata"]["namespace"], body["metadata"]["name"]
    target = ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment)
    uri = last.model_uri
    if not (spec.on_drift.promote and uri and target is not None):
        _conclude(status, last, SUCCEEDED, now)
        return
    patch = promotion_patch(target, uri, monitor, last)
    try:
        patched = await ctx.kube.merge_patch(
            API_VERSION,
            MODEL_DEPLOYMENT,
            namespace,
            spec.model_deployment,
            patch,
            field_manager=PROMOTER,
        )
    except KubeError as err:
        if not promotion_refused(err):
            # A lost connection, a timeout, a 5xx: the verdict stands and the status is
            # not written, so the next pass (with backoff) promotes again.
            raise
        log_forbidden(err, f"promotion of ModelDeployment {spec.model_deployment}")
        events.append(("Warning", "PromotionFailed", str(err)))
        _conclude(status, last, SUCCEEDED, now)
        return
    if patched.get("metadata"):
        # The next pass reads the patched spec, not the one from before (no false
        # "superseded" while the watch event is on its way).
        ctx.store.put(MODEL_DEPLOYMENT, patched)
    if ((target.get("spec") or {}).get("canary") or {}).get("steps"):
        events.append(
            (
                "Normal",
                ROLLING_OUT,
                f"{uri} is the canary of ModelDeployment {spec.model_deployment}: promoted "
                "once it passes every step",
            )
        )
        last.result = ROLLING_OUT
        return
    where = "as canary" if "canary" in patch["spec"] else "as the model"
    events.append(
        ("Normal", PROMOTED, f"ModelDeployment {spec.model_deployment} now serves {uri} {where}")
    )
    _conclude(status, last, PROMOTED, now)


def evaluation_scheduling(
    ctx: Ctx, spec: DriftMonitorSpec, tj: dict[str, Any] | None
) -> Scheduling | None:
    """Where the evaluation pod goes unless `evaluate.scheduling` says: where the
    retrain's pods went, i.e. its template's scheduling with its ComputeTemplate's
    placement (node selector, tolerations, priority class) applied: the template the
    run recorded, else the one it names (or the default) as it is now."""
    retrain = spec.on_drift.retrain
    if retrain is None:
        return None
    recorded = ((tj or {}).get("status") or {}).get("compute")
    if recorded:
        applied = AppliedTemplate.model_validate(recorded)
        name, template = applied.name, applied.spec
    else:
        chosen, obj = compute.choose(retrain.template.compute, computetemplate.templates(ctx))
        if chosen is None or obj is None:
            return retrain.template.scheduling
        name, template = chosen, ComputeTemplateSpec.model_validate(obj.get("spec") or {})
    merged, _ = compute.for_training(retrain.template.model_copy(deep=True), name, template)
    return merged.scheduling


def promotion_refused(err: KubeError) -> bool:
    """The API server said no to the promotion itself (an invalid change, RBAC, the
    deployment gone): final. Anything else passes, and the promotion is made again."""
    return refused(err) or err.status in (403, 404)


def _conclude(
    status: DriftMonitorStatus, last: RetrainRecord, result: str, now: dt.datetime
) -> None:
    """The retrain's final result, and its entry in the history (newest first)."""
    last.result = result
    last.finish_time = rfc3339(now)
    kept = [r for r in status.retrains if r.training_job != last.training_job]
    status.retrains = [last.model_copy(deep=True), *kept][:MAX_RETRAINS_KEPT]


def accepted_condition(status: DriftMonitorStatus) -> c.Cond | None:
    """`RetrainAccepted`: the evaluation gate's word on the latest retrain."""
    last = status.last_retrain
    ev = last.evaluation if last is not None else None
    if last is None or ev is None:
        return None
    if last.result == EVALUATING:
        return c.Cond(
            RETRAIN_ACCEPTED, None, EVALUATING, f"evaluating {last.model_uri} in Job {ev.job}"
        )
    if ev.passed is None:
        return None
    message = ev.message or ""
    if ev.reason not in (EVALUATION_FAILED, c.EVALUATION_CANCELLED):
        message = f"{ev.metric}: challenger {ev.challenger}, champion {ev.champion}; {message}"
    return c.Cond(RETRAIN_ACCEPTED, ev.passed, ev.reason or EVALUATION_FAILED, message)


def parse_verdict(text: str | None) -> dict[str, Any] | None:
    """The evaluation's termination message: a verdict with numeric scores, or an
    error. Anything else (empty, oversized, not JSON, missing fields) is None."""
    if not text or len(text.encode()) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("error"), str):
        return {"error": data["error"][:512]}
    challenger, champion = data.get("challenger"), data.get("champion")
    if not isinstance(challenger, int | float) or not _finite(challenger):
        return None
    if not (champion is None or _finite(champion)):
        return None
    if not isinstance(data.get("passed"), bool):
        return None
    return {
        "champion": None if champion is None else float(champion),
        "challenger": float(challenger),
        "passed": data["passed"],
        "reason": str(data.get("reason") or "")[:64],
        "message": str(data.get("message") or "")[:512],
    }


def _finite(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _no_verdict(job: dict[str, Any], done: dict[str, Any], pod: dict[str, Any] | None) -> str:
    """Why a finished evaluation gave nothing to read, in the cluster's own words."""
    term = terminated(pod, render_eval.CONTAINER)
    where = ""
    if pod is not None:
        node = (pod.get("spec") or {}).get("nodeName")
        where = f"pod {pod['metadata']['name']}" + (f" on node {node}" if node else "")
        where += f": {exit_text(term)}" if term else ": it never ran"
    if done.get("type") == "Complete":
        text = "the evaluation Job completed without a verdict in its termination message"
        return f"{text} ({where})" if where else text
    text = f"{done.get('reason', 'Failed')}: {done.get('message', 'the Job failed')}"
    return f"{text}; {where}" if where else text
