"""TrainingJob planners: pure, one per concern, from the spec, the previous status and
the observed children to the new status and the actions (an `execute.Plan`).

`plan()` asks them in turn; the first that decides the phase ends the pass:
`finished` (a run that ended stays so), `deadline` (activeDeadlineSeconds across
restarts), `no_job` (create the attempt's Job), `ended` (the Job completed or failed:
succeed, restart all workers, or fail), `replaced` (a spec change needs a new Job),
`suspension` (spec.suspend and Kueue), then `progress` (scheduling and running).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus, WorkerCounts
from kubeloop.controllers.common import owner_reference, parse_time, rfc3339
from kubeloop.controllers.execute import Child, Delete, Patch, Plan
from kubeloop.controllers.k8sread import job_finished, scheduler_message
from kubeloop.controllers.runverdict import TERMINAL, Verdict, job_end, stays_finished
from kubeloop.controllers.trainingjob_read import (
    deadline_failed,
    failure_message,
    is_running,
    pod_phase,
    worker_counts,
)
from kubeloop.names import SPEC_HASH_ANNOTATION
from kubeloop.render.fit import explain_never_fits, worker_demand
from kubeloop.render.trainingjob import (
    job_name,
    needs_service,
    pod_template,
    render_job,
    render_service,
)

# How long a failed Job's decision waits for its failed pod to be seen.
POD_REPORT_GRACE = 10.0
SERVICE = "TrainingJob/Service"
JOB = "Job"
# Marks the final state of a finished Job that is already deleted (TTL), in the store.
GONE = "kubeloopGone"
TJPlan = Plan[TrainingJobStatus]


@dataclass
class Observed:
    jobs: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    service_exists: bool


@dataclass
class Attempt:
    """The run's current attempt as observed: its Job (if any) and its pods."""

    spec: TrainingJobSpec
    name: str
    namespace: str
    prev: TrainingJobStatus
    restarts: int
    job_name: str
    job: dict[str, Any] | None
    stale: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    queue: str | None
    now: dt.datetime


def attempt(
    spec: TrainingJobSpec, body: dict[str, Any], observed: Observed, now: dt.datetime
) -> Attempt:
    meta = body["metadata"]
    prev = TrainingJobStatus.model_validate(body.get("status") or {})
    current = job_name(meta["name"], prev.restarts)
    return Attempt(
        spec=spec,
        name=meta["name"],
        namespace=meta["namespace"],
        prev=prev,
        restarts=prev.restarts,
        job_name=current,
        job=next((j for j in observed.jobs if j["metadata"]["name"] == current), None),
        stale=[j for j in observed.jobs if j["metadata"]["name"] != current],
        pods=[
            p for p in observed.pods if p["metadata"].get("labels", {}).get("job-name") == current
        ],
        queue=spec.scheduling.queue_name if spec.scheduling else None,
        now=now,
    )


def _deleting(job: dict[str, Any]) -> bool:
    return bool(job["metadata"].get("deletionTimestamp"))


def delete_job(job: dict[str, Any]) -> Delete:
    """This Job and no newer one of its name; its pods go with it."""
    meta = job["metadata"]
    return Delete("batch/v1", "Job", meta["name"], uid=meta.get("uid"))


def finished(att: Attempt, status: TrainingJobStatus, out: TJPlan) -> Verdict | None:
    """A finished run stays finished; only make sure nothing keeps running."""
    prev, job = att.prev, att.job
    verdict = stays_finished(prev)
    if verdict is None:
        return None
    if job is not None and not job_finished(job) and not _deleting(job):
        out.delete.append(delete_job(job))
    if job is None and prev.workers is not None:
        status.workers = prev.workers  # The Job may be gone (TTL); its counts stay.
    return verdict


def deadline(att: Attempt, status: TrainingJobStatus, out: TJPlan) -> Verdict | None:
    """activeDeadlineSeconds covers the whole run, across gang restarts."""
    limit, job = att.spec.active_deadline_seconds, att.job
    started = parse_time(status.start_time)
    if limit is None or started is None:
        return None
    remaining = limit - (att.now - started).total_seconds()
    if remaining > 0 and not (job is not None and deadline_failed(job)):
        out.requeue(remaining)
        return None
    if job is not None and not _deleting(job):
        out.delete.append(delete_job(job))
    status.completion_time = rfc3339(att.now)
    out.status_first = True
    message = f"the run exceeded activeDeadlineSeconds={limit}"
    return Verdict(c.FAILED, c.DEADLINE_EXCEEDED, message, False, stalled=True)


def never_fits(att: Attempt, nodes: list[dict[str, Any]]) -> str | None:
    """Why no node could ever run a worker, or None."""
    template = pod_template(att.spec, att.name, att.namespace, att.restarts)
    container = template["spec"]["containers"][0]
    return explain_never_fits(
        worker_demand(
            container.get("resources", {}),
            template["spec"].get("nodeSelector", {}),
            template["spec"].get("tolerations", []),
        ),
        nodes,
    )


def _unschedulable(why: str) -> Verdict:
    scheduled = c.Cond(c.SCHEDULED, False, c.UNSCHEDULABLE, why)
    return Verdict(c.PENDING, c.UNSCHEDULABLE, why, False, stalled=True, extra=(scheduled,))


def _queued(queue: str) -> Verdict:
    message = f"waiting for admission by Kueue queue {queue}"
    return Verdict(c.QUEUED, c.QUEUED, message, False, reconciling=True)


SUSPENDED = Verdict(c.SUSPENDED, c.SUSPENDED, "suspended by spec.suspend", True)


def no_job(att: Attempt, out: TJPlan, owner: dict[str, Any], unfit: str | None) -> Verdict | None:
    """The attempt has no Job yet: create it."""
    if att.job is not None:
        return None
    job = render_job(att.spec, att.name, att.namespace, att.restarts, owner)
    out.apply.append(Child(job, JOB))
    if unfit:
        return _unschedulable(unfit)
    if att.spec.suspend:
        return SUSPENDED
    if att.queue:
        return _queued(att.queue)
    message = f"creating Job {att.job_name}"
    return Verdict(c.PENDING, c.PENDING, message, False, reconciling=True)


def ended(att: Attempt, status: TrainingJobStatus, out: TJPlan) -> Verdict | None:
    """The Job is going, completed or failed."""
    job = att.job
    assert job is not None
    end = job_end(job, att.now)
    if _deleting(job) and end is None:
        phase = c.RESTARTING if att.restarts else c.PENDING
        message = f"waiting for Job {att.job_name} to be deleted"
        return Verdict(phase, c.PROGRESSING, message, False, reconciling=True)
    if end is not None and end.complete:
        status.completion_time = end.completion_time
        status.model_uri = att.spec.output.uri if att.spec.output else None
        message = f"all {att.spec.workers} workers succeeded"
        if status.model_uri:
            message += f"; model at {status.model_uri}"
        return Verdict(c.SUCCEEDED, c.SUCCEEDED, message, True)
    if end is not None and end.failed is not None:
        return job_failed(att, status, out, end.failed)
    return None


def job_failed(
    att: Attempt, status: TrainingJobStatus, out: TJPlan, failed: dict[str, Any]
) -> Verdict:
    """Restart all workers while restarts are left, else fail with the first exit."""
    spec, restarts = att.spec, att.restarts
    since = parse_time(failed.get("lastTransitionTime"))
    seen_failure = any(pod_phase(p) == "Failed" for p in att.pods)
    if (
        not seen_failure
        and failed.get("reason") != "DeadlineExceeded"
        and since is not None
        and (att.now - since).total_seconds() < POD_REPORT_GRACE
    ):
        # The Job failed but its failed pod has not reached us yet (e.g. right after
        # an operator restart): wait for it, so that the exit code is not lost.
        out.requeue_after = 1.0
        message = "a worker failed; reading its exit code"
        return Verdict(att.prev.phase or c.RUNNING, c.PROGRESSING, message, False, True)
    why = failure_message(att.pods)
    if failed.get("reason") == "DeadlineExceeded":
        status.completion_time = rfc3339(att.now)
        message = f"attempt {restarts} exceeded its deadline"
        return Verdict(c.FAILED, c.DEADLINE_EXCEEDED, message, False, stalled=True)
    if restarts < spec.max_restarts:
        status.restarts = status.attempt = restarts + 1
        status.job_name = job_name(att.name, restarts + 1)
        status.workers = WorkerCounts()
        assert att.job is not None
        out.delete.append(delete_job(att.job))
        out.status_first = True
        message = f"{why}; restarting all workers (restart {restarts + 1} of {spec.max_restarts})"
        return Verdict(c.RESTARTING, c.RESTARTING, message, False, reconciling=True)
    status.completion_time = rfc3339(att.now)
    message = f"{why}; no restarts left (maxRestarts={spec.max_restarts})"
    return Verdict(c.FAILED, c.BACKOFF_LIMIT_EXCEEDED, message, False, stalled=True)


def replaced(att: Attempt, out: TJPlan) -> Verdict | None:
    """The live Job runs an older pod template: replace it."""
    assert att.job is not None
    rendered = render_job(att.spec, att.name, att.namespace, att.restarts, {})
    want = rendered["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    if att.job["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION) == want:
        return None
    out.delete.append(delete_job(att.job))
    message = "the spec changed; replacing the Job of the current attempt"
    return Verdict(c.PENDING, c.PROGRESSING, message, False, reconciling=True)


def suspension(att: Attempt, out: TJPlan) -> Verdict | None:
    """spec.suspend, and a Job that Kueue has not admitted yet."""
    assert att.job is not None
    job_suspended = bool(att.job["spec"].get("suspend"))

    def set_suspend(value: bool) -> None:
        out.patch.append(Patch("batch/v1", "Job", att.job_name, {"spec": {"suspend": value}}))

    if att.spec.suspend:
        if not job_suspended:
            set_suspend(True)
        return SUSPENDED
    if not job_suspended:
        return None
    if att.queue:
        return _queued(att.queue)
    set_suspend(False)
    return Verdict(c.PENDING, c.PROGRESSING, "resuming", False, reconciling=True)


def progress(att: Attempt, status: TrainingJobStatus, unfit: str | None) -> Verdict:
    """A live Job: waiting for the scheduler, for the workers, or running."""
    workers = att.spec.workers
    if unfit:
        return _unschedulable(unfit)
    pending = scheduler_message(att.pods)
    running = [p for p in att.pods if is_running(p)]
    if pending:
        scheduled = c.Cond(c.SCHEDULED, False, c.WAITING_FOR_SCHEDULER, pending)
        message = f"{workers - len(running)} of {workers} workers pending: {pending}"
        return Verdict(c.PENDING, c.WAITING_FOR_SCHEDULER, message, False, True, extra=(scheduled,))
    started = [p for p in att.pods if pod_phase(p) in ("Running", "Succeeded", "Failed")]
    if running or started:
        # Workers that already ended keep the attempt Running until the Job decides.
        counts = status.workers or WorkerCounts()
        message = (
            f"{len(running)} of {workers} workers running, {counts.succeeded} succeeded,"
            f" {counts.failed} failed"
        )
        scheduled = c.Cond(c.SCHEDULED, True, c.RUNNING, "all workers scheduled")
        return Verdict(c.RUNNING, c.RUNNING, message, True, extra=(scheduled,))
    return Verdict(c.PENDING, c.PENDING, "waiting for workers to start", False, True)


def plan(
    spec: TrainingJobSpec, body: dict[str, Any], observed: Observed, now: dt.datetime
) -> TJPlan:
    att = attempt(spec, body, observed, now)
    prev = att.prev
    status = TrainingJobStatus(
        restarts=att.restarts,
        attempt=att.restarts,
        job_name=att.job_name,
        start_time=prev.start_time,
        completion_time=prev.completion_time,
        model_uri=prev.model_uri,
        workers=worker_counts(att.job),
    )
    # The first Pending is the start, not a transition, unless it says something.
    out = TJPlan(status=status, quiet_start=True)
    owner = owner_reference(body)
    if needs_service(spec) and not observed.service_exists:
        out.apply.append(Child(render_service(spec, att.name, att.namespace, owner), SERVICE))
    out.delete = [delete_job(j) for j in att.stale if not _deleting(j) and not j.get(GONE)]
    verdict = finished(att, status, out)
    if verdict is None:
        job = att.job
        if job is not None and job["status"].get("startTime") and not status.start_time:
            status.start_time = job["status"]["startTime"]
        verdict = deadline(att, status, out)
    if verdict is None:
        unfit = never_fits(att, observed.nodes)
        verdict = (
            no_job(att, out, owner, unfit)
            or ended(att, status, out)
            or replaced(att, out)
            or suspension(att, out)
            or progress(att, status, unfit)
        )
    out.delete = [d for d in out.delete if not _gone(observed, d.name)]
    status.phase, status.message = verdict.phase, verdict.message
    out.conds = verdict.conds()
    if status.phase in TERMINAL:
        # A finished Job's last state, kept after its deletion, has been recorded.
        out.forget = [(JOB, j["metadata"]["name"]) for j in observed.jobs if j.get(GONE)]
    return out


def _gone(observed: Observed, name: str) -> bool:
    """Already deleted (TTL): its last state is kept only until it is recorded."""
    return any(j["metadata"]["name"] == name and j.get(GONE) for j in observed.jobs)
