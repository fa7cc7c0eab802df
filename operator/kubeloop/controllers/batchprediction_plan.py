"""BatchPrediction planners: pure, from the spec, the previous status, the resolved
model and the observed Job and pods to the new status and the actions (a `Plan`).

In turn: `finished` (a run that ended stays so), `waiting` (the model is not known yet:
the TrainingJob has not succeeded, the ModelDeployment serves nothing), `no_job`
(record the model and create the Job), `ended` (the Job completed or failed), then
`running`. The model is resolved once, when the run starts, and recorded in
`status.model`: a ModelDeployment that moves on later does not change the run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubeloop import conditions as c
from kubeloop.api.batchprediction import (
    BatchDrift,
    BatchOutputStatus,
    BatchPredictionModelStatus,
    BatchPredictionSpec,
    BatchPredictionStatus,
    BatchProgress,
    ShardResult,
)
from kubeloop.batch import report as batch_report
from kubeloop.controllers.common import rfc3339
from kubeloop.controllers.execute import Child, Plan
from kubeloop.controllers.k8sread import (
    exit_text,
    message_tail,
    scheduler_message,
    terminated,
)
from kubeloop.controllers.modeldeployment_resolve import FINAL_REASONS, from_experiment
from kubeloop.controllers.runverdict import TERMINAL, Verdict, job_end, stays_finished
from kubeloop.names import COMPLETION_INDEX_ANNOTATION
from kubeloop.progress import parse_final
from kubeloop.render.batchprediction import (
    FETCH_CONTAINER,
    SCORER_CONTAINER,
    job_name,
    render_job,
)

JOB = "BatchPrediction/Job"
POD = "BatchPrediction/Pod"
BPPlan = Plan[BatchPredictionStatus]
# Words of the data plane's errors (kubeloop/batch) that name a cause users look for,
# most specific first: a model or a column that is missing is also "no such file".
FETCH_FAILED = "fetching the model"
CAUSES = (
    (c.OUTPUT_EXISTS, (batch_report.OUTPUT_EXISTS,)),
    (c.MODEL_MISSING, (FETCH_FAILED, batch_report.MODEL_UNUSABLE)),
    (c.COLUMNS_MISSING, (batch_report.COLUMNS_MISSING,)),
    (c.INPUT_MISSING, ("no such file or directory", "no file matches", "no .csv or .parquet")),
)


@dataclass(frozen=True)
class ModelChoice:
    """The model a run would start with now, or why there is none yet."""

    uri: str | None
    source: str
    reason: str = c.RESOLVED
    message: str = ""
    final: bool = False  # it will never come (a failed TrainingJob)


@dataclass
class Observed:
    job: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)


def choose_model(
    spec: BatchPredictionSpec,
    namespace: str,
    training_job: dict[str, Any] | None,
    deployment: dict[str, Any] | None,
    experiment: dict[str, Any] | None = None,
) -> ModelChoice:
    """The model of `spec.model` as it is now (pure: the caller looks the references up;
    `training_job` is a pinned trial's with fromExperiment)."""
    source = spec.model
    if source.uri:
        return ModelChoice(source.uri, "uri", message=f"model {source.uri}")
    if source.from_experiment is not None:
        ref = source.from_experiment
        jobs = {ref.trial: training_job} if ref.trial and training_job else {}
        got = from_experiment(ref, namespace, jobs, {ref.name: experiment} if experiment else {})
        trial = f" trial {got.training_job}" if got.training_job else ""
        where = f"Experiment/{ref.name}{trial}"
        return ModelChoice(got.uri, where, got.reason, got.message, got.reason in FINAL_REASONS)
    if source.from_training_job is not None:
        name = source.from_training_job.name
        where = f"TrainingJob/{name}"
        if training_job is None:
            message = f"waiting for TrainingJob {namespace}/{name}: it does not exist"
            return ModelChoice(None, where, c.TRAINING_JOB_NOT_FOUND, message)
        status = training_job.get("status") or {}
        phase = status.get("phase") or c.PENDING
        if phase == c.FAILED:
            message = f"TrainingJob {name} failed: {status.get('message', '')}"
            return ModelChoice(None, where, c.TRAINING_JOB_FAILED, message, final=True)
        if phase != c.SUCCEEDED or not status.get("modelUri"):
            message = f"waiting for TrainingJob {name} to succeed (phase {phase})"
            return ModelChoice(None, where, c.TRAINING_JOB_NOT_SUCCEEDED, message)
        uri = str(status["modelUri"])
        return ModelChoice(uri, where, message=f"model {uri} from TrainingJob {name}")
    assert source.from_model_deployment is not None
    name = source.from_model_deployment.name
    where = f"ModelDeployment/{name}"
    if deployment is None:
        message = f"waiting for ModelDeployment {namespace}/{name}: it does not exist"
        return ModelChoice(None, where, c.MODEL_DEPLOYMENT_NOT_FOUND, message)
    active = (deployment.get("status") or {}).get("activeModelUri")
    if not active:
        message = f"waiting for ModelDeployment {name} to serve a model (no activeModelUri yet)"
        return ModelChoice(None, where, c.MODEL_NOT_SERVED, message)
    uri = str(active)
    return ModelChoice(uri, where, message=f"model {uri} served by ModelDeployment {name}")


def _index(pod: dict[str, Any]) -> int | None:
    raw = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    return int(raw) if raw is not None and raw.isdigit() else None


def latest_per_index(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The newest pod of each completion index (a retried index has several)."""
    out: dict[int, dict[str, Any]] = {}
    ordered = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
    for pod in ordered:
        index = _index(pod)
        if index is not None:
            out[index] = pod
    return out


def shard_result(index: int, pod: dict[str, Any]) -> ShardResult:
    """One index's state and numbers, from its newest pod's termination message."""
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    state = {"Succeeded": c.SUCCEEDED, "Failed": c.FAILED}.get(phase, phase)
    term = terminated(pod, SCORER_CONTAINER)
    result = ShardResult(index=index, state=state)
    report = parse_final((term or {}).get("message"))
    if report is not None:
        result.rows, result.rows_total = report.step, report.total_steps
        rate = report.metrics.get("rows_per_second")
        result.rows_per_second = float(rate) if rate is not None else None
    if state == c.FAILED:
        result.message = failure_of(pod)
    return result


def failure_of(pod: dict[str, Any]) -> str:
    """Why a pod failed, in its own words: the model fetch's, else the scorer's."""
    fetch = terminated(pod, FETCH_CONTAINER, init=True)
    if fetch and fetch.get("exitCode"):
        return f"{FETCH_FAILED}: {exit_text(fetch)}"
    term = terminated(pod, SCORER_CONTAINER)
    if term:
        return exit_text(term)
    status = pod.get("status") or {}
    return message_tail(status.get("message")) or status.get("reason") or "failed"


def progress_of(shards: list[ShardResult], parallelism: int) -> BatchProgress | None:
    """The run's rows and rate: the indexes' numbers added up."""
    reported = [s for s in shards if s.rows is not None]
    if not reported:
        return None
    done = sum(s.rows or 0 for s in reported)
    totals = [s.rows_total for s in reported]
    total = sum(t for t in totals if t is not None) if len(reported) == parallelism else None
    if total is not None and any(t is None for t in totals):
        total = None
    rate = sum(s.rows_per_second or 0.0 for s in reported if s.state not in TERMINAL) or None
    out = BatchProgress(rows_done=done, rows_total=total)
    if rate is None and all(s.state == c.SUCCEEDED for s in reported):
        rate = sum(s.rows_per_second or 0.0 for s in reported) or None
    out.rows_per_second = round(rate, 1) if rate else None
    if total:
        out.percent = round(min(100.0, 100.0 * done / total), 1)
        if rate:
            out.estimated_remaining_seconds = max(round((total - done) / rate), 0)
    return out


def cause(message: str) -> str:
    """The reason a failed index's message names: OutputExists, ModelMissing,
    ColumnsMissing, InputMissing, else ShardFailed."""
    lowered = message.lower()
    for reason, words in CAUSES:
        if any(w in lowered for w in words):
            return reason
    return c.SHARD_FAILED


def waiting(choice: ModelChoice) -> Verdict:
    if choice.final:
        return Verdict(c.FAILED, choice.reason, choice.message, False, stalled=True)
    return Verdict(c.PENDING, choice.reason, choice.message, False, reconciling=True)


def ended(
    job: dict[str, Any], status: BatchPredictionStatus, now: dt.datetime
) -> Verdict | None:
    end = job_end(job, now)
    if end is None:
        return None
    status.completion_time = end.completion_time
    if end.complete:
        rows = status.output.rows if status.output is not None else None
        if rows is None and status.progress is not None:
            rows = status.progress.rows_done
        message = f"{rows if rows is not None else 'all'} rows scored"
        if status.output is not None:
            message += f" into {status.output.uri}"
        return Verdict(c.SUCCEEDED, c.SUCCEEDED, message, True)
    failed = end.failed or {}
    if end.out_of_time:
        message = f"the run exceeded activeDeadlineSeconds: {failed.get('message', '')}"
        return Verdict(c.FAILED, c.DEADLINE_EXCEEDED, message.rstrip(": "), False, stalled=True)
    broken = [s for s in status.shards if s.state == c.FAILED]
    if broken:
        first = broken[0]
        why = first.message or "failed"
        message = f"index {first.index} failed: {why}"
        if len(broken) > 1:
            message += f" (and {len(broken) - 1} more indexes)"
        return Verdict(c.FAILED, cause(why), message, False, stalled=True)
    message = f"the Job failed: {failed.get('reason', '')} {failed.get('message', '')}".strip()
    return Verdict(c.FAILED, c.SHARD_FAILED, message, False, stalled=True)


def running(spec: BatchPredictionSpec, observed: Observed) -> Verdict:
    pending = scheduler_message(observed.pods)
    if pending:
        return Verdict(c.PENDING, c.WAITING_FOR_SCHEDULER, pending, False, reconciling=True)
    if (observed.job or {}).get("spec", {}).get("suspend"):
        queue = spec.scheduling.queue_name if spec.scheduling else None
        message = f"waiting for admission by Kueue queue {queue}" if queue else "suspended"
        return Verdict(c.QUEUED, c.QUEUED, message, False, reconciling=True)
    active = [
        p for p in observed.pods if (p.get("status") or {}).get("phase") in ("Running", "Succeeded")
    ]
    if active:
        done = sum(1 for p in latest_per_index(observed.pods).values() if _succeeded(p))
        message = f"{done} of {spec.parallelism} pods done"
        return Verdict(c.RUNNING, c.RUNNING, message, True)
    return Verdict(c.PENDING, c.PENDING, "waiting for the pods to start", False, reconciling=True)


def _succeeded(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Succeeded"


def take_reports(
    spec: BatchPredictionSpec, status: BatchPredictionStatus, observed: Observed
) -> None:
    """The pods' final reports into the status: each index's rows and rate, the run's
    progress, the model's sha256 and, from the pod that wrote it, the output's manifest.
    Idempotent, and read again after the run ended while the pods are there: a pod
    whose last status reached the store only after the Job's end still gives its
    numbers; with no report at all the status keeps what it had."""
    pods = latest_per_index(observed.pods)
    if observed.job is None or not pods:
        return
    shards = [shard_result(i, p) for i, p in sorted(pods.items())]
    progress = progress_of(shards, spec.parallelism)
    if status.phase not in TERMINAL or progress is not None:
        status.shards = shards
        status.progress = progress or status.progress
    reports = [r for r in map(_pod_report, pods.values()) if r is not None]
    model_sha = next((r.model_sha256 for r in reports if r.model_sha256), None)
    if status.model is not None and model_sha:
        status.model.sha256 = model_sha
    finalizer = next((r for r in reports if r.output is not None), None)
    if status.output is not None and finalizer is not None and finalizer.output is not None:
        written = finalizer.output
        status.output.rows, status.output.files = written.rows, written.files
        status.output.sha256 = written.sha256
        status.drift = _drift(finalizer.drift)


def _drift(raw: dict[str, Any] | None) -> BatchDrift | None:
    try:
        return BatchDrift.model_validate(raw) if raw is not None else None
    except ValidationError:
        return None


def _pod_report(pod: dict[str, Any]) -> batch_report.PodReport | None:
    return batch_report.parse((terminated(pod, SCORER_CONTAINER) or {}).get("message"))


def _rows_from_progress(status: BatchPredictionStatus) -> None:
    """A run that succeeded without the output manifest's report (pods of an older
    image, a message cut short) counts its rows from the pods' progress."""
    out = status.output
    if status.phase == c.SUCCEEDED and out is not None and out.sha256 is None and status.progress:
        out.rows = status.progress.rows_done


def plan(
    spec: BatchPredictionSpec,
    body: dict[str, Any],
    choice: ModelChoice,
    observed: Observed,
    image: str,
    owner: dict[str, Any],
    now: dt.datetime,
) -> BPPlan:
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    prev = BatchPredictionStatus.model_validate(body.get("status") or {})
    status = prev.model_copy(deep=True)
    status.conditions = []
    # Progress is written as it is read (every 10 s at most), not held by the throttle.
    out = BPPlan(status=status, quiet_start=True, urgent=("model", "jobName", "progress"))
    verdict = stays_finished(prev)
    if verdict is not None:
        take_reports(spec, status, observed)
    if verdict is None and status.model is None:
        if choice.uri is None:
            verdict = waiting(choice)
        else:
            status.model = BatchPredictionModelStatus(uri=choice.uri, source=choice.source)
            status.output = BatchOutputStatus(uri=spec.output.uri)
    if verdict is None:
        assert status.model is not None
        status.job_name = job_name(name)
        job = observed.job
        if job is None:
            model_uri = status.model.uri
            out.apply.append(
                Child(render_job(spec, name, namespace, model_uri, image, owner), JOB)
            )
            status.start_time = status.start_time or rfc3339(now)
            message = f"creating Job {status.job_name} with model {model_uri}"
            verdict = Verdict(c.PENDING, c.PENDING, message, False, reconciling=True)
        else:
            status.start_time = (job.get("status") or {}).get("startTime") or status.start_time
            take_reports(spec, status, observed)
            verdict = ended(job, status, now) or running(spec, observed)
    status.phase, status.message = verdict.phase, verdict.message
    _rows_from_progress(status)
    resolved = c.Cond(
        c.MODEL_RESOLVED,
        status.model is not None,
        c.RESOLVED if status.model is not None else choice.reason,
        f"model {status.model.uri} ({status.model.source})" if status.model else choice.message,
    )
    out.conds = [*verdict.conds(), resolved]
    return out
