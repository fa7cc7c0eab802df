"""Which model a ModelDeployment serves: a URI, or a TrainingJob's output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import ModelSource


@dataclass
class Resolution:
    uri: str | None
    reason: str
    message: str
    training_job: str | None = None

    def cond(self) -> c.Cond:
        """The ModelResolved condition."""
        return c.Cond(c.MODEL_RESOLVED, self.uri is not None, self.reason, self.message)


def resolve(
    source: ModelSource, namespace: str, training_jobs: dict[str, dict[str, Any]]
) -> Resolution:
    if source.uri:
        return Resolution(source.uri, c.RESOLVED, f"model {source.uri}")
    assert source.from_training_job is not None
    tj_name = source.from_training_job.name
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


def referenced_jobs(body: dict[str, Any]) -> set[str]:
    """Names of the TrainingJobs whose models this ModelDeployment serves (raw body)."""
    spec = body.get("spec") or {}
    names = set()
    for source in (spec.get("model") or {}, ((spec.get("canary") or {}).get("model") or {})):
        ref = source.get("fromTrainingJob") or {}
        if ref.get("name"):
            names.add(str(ref["name"]))
    return names
