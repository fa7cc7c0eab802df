"""Experiment planner: pure, from the spec, the previous status and the trials'
TrainingJobs (owned by the Experiment's UID) to the new status and the actions.

One pass: the records (status.trials, plus any trial whose TrainingJob exists but whose
record was not written) follow their TrainingJobs' status; the verdict (too many
failures, goal reached, every trial run); running trials the pruner stops; new trials
up to parallelTrials. The status, holding the new and pruned records, is written
before the TrainingJobs are created or suspended, so that a crash in between leaves a
record whose TrainingJob the next pass creates (the same name, the same values), never
a trial that is run twice or forgotten. A stopped trial's TrainingJob is suspended: its
pods go, it and its reports stay for inspection.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.experiment import (
    FINISHED_TRIAL_STATES,
    ExperimentSpec,
    ExperimentStatus,
    Trial,
)
from kubeloop.api.trainingjob import TrainingJobStatus
from kubeloop.controllers.common import owner_reference, rfc3339
from kubeloop.controllers.execute import Child, Event, Patch, Plan
from kubeloop.experiment import space, study, suggest, trials
from kubeloop.experiment.prune import should_prune
from kubeloop.experiment.verdict import Verdict, decide
from kubeloop.names import API_VERSION, EXPERIMENT_LABEL, MANAGED_BY, TRIAL_LABEL

TRAINING_JOB = "TrainingJob"
# The trials' TrainingJobs in the store, indexed by the Experiment's name.
TRIAL_STORE = "Experiment/TrainingJob"
ExpPlan = Plan[ExperimentStatus]


@dataclass
class Observed:
    # The trials' TrainingJobs this Experiment owns (by UID), by trial number.
    jobs: dict[int, dict[str, Any]]
    # Names of TrainingJobs in the way: a trial's name held by an object this
    # Experiment does not own (one left by a deleted Experiment of the same name).
    taken: frozenset[str] = frozenset()


def uid_seed(uid: str) -> int:
    """The sampler seed of an Experiment whose spec sets none: from its UID, stable
    across restarts, different between Experiments."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") & 0x7FFFFFFF


def trial_number(job: dict[str, Any]) -> int | None:
    value = (job["metadata"].get("labels") or {}).get(TRIAL_LABEL)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def render_trial(spec: ExperimentSpec, body: dict[str, Any], record: Trial) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": TRAINING_JOB,
        "metadata": {
            "name": record.name,
            "namespace": meta["namespace"],
            "labels": {
                **MANAGED_BY,
                EXPERIMENT_LABEL: meta["name"],
                TRIAL_LABEL: str(record.number),
            },
            "ownerReferences": [owner_reference(body)],
        },
        "spec": trials.trial_spec(spec, record.name, record.parameters),
    }


def recovered(spec: ExperimentSpec, number: int, job: dict[str, Any]) -> Trial:
    """The record of a trial whose TrainingJob exists but whose record was not written:
    its values are in the TrainingJob's hyperparameters."""
    given = (job.get("spec") or {}).get("hyperparameters") or {}
    searched = {p.name for p in spec.parameters}
    return Trial(
        name=job["metadata"]["name"],
        number=number,
        parameters={k: str(v) for k, v in given.items() if k in searched},
        state="Pending",
    )


def _job_status(job: dict[str, Any] | None) -> TrainingJobStatus | None:
    if job is None:
        return None
    return TrainingJobStatus.model_validate(job.get("status") or {})


def _suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def _stop(record: Trial) -> Trial:
    """A trial still going when the search ended: stopped (not by the pruner)."""
    last = record.intermediate[-1].value if record.intermediate else None
    return record.model_copy(update={"state": "Pruned", "value": last})


def records(spec: ExperimentSpec, prev: ExperimentStatus, observed: Observed) -> list[Trial]:
    """The trial records as the cluster now shows them, in number order (raises
    study.TrialRecordsError on a gap)."""
    by_number = {t.number: t for t in prev.trials}
    for number, job in observed.jobs.items():
        if number not in by_number:
            by_number[number] = recovered(spec, number, job)
    out = [
        trials.observe(t, _job_status(observed.jobs.get(t.number)), spec.objective.metric)
        for t in by_number.values()
    ]
    return study.in_order(out)


def _ended(
    verdict: Verdict, status: ExperimentStatus, prev: ExperimentStatus, now: dt.datetime
) -> list[c.Cond]:
    status.phase = c.SUCCEEDED if verdict.succeeded else c.FAILED
    status.message = verdict.message
    status.completion_time = prev.completion_time or rfc3339(now)
    conds = [c.Cond(c.READY, verdict.succeeded, verdict.reason, verdict.message)]
    if not verdict.succeeded:
        conds.append(c.Cond(c.STALLED, True, verdict.reason, verdict.message))
    return conds


def _going(status: ExperimentStatus, spec: ExperimentSpec) -> list[c.Cond]:
    counts = status.counts
    assert counts is not None
    status.phase = c.RUNNING if counts.running else c.PENDING
    status.message = (
        f"{status.trials_done} trials finished, {counts.running} running, "
        f"{counts.pending} pending (parallelTrials {spec.parallel_trials})"
    )
    return [
        c.Cond(c.READY, False, c.PROGRESSING, status.message),
        c.Cond(c.RECONCILING, True, c.PROGRESSING, status.message),
    ]


def plan(
    spec: ExperimentSpec, body: dict[str, Any], observed: Observed, now: dt.datetime
) -> ExpPlan:
    meta = body["metadata"]
    prev = ExperimentStatus.model_validate(body.get("status") or {})
    status = ExperimentStatus(start_time=prev.start_time)
    out = ExpPlan(status=status, urgent=("counts", "bestTrial", "trialsDone"))
    problems = space.problems(spec)
    try:
        recs = records(spec, prev, observed)
    except study.TrialRecordsError as err:
        problems.append(f"the trial records cannot be searched: {err}")
        recs = list(prev.trials)
    if problems:
        message = "; ".join(problems)
        status.trials, status.phase, status.message = list(prev.trials), "Invalid", message
        out.conds = [c.Cond(c.READY, False, c.INVALID_SPEC, message),
                     c.Cond(c.STALLED, True, c.INVALID_SPEC, message)]
        return out
    events: list[Event] = []
    verdict = decide(spec, recs)
    if verdict is None:
        for i, record in enumerate(recs):
            if record.state == "Running" and should_prune(spec, record, recs):
                recs[i] = trials.pruned(record)
                events.append(("Normal", "TrialPruned", f"trial {record.name} stopped early "
                               f"by {spec.early_stopping.name if spec.early_stopping else ''}"))
        verdict = decide(spec, recs)
    new: list[Trial] = []
    if verdict is None:
        seed = suggest.base_seed(spec, uid_seed(meta.get("uid") or meta["name"]))
        for params in suggest.suggest(spec, recs, seed):
            number = len(recs) + len(new)
            new.append(Trial(name=trials.trial_name(meta["name"], number), number=number,
                             parameters=params, state="Pending"))
        if new:
            names = ", ".join(t.name for t in new)
            events.append(("Normal", "TrialsCreated", f"created {names}"))
    else:
        recs = [r if r.state in FINISHED_TRIAL_STATES else _stop(r) for r in recs]
    recs += new
    status.trials = recs
    status.counts = trials.counts(recs)
    status.trials_done = trials.trials_done(spec, recs)
    uris = {j["metadata"]["name"]: s.model_uri for j in observed.jobs.values()
            if (s := _job_status(j)) is not None and s.model_uri}
    status.best_trial = trials.best_trial(spec, recs, uris)
    if recs and status.start_time is None:
        status.start_time = rfc3339(now)
    if verdict is not None:
        out.conds = _ended(verdict, status, prev, now)
        if prev.phase not in (c.SUCCEEDED, c.FAILED):
            events.append(("Normal" if verdict.succeeded else "Warning", verdict.reason,
                           verdict.message))
    else:
        out.conds = _going(status, spec)
    _actions(spec, body, recs, observed, out)
    newly_stopped = [r for r in recs if r.state == "Pruned" and r.number < len(prev.trials)
                     and prev.trials[r.number].state != "Pruned"]
    # New and stopped records are written before the TrainingJobs change.
    out.status_first = bool(new or newly_stopped)
    out.events = events
    return out


def _actions(
    spec: ExperimentSpec,
    body: dict[str, Any],
    recs: list[Trial],
    observed: Observed,
    out: ExpPlan,
) -> None:
    """Create the TrainingJob of every trial still to run that has none; suspend the
    TrainingJob of every stopped trial that still runs."""
    for record in recs:
        job = observed.jobs.get(record.number)
        if record.state not in FINISHED_TRIAL_STATES and job is None:
            if record.name in observed.taken:
                out.requeue(5.0)  # the old one goes with its deleted owner
                continue
            out.apply.append(Child(render_trial(spec, body, record), TRIAL_STORE))
        elif record.state == "Pruned" and job is not None and not _suspended(job):
            phase = (job.get("status") or {}).get("phase")
            if phase not in (c.SUCCEEDED, c.FAILED):
                out.patch.append(Patch(API_VERSION, TRAINING_JOB, record.name,
                                       {"spec": {"suspend": True}}, store_kind=TRIAL_STORE))
