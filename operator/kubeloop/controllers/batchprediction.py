"""BatchPrediction reconcile: one Indexed Job scoring a dataset with a model recorded
at the start, status from the Job and its pods' termination messages.

The pure planners (controllers/batchprediction_plan.py) decide the status and the
actions; `reconcile()` reads what it observes, plans, and hands the plan to `execute`.
"""

from __future__ import annotations

from typing import Any

from kubeloop.api.batchprediction import BatchPredictionSpec, BatchPredictionStatus
from kubeloop.controllers import batchprogress, computetemplate
from kubeloop.controllers.batchprediction_plan import JOB, POD, Observed, choose_model, plan
from kubeloop.controllers.common import Ctx, begin, owner_reference
from kubeloop.controllers.execute import execute
from kubeloop.controllers.k8sread import owned_by
from kubeloop.controllers.registration import ChildWatch, Controller, slim_pod
from kubeloop.controllers.runtime import Key, Result
from kubeloop.names import BATCH_PREDICTION_LABEL
from kubeloop.render.batchprediction import job_name

KIND = "BatchPrediction"
TRAINING_JOB = "TrainingJob"
MODEL_DEPLOYMENT = "ModelDeployment"
EXPERIMENT = "Experiment"


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, namespace, name = key
    started = await begin(ctx, key, BatchPredictionSpec, BatchPredictionStatus())
    if started is None:
        return None
    body, spec, now = started
    prev = BatchPredictionStatus.model_validate(body.get("status") or {})
    applied = computetemplate.for_batch(ctx, spec, prev.compute, started=prev.job_name is not None)
    if applied.blocked is not None:
        return await computetemplate.hold(ctx, body, applied, BatchPredictionStatus)
    spec = applied.spec
    source = spec.model
    tj_name = source.from_training_job.name if source.from_training_job else None
    if source.from_experiment:
        tj_name = source.from_experiment.trial
    tj = ctx.store.get(TRAINING_JOB, namespace, tj_name) if tj_name else None
    exp = (
        ctx.store.get(EXPERIMENT, namespace, source.from_experiment.name)
        if source.from_experiment
        else None
    )
    mdep = (
        ctx.store.get(MODEL_DEPLOYMENT, namespace, source.from_model_deployment.name)
        if source.from_model_deployment
        else None
    )
    choice = choose_model(spec, namespace, tj, mdep, exp)
    # Only what this BatchPrediction owns, by UID: a Job left by an earlier one of the
    # same name (deleted and made again) is not its run.
    uid = body["metadata"].get("uid")
    jobs = owned_by(ctx.store.owned(JOB, namespace, name), uid)
    job = next((j for j in jobs if j["metadata"]["name"] == job_name(name)), None)
    job_uid = (job or {}).get("metadata", {}).get("uid")
    pods = owned_by(ctx.store.owned(POD, namespace, name), job_uid)
    decided = plan(
        spec, body, choice, Observed(job, pods), ctx.config.image, owner_reference(body), now
    )
    decided.status.compute = applied.template
    decided.conds += computetemplate.conditions(applied)
    decided.requeue(await batchprogress.observe(key, decided.status, pods, spec.parallelism))
    return await execute(ctx, body, decided)


def _dependents(ctx: Ctx, kind: str, obj: dict[str, Any]) -> list[Key]:
    """Runs not started yet that wait for this TrainingJob, ModelDeployment or
    Experiment (or the pinned trial of one), and the runs that take a ComputeTemplate
    that changed (named, or the default)."""
    if kind == computetemplate.KIND:
        return computetemplate.takers(ctx, KIND, obj["metadata"]["name"])
    fields = {
        TRAINING_JOB: (("fromTrainingJob", "name"), ("fromExperiment", "trial")),
        MODEL_DEPLOYMENT: (("fromModelDeployment", "name"),),
        EXPERIMENT: (("fromExperiment", "name"),),
    }.get(kind)
    if fields is None:
        return []
    meta = obj["metadata"]
    keys: list[Key] = []
    for bp in ctx.store.all(KIND):
        if bp["metadata"].get("namespace") != meta.get("namespace"):
            continue
        if (bp.get("status") or {}).get("model"):
            continue  # started: its model is recorded and never changes
        model = (bp.get("spec") or {}).get("model") or {}
        if any((model.get(field) or {}).get(key) == meta["name"] for field, key in fields):
            keys.append((KIND, meta["namespace"], bp["metadata"]["name"]))
    return keys


CONTROLLER = Controller(
    kind=KIND,
    plural="batchpredictions",
    reconcile=reconcile,
    children=(
        ChildWatch("batch", "v1", "jobs", "Job", JOB, BATCH_PREDICTION_LABEL),
        ChildWatch("", "v1", "pods", "Pod", POD, BATCH_PREDICTION_LABEL, slim=slim_pod),
    ),
    dependents=_dependents,
    wake_on_delete=False,
    forget=lambda ctx, key: batchprogress.forget(key),
)
