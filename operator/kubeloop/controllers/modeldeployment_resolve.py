"""Which model a ModelDeployment serves: a URI, a TrainingJob's output, or an
Experiment's best (or pinned) trial's output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.common import ExperimentRef
from kubeloop.api.modeldeployment import ModelSource
from kubeloop.names import EXPERIMENT_LABEL

# Reasons that will not change by waiting: the deployment is Failed (Stalled) for them.
FINAL_REASONS = (c.TRAINING_JOB_FAILED, c.EXPERIMENT_FAILED)


@dataclass
class Resolution:
    uri: str | None
    reason: str
    message: str
    training_job: str | None = None
    experiment: str | None = None

    def cond(self) -> c.Cond:
        """The ModelResolved condition."""
        return c.Cond(c.MODEL_RESOLVED, self.uri is not None, self.reason, self.message)


def resolve(
    source: ModelSource,
    namespace: str,
    training_jobs: dict[str, dict[str, Any]],
    experiments: dict[str, dict[str, Any]] | None = None,
) -> Resolution:
    if source.uri:
        return Resolution(source.uri, c.RESOLVED, f"model {source.uri}")
    if source.from_experiment is not None:
        return from_experiment(source.from_experiment, namespace, training_jobs, experiments or {})
    assert source.from_training_job is not None
    return _from_training_job(source.from_training_job.name, namespace, training_jobs)


def _from_training_job(
    tj_name: str, namespace: str, training_jobs: dict[str, dict[str, Any]]
) -> Resolution:
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


def from_experiment(
    ref: ExperimentRef,
    namespace: str,
    training_jobs: dict[str, dict[str, Any]],
    experiments: dict[str, dict[str, Any]],
) -> Resolution:
    """The model of the Experiment's best trial, or of its pinned trial; `training_jobs`
    holds the pinned trial's TrainingJob when it exists."""
    exp = experiments.get(ref.name)
    if exp is None:
        return Resolution(
            None,
            c.EXPERIMENT_NOT_FOUND,
            f"Experiment {namespace}/{ref.name} does not exist",
            experiment=ref.name,
        )
    if ref.trial is not None:
        return _pinned(ref.name, ref.trial, exp, namespace, training_jobs)
    status = exp.get("status") or {}
    best = status.get("bestTrial") or {}
    phase = status.get("phase") or "Pending"
    if not best.get("name") or not best.get("modelUri"):
        ended = phase in (c.SUCCEEDED, c.FAILED)
        why = f"{status.get('message') or phase}"
        if ended:
            return Resolution(
                None,
                c.EXPERIMENT_FAILED,
                f"Experiment {ref.name} ended without a best trial with a model: {why}",
                experiment=ref.name,
            )
        done = status.get("trialsDone") or "0"
        return Resolution(
            None,
            c.NO_BEST_TRIAL,
            f"waiting for Experiment {ref.name} to have a best trial (phase {phase}, "
            f"{done} trials finished)",
            experiment=ref.name,
        )
    trial, uri = str(best["name"]), str(best["modelUri"])
    return Resolution(
        uri,
        c.RESOLVED,
        f"model {uri} from trial {trial}, the best of Experiment {ref.name}",
        trial,
        ref.name,
    )


def _pinned(
    experiment: str,
    trial: str,
    exp: dict[str, Any],
    namespace: str,
    training_jobs: dict[str, dict[str, Any]],
) -> Resolution:
    """One trial of the Experiment, by its TrainingJob's name: a trial whose
    TrainingJob the Experiment labelled as its own."""
    trials = (exp.get("status") or {}).get("trials") or []
    tj = training_jobs.get(trial)
    labels = ((tj or {}).get("metadata") or {}).get("labels") or {}
    if tj is None or labels.get(EXPERIMENT_LABEL) != experiment:
        known = any(t.get("name") == trial for t in trials)
        return Resolution(
            None,
            c.TRIAL_NOT_FOUND,
            f"Experiment {namespace}/{experiment} has no trial {trial}"
            + (" with a TrainingJob yet" if known else ""),
            trial,
            experiment,
        )
    got = _from_training_job(trial, namespace, training_jobs)
    got.experiment = experiment
    if got.uri is not None:
        got.message = f"model {got.uri} from trial {trial} of Experiment {experiment}"
    return got


def _sources(body: dict[str, Any]) -> list[dict[str, Any]]:
    spec = body.get("spec") or {}
    parts = [(spec.get(part) or {}).get("model") or {} for part in ("canary", "shadow")]
    return [spec.get("model") or {}, *parts]


def referenced_jobs(body: dict[str, Any]) -> set[str]:
    """Names of the TrainingJobs whose models this ModelDeployment serves (raw body):
    those named by fromTrainingJob, and pinned trials."""
    names = set()
    for source in _sources(body):
        name = (source.get("fromTrainingJob") or {}).get("name")
        trial = (source.get("fromExperiment") or {}).get("trial")
        names |= {str(n) for n in (name, trial) if n}
    return names


def referenced_experiments(body: dict[str, Any]) -> set[str]:
    """Names of the Experiments whose trials' models this ModelDeployment serves."""
    return {
        str(ref["name"])
        for source in _sources(body)
        if (ref := source.get("fromExperiment") or {}).get("name")
    }
