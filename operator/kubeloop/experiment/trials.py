"""A trial's TrainingJob and its record, both ways: the TrainingJob spec made from the
Experiment's template and the chosen values, the record updated from what the
TrainingJob's status shows, and the status figures over all records. Pure: the
controller reads and writes, these only compute."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kubeloop.api.experiment import (
    FINISHED_TRIAL_STATES,
    BestTrial,
    ExperimentSpec,
    StepValue,
    Trial,
    TrialCounts,
)
from kubeloop.api.trainingjob import TrainingJobStatus
from kubeloop.experiment import space
from kubeloop.experiment.verdict import best

OUTPUT_PLACEHOLDER = "{trainingJob}"
MAX_INTERMEDIATE = 32  # the API's bound on Trial.intermediate
WAITING_PHASES = ("Pending", "Queued", "Suspended")


def trial_name(experiment: str, number: int) -> str:
    return f"{experiment}-trial-{number}"


def trial_spec(spec: ExperimentSpec, name: str, parameters: Mapping[str, str]) -> dict[str, Any]:
    """The TrainingJob spec of a trial: the template, the chosen values added to its
    hyperparameters, the Experiment's `compute`, `{trainingJob}` in the output as the
    trial's name."""
    job = spec.training_job.model_copy(deep=True)
    job.hyperparameters = {**job.hyperparameters, **parameters}
    if spec.compute:
        job.compute = spec.compute
    if job.output is not None:
        job.output.uri = job.output.uri.replace(OUTPUT_PLACEHOLDER, name)
    return job.dump()


MAX_TRIAL_MESSAGE = 256


def thin(points: list[StepValue], limit: int = MAX_INTERMEDIATE) -> list[StepValue]:
    """At most `limit` points, by step: while over, every second of the older points
    goes (the latest always stays), so a long run keeps its whole curve, coarser."""
    points = sorted({p.step: p for p in points}.values(), key=lambda p: p.step)
    while len(points) > limit:
        older, last = points[:-1], points[-1]
        points = [*older[::2], last] if len(older) > 1 else [last]
    return points


def observe(record: Trial, status: TrainingJobStatus | None, metric: str) -> Trial:
    """The record as the trial's TrainingJob status now shows it. A pruned trial stays
    pruned (its TrainingJob is stopped); a finished one does not change again."""
    if record.state in FINISHED_TRIAL_STATES or status is None:
        return record
    reported = status.metrics.get(metric)
    value = reported if reported is not None and math.isfinite(reported) else None
    updated = record.model_copy(deep=True)
    if status.phase == "Succeeded" and value is None:
        # A run that ended without its objective cannot be ranked: it failed the search
        # (counted against maxFailedTrials), and says why.
        updated.state = "Failed"
        updated.message = (
            f"the run succeeded without reporting {metric}"
            if reported is None
            else f"the run reported {metric}={reported}, not a finite number"
        )
    elif status.phase == "Succeeded":
        updated.state, updated.value = "Succeeded", value
    elif status.phase == "Failed":
        updated.state = "Failed"
        updated.message = (status.message or "the run failed")[:MAX_TRIAL_MESSAGE]
    else:
        updated.state = "Pending" if status.phase in WAITING_PHASES or not status.phase else (
            "Running")
        step = status.progress.step if status.progress else None
        if step is not None and value is not None:
            updated.intermediate = thin([*updated.intermediate, StepValue(step=step,
                                                                          value=value)])
    return updated


def pruned(record: Trial) -> Trial:
    """The record of a trial early stopping ended: its value is its last report."""
    last = record.intermediate[-1].value if record.intermediate else None
    return record.model_copy(update={"state": "Pruned", "pruned": True, "value": last})


def counts(trials: Sequence[Trial]) -> TrialCounts:
    def of(state: str) -> int:
        return sum(1 for t in trials if t.state == state)

    return TrialCounts(total=len(trials), pending=of("Pending"), running=of("Running"),
                       succeeded=of("Succeeded"), failed=of("Failed"), pruned=of("Pruned"))


def trials_done(spec: ExperimentSpec, trials: Sequence[Trial]) -> str:
    """`finished/total` for `kubectl get exp`; total is maxTrials or a smaller grid."""
    finished = sum(1 for t in trials if t.state in FINISHED_TRIAL_STATES)
    return f"{finished}/{space.trial_limit(spec)}"


def best_trial(
    spec: ExperimentSpec, trials: Sequence[Trial], model_uris: Mapping[str, str]
) -> BestTrial | None:
    """The best trial with its model (`model_uris`: the trials' TrainingJobs'
    status.modelUri, by name)."""
    top = best(spec, trials)
    if top is None or top.value is None:
        return None
    return BestTrial(name=top.name, parameters=dict(top.parameters), value=top.value,
                     model_uri=model_uris.get(top.name))
