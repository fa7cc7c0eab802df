"""TrainingJob reconcile: one Indexed Job per attempt, gang restarts, truthful status.

`plan()` is pure: from the spec, the previous status and the observed children it
decides the whole new status and the actions. `reconcile()` only executes the plan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus, WorkerCounts
from kubeloop.controllers import computetemplate, trainingprogress
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
    status_wait,
    transition_event,
    write_status,
)
from kubeloop.controllers.k8sread import (
    exit_text,
    job_condition,
    job_finished,
    owned_by,
    scheduler_message,
    terminated,
)
from kubeloop.controllers.runtime import Key, Result
from kubeloop.kube import KubeError
from kubeloop.names import COMPLETION_INDEX_ANNOTATION, SPEC_HASH_ANNOTATION
from kubeloop.render.fit import explain_never_fits, worker_demand
from kubeloop.render.trainingjob import (
    WORKER_CONTAINER,
    job_name,
    needs_service,
    pod_template,
    render_job,
    render_service,
    service_name,
)

KIND = "TrainingJob"
# How long a failed Job's decision waits for its failed pod to be seen.
POD_REPORT_GRACE = 10.0
SERVICE = "TrainingJob/Service"
JOB = "Job"
# Marks the final state of a finished Job that is already deleted (TTL), in the store.
GONE = "kubeloopGone"


def forget_gone_jobs(ctx: Ctx, namespace: str, name: str) -> None:
    for job in ctx.store.owned(JOB, namespace, name):
        if job.get(GONE):
            ctx.store.remove(JOB, namespace, job["metadata"]["name"], owner=name)


def keep_after_deletion(store_kind: str, obj: dict[str, Any], owner: dict[str, Any] | None) -> bool:
    """A finished Job's last state is kept until the TrainingJob has recorded it; not
    when that TrainingJob is gone (the garbage collector deletes its Jobs after it)."""
    return (
        store_kind == JOB
        and bool(job_finished(obj))
        and bool(owned_by([obj], (owner or {}).get("metadata", {}).get("uid")))
    )


TERMINAL = {c.SUCCEEDED, c.FAILED}


@dataclass
class Observed:
    jobs: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    service_exists: bool


@dataclass
class Plan:
    status: TrainingJobStatus
    conds: list[c.Cond]
    create_job: bool = False
    create_service: bool = False
    delete_jobs: list[dict[str, Any]] = field(default_factory=list)
    set_suspend: bool | None = None
    # Write the status before deleting anything, so that a crash between the two
    # cannot lose the restart count.
    status_first: bool = False
    requeue_after: float | None = None


def _pod_index(pod: dict[str, Any]) -> str:
    annotations = pod.get("metadata", {}).get("annotations", {}) or {}
    return str(annotations.get(COMPLETION_INDEX_ANNOTATION, "?"))


def failure_message(pods: list[dict[str, Any]]) -> str:
    """`worker 1 failed: exit code 3 (Error): <message>` for the first failed worker."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return "a worker failed"
    failed.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), _pod_index(p)))
    pod = failed[0]
    term = terminated(pod, WORKER_CONTAINER)
    text = f"worker {_pod_index(pod)} failed"
    if term:
        text += f": {exit_text(term)}"
    else:
        reason = (pod.get("status") or {}).get("reason") or ""
        message = (pod.get("status") or {}).get("message") or ""
        if reason or message:
            text += f": {reason} {message}".rstrip()
    return text


def _pod_phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get(
        "deletionTimestamp"
    )


def worker_counts(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> WorkerCounts:
    status = (job or {}).get("status") or {}
    return WorkerCounts(
        active=int(status.get("active", 0) or 0),
        ready=int(status.get("ready", 0) or 0),
        succeeded=int(status.get("succeeded", 0) or 0),
        failed=int(status.get("failed", 0) or 0),
    )


def plan(
    spec: TrainingJobSpec,
    body: dict[str, Any],
    observed: Observed,
    now: dt.datetime,
) -> Plan:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    prev = TrainingJobStatus.model_validate(body.get("status") or {})
    restarts = prev.restarts
    current_name = job_name(name, restarts)
    job = next((j for j in observed.jobs if j["metadata"]["name"] == current_name), None)
    stale = [j for j in observed.jobs if j["metadata"]["name"] != current_name]
    pods = [
        p for p in observed.pods if p["metadata"].get("labels", {}).get("job-name") == current_name
    ]
    queue = spec.scheduling.queue_name if spec.scheduling else None

    status = TrainingJobStatus(
        restarts=restarts,
        attempt=restarts,
        job_name=current_name,
        start_time=prev.start_time,
        completion_time=prev.completion_time,
        model_uri=prev.model_uri,
        workers=worker_counts(job, pods),
    )
    result = Plan(
        status=status,
        conds=[],
        create_service=needs_service(spec) and not observed.service_exists,
    )
    result.delete_jobs = [j for j in stale if not j["metadata"].get("deletionTimestamp")]

    def finish(
        phase: str,
        reason: str,
        message: str,
        ready: bool | None,
        reconciling: bool = False,
        stalled: bool = False,
    ) -> Plan:
        status.phase = phase
        status.message = message
        conds = [c.Cond(c.READY, ready, reason, message)]
        if reconciling:
            conds.append(c.Cond(c.RECONCILING, True, reason, message))
        if stalled:
            conds.append(c.Cond(c.STALLED, True, reason, message))
        result.conds = conds + result.conds
        return result

    # A finished run stays finished; only make sure nothing keeps running.
    if prev.phase in TERMINAL:
        if (
            job is not None
            and not job_condition(job, "Complete")
            and not job_condition(job, "Failed")
            and not job["metadata"].get("deletionTimestamp")
        ):
            result.delete_jobs.append(job)
        if job is None and prev.workers is not None:
            status.workers = prev.workers  # The Job may be gone (TTL); its counts stay.
        ready = prev.phase == c.SUCCEEDED
        reason = next((cd.reason for cd in prev.conditions if cd.type == c.READY), prev.phase or "")
        return finish(prev.phase or "", reason, prev.message or "", ready, stalled=not ready)

    if job is not None and job["status"].get("startTime") and not status.start_time:
        status.start_time = job["status"]["startTime"]

    # The deadline covers the whole run, across gang restarts.
    started = parse_time(status.start_time)
    if spec.active_deadline_seconds is not None and started is not None:
        remaining = spec.active_deadline_seconds - (now - started).total_seconds()
        if remaining <= 0 or (job is not None and _deadline_failed(job)):
            if job is not None and not job["metadata"].get("deletionTimestamp"):
                result.delete_jobs.append(job)
            status.completion_time = rfc3339(now)
            result.status_first = True
            return finish(
                c.FAILED,
                c.DEADLINE_EXCEEDED,
                f"the run exceeded activeDeadlineSeconds={spec.active_deadline_seconds}",
                False,
                stalled=True,
            )
        result.requeue_after = remaining

    template = pod_template(spec, name, namespace, restarts)
    container = template["spec"]["containers"][0]
    never_fits = explain_never_fits(
        worker_demand(
            container.get("resources", {}),
            template["spec"].get("nodeSelector", {}),
            template["spec"].get("tolerations", []),
        ),
        observed.nodes,
    )

    if job is None:
        result.create_job = True
        if never_fits:
            result.conds.append(c.Cond(c.SCHEDULED, False, c.UNSCHEDULABLE, never_fits))
            return finish(c.PENDING, c.UNSCHEDULABLE, never_fits, False, stalled=True)
        if spec.suspend:
            return finish(c.SUSPENDED, c.SUSPENDED, "suspended by spec.suspend", True)
        if queue:
            return finish(
                c.QUEUED,
                c.QUEUED,
                f"waiting for admission by Kueue queue {queue}",
                False,
                reconciling=True,
            )
        return finish(c.PENDING, c.PENDING, f"creating Job {current_name}", False, reconciling=True)

    complete = job_condition(job, "Complete")
    failed = job_condition(job, "Failed")
    if job["metadata"].get("deletionTimestamp") and not (complete or failed):
        return finish(
            c.RESTARTING if restarts else c.PENDING,
            c.PROGRESSING,
            f"waiting for Job {current_name} to be deleted",
            False,
            reconciling=True,
        )
    if complete:
        status.completion_time = (job.get("status") or {}).get("completionTime") or rfc3339(now)
        status.model_uri = spec.output.uri if spec.output else None
        message = f"all {spec.workers} workers succeeded"
        if status.model_uri:
            message += f"; model at {status.model_uri}"
        return finish(c.SUCCEEDED, c.SUCCEEDED, message, True)
    if failed:
        since = parse_time(failed.get("lastTransitionTime"))
        seen_failure = any(_pod_phase(p) == "Failed" for p in pods)
        if (
            not seen_failure
            and failed.get("reason") != "DeadlineExceeded"
            and since is not None
            and (now - since).total_seconds() < POD_REPORT_GRACE
        ):
            # The Job failed but its failed pod has not reached us yet (e.g. right after
            # an operator restart): wait for it, so that the exit code is not lost.
            result.requeue_after = 1.0
            return finish(
                prev.phase or c.RUNNING,
                c.PROGRESSING,
                "a worker failed; reading its exit code",
                False,
                reconciling=True,
            )
        why = failure_message(pods)
        if failed.get("reason") == "DeadlineExceeded":
            status.completion_time = rfc3339(now)
            return finish(
                c.FAILED,
                c.DEADLINE_EXCEEDED,
                f"attempt {restarts} exceeded its deadline",
                False,
                stalled=True,
            )
        if restarts < spec.max_restarts:
            status.restarts = restarts + 1
            status.attempt = restarts + 1
            status.job_name = job_name(name, restarts + 1)
            status.workers = WorkerCounts()
            result.delete_jobs.append(job)
            result.status_first = True
            return finish(
                c.RESTARTING,
                c.RESTARTING,
                f"{why}; restarting all workers (restart {restarts + 1} of {spec.max_restarts})",
                False,
                reconciling=True,
            )
        status.completion_time = rfc3339(now)
        return finish(
            c.FAILED,
            c.BACKOFF_LIMIT_EXCEEDED,
            f"{why}; no restarts left (maxRestarts={spec.max_restarts})",
            False,
            stalled=True,
        )

    # The Job is live. Spec changes to the pod template need a new Job.
    want_hash = render_job(spec, name, namespace, restarts, {})["metadata"]["annotations"][
        SPEC_HASH_ANNOTATION
    ]
    have_hash = job["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION)
    if have_hash != want_hash:
        result.delete_jobs.append(job)
        return finish(
            c.PENDING,
            c.PROGRESSING,
            "the spec changed; replacing the Job of the current attempt",
            False,
            reconciling=True,
        )

    job_suspended = bool(job["spec"].get("suspend"))
    if spec.suspend:
        if not job_suspended:
            result.set_suspend = True
        return finish(c.SUSPENDED, c.SUSPENDED, "suspended by spec.suspend", True)
    if job_suspended:
        if queue:
            return finish(
                c.QUEUED,
                c.QUEUED,
                f"waiting for admission by Kueue queue {queue}",
                False,
                reconciling=True,
            )
        result.set_suspend = False
        return finish(c.PENDING, c.PROGRESSING, "resuming", False, reconciling=True)

    if never_fits:
        result.conds.append(c.Cond(c.SCHEDULED, False, c.UNSCHEDULABLE, never_fits))
        return finish(c.PENDING, c.UNSCHEDULABLE, never_fits, False, stalled=True)
    pending_msg = scheduler_message(pods)
    running = [p for p in pods if _is_running(p)]
    if pending_msg:
        result.conds.append(c.Cond(c.SCHEDULED, False, c.WAITING_FOR_SCHEDULER, pending_msg))
        message = f"{spec.workers - len(running)} of {spec.workers} workers pending: {pending_msg}"
        return finish(c.PENDING, c.WAITING_FOR_SCHEDULER, message, False, reconciling=True)
    started_pods = [p for p in pods if _pod_phase(p) in ("Running", "Succeeded", "Failed")]
    if running or started_pods:
        # Workers that already ended keep the attempt Running until the Job decides.
        result.conds.append(c.Cond(c.SCHEDULED, True, c.RUNNING, "all workers scheduled"))
        counts = status.workers or WorkerCounts()
        return finish(
            c.RUNNING,
            c.RUNNING,
            f"{len(running)} of {spec.workers} workers running, {counts.succeeded} succeeded,"
            f" {counts.failed} failed",
            True,
        )
    return finish(c.PENDING, c.PENDING, "waiting for workers to start", False, reconciling=True)


def _deadline_failed(job: dict[str, Any]) -> bool:
    failed = job_condition(job, "Failed")
    return bool(failed and failed.get("reason") == "DeadlineExceeded")


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, namespace, name = key
    started = await begin(ctx, key, TrainingJobSpec, TrainingJobStatus())
    if started is None:
        return None
    body, spec, now = started
    prev_status = TrainingJobStatus.model_validate(body.get("status") or {})
    applied = computetemplate.for_training(
        ctx, spec, prev_status.compute, started=prev_status.job_name is not None,
        namespace=namespace,
    )
    if applied.blocked is not None:
        return await computetemplate.hold(ctx, body, applied, TrainingJobStatus)
    spec = applied.spec

    # Only what this TrainingJob owns, by UID: a Job left by an earlier TrainingJob of
    # the same name (deleted and made again) is not its run.
    jobs = owned_by(ctx.store.owned("Job", namespace, name), body["metadata"].get("uid"))
    pods = ctx.store.owned("Pod", namespace, name)
    observed = Observed(
        jobs=jobs,
        pods=[p for job in jobs for p in owned_by(pods, job["metadata"].get("uid"))],
        nodes=ctx.store.all("Node"),
        service_exists=ctx.store.get(SERVICE, namespace, service_name(name)) is not None,
    )
    decided = plan(spec, body, observed, now)
    decided.status.compute = applied.template
    next_read = await trainingprogress.observe(
        key, spec, decided.status, prev_status, observed.pods
    )
    if next_read is not None:
        decided.requeue_after = min(decided.requeue_after or next_read, next_read)
    template_cond = computetemplate.condition(applied)
    if template_cond is not None:
        decided.conds.append(template_cond)
    new_status = finish_status(body, decided.status, decided.conds, rfc3339(now))
    owner = owner_reference(body)
    prev_phase = (body.get("status") or {}).get("phase")

    written = False
    if decided.status_first:
        written = await write_status(ctx, body, new_status)
    for job in decided.delete_jobs:
        if job.get(GONE):
            continue
        await ctx.kube.delete(
            "batch/v1",
            "Job",
            namespace,
            job["metadata"]["name"],
            uid=job["metadata"].get("uid"),
            propagation="Background",
        )
    try:
        if decided.create_service:
            svc = await ctx.kube.apply(render_service(spec, name, namespace, owner))
            ctx.store.put(SERVICE, svc, owner=name)
        if decided.create_job:
            created = await ctx.kube.apply(
                render_job(spec, name, namespace, decided.status.restarts, owner)
            )
            ctx.store.put("Job", created, owner=name)
    except KubeError as exc:
        if not refused(exc):
            raise
        await report_refused_child(ctx, body, TrainingJobStatus(), exc, now)
        return None
    if decided.set_suspend is not None:
        await ctx.kube.merge_patch(
            "batch/v1",
            "Job",
            namespace,
            job_name(name, decided.status.restarts),
            {"spec": {"suspend": decided.set_suspend}},
        )
    if not decided.status_first:
        wait = status_wait(ctx, body, new_status)
        if wait > 0:
            # Only counts or the message changed: write them a moment later, together
            # with whatever else changes meanwhile.
            return Result(requeue_after=min(wait, decided.requeue_after or wait))
        written = await write_status(ctx, body, new_status)
    if decided.status.phase in TERMINAL:
        forget_gone_jobs(ctx, namespace, name)
    # An Event per transition; the first Pending is the start, not a transition, unless
    # it already says something (Unschedulable).
    quiet_start = (
        prev_phase is None
        and decided.status.phase == c.PENDING
        and not any(cd.type == c.STALLED for cd in decided.conds)
    )
    if written and decided.status.phase != prev_phase and not quiet_start:
        await record_event(
            ctx,
            body,
            *transition_event(decided.status.phase, decided.status.message or "", decided.conds),
        )
    return Result(requeue_after=decided.requeue_after)
