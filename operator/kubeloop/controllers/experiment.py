"""Experiment reconcile: a hyperparameter search whose trials are TrainingJobs.

The planner (controllers/experiment_plan.py) decides the status and the actions from
the spec, the previous status and the trials' TrainingJobs; `reconcile()` reads what it
observes, plans, and hands the plan to `execute`. The status and the TrainingJobs are
the only memory: a restarted operator tells the search back what they hold.
"""

from __future__ import annotations

from typing import Any

from kubeloop.api.experiment import ExperimentSpec, ExperimentStatus
from kubeloop.controllers.common import Ctx, begin
from kubeloop.controllers.execute import execute
from kubeloop.controllers.experiment_plan import TRIAL_STORE, Observed, plan, trial_number
from kubeloop.controllers.k8sread import owned_by
from kubeloop.controllers.registration import ChildWatch, Controller
from kubeloop.controllers.runtime import Key, Result
from kubeloop.experiment.trials import trial_name
from kubeloop.names import EXPERIMENT_LABEL, GROUP, VERSION

KIND = "Experiment"
TRAINING_JOB = "TrainingJob"

__all__ = ["CONTROLLER", "KIND", "reconcile"]


def slim_trial(job: dict[str, Any]) -> dict[str, Any]:
    """What the search reads of a trial's TrainingJob: whose it is, its number and
    values, whether it is suspended, and its status."""
    meta = job.get("metadata", {})
    spec = job.get("spec") or {}
    return {
        "apiVersion": job.get("apiVersion"),
        "kind": job.get("kind"),
        "metadata": {
            k: meta.get(k)
            for k in ("name", "namespace", "labels", "uid", "resourceVersion",
                      "ownerReferences", "deletionTimestamp")
            if meta.get(k) is not None
        },
        "spec": {k: spec.get(k) for k in ("hyperparameters", "suspend") if k in spec},
        "status": job.get("status") or {},
    }


def observe(ctx: Ctx, body: dict[str, Any], spec: ExperimentSpec) -> Observed:
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid")
    labelled = ctx.store.owned(TRIAL_STORE, namespace, name)
    mine = owned_by(labelled, uid)
    jobs: dict[int, dict[str, Any]] = {}
    for job in mine:
        number = trial_number(job)
        if number is not None and job["metadata"]["name"] == trial_name(name, number):
            jobs[number] = job
    # A trial's name held by a TrainingJob this Experiment does not own (one of a
    # deleted Experiment of the same name, still being collected; or anyone's). Only
    # the names this pass may create are looked up (a record without its TrainingJob,
    # or a new trial), by name: no scan of every TrainingJob.
    recorded = len((body.get("status") or {}).get("trials") or [])
    candidates = {
        trial_name(name, n)
        for n in range(max(recorded, max(jobs, default=-1) + 1) + spec.parallel_trials)
        if n not in jobs
    }
    taken = {
        tj_name
        for tj_name in candidates
        if (tj := ctx.store.get(TRAINING_JOB, namespace, tj_name)) is not None
        and not owned_by([tj], uid)
    }
    taken |= {
        tj["metadata"]["name"]
        for tj in labelled
        if tj["metadata"]["name"] in candidates and not owned_by([tj], uid)
    }
    return Observed(jobs=jobs, taken=frozenset(taken))


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    started = await begin(ctx, key, ExperimentSpec, ExperimentStatus())
    if started is None:
        return None
    body, spec, now = started
    return await execute(ctx, body, plan(spec, body, observe(ctx, body, spec), now))


CONTROLLER = Controller(
    kind=KIND,
    plural="experiments",
    reconcile=reconcile,
    children=(
        ChildWatch(GROUP, VERSION, "trainingjobs", TRAINING_JOB, TRIAL_STORE, EXPERIMENT_LABEL,
                   slim=slim_trial),
    ),
)
