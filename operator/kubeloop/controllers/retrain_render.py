"""What the retrain loop writes: its TrainingJob, its evaluation Job and the promotion
patch of the ModelDeployment, rendered from the monitor's spec (pure)."""

from __future__ import annotations

import json
from typing import Any

from kubeloop.api.driftmonitor import DriftMonitorSpec, RetrainRecord
from kubeloop.api.trainingjob import Scheduling, TrainingJobSpec
from kubeloop.controllers import promotion_note
from kubeloop.controllers.common import owner_reference
from kubeloop.names import API_VERSION, MANAGED_BY, MONITOR_LABEL, PROMOTION_ANNOTATION
from kubeloop.render import evaluation as render_eval

KIND = "DriftMonitor"
MODEL_DEPLOYMENT = "ModelDeployment"
TRAINING_JOB = "TrainingJob"
EXPERIMENT = "Experiment"
TJ_JOB = "Job"  # a TrainingJob's Jobs in the store (controllers/trainingjob.py)
EVAL_JOB = "DriftMonitor/Job"
EVAL_POD = "DriftMonitor/Pod"
# The one writer of a user's spec: promotion of a retrained model (onDrift.promote).
PROMOTER = "kubeloop-promoter"


def retrain_name(monitor: str, number: int) -> str:
    return f"{monitor}-retrain-{number}"


def training_template(spec: DriftMonitorSpec) -> TrainingJobSpec | None:
    """The TrainingJob spec a retrain runs: the template, or the search's trials'."""
    retrain = spec.on_drift.retrain
    if retrain is None:
        return None
    search = retrain.experiment
    if search is None:
        return retrain.template
    return search.training_job.model_copy(
        update={"compute": search.compute or search.training_job.compute}
    )


def render_retrain(spec: DriftMonitorSpec, body: dict[str, Any], name: str) -> dict[str, Any]:
    """The retrain's TrainingJob, or its Experiment when the retrain is a search (whose
    trials put their own names in `{trainingJob}`)."""
    retrain = spec.on_drift.retrain
    assert retrain is not None
    if retrain.experiment is not None:
        kind, template = EXPERIMENT, retrain.experiment.dump()
    else:
        assert retrain.template is not None
        kind, template = TRAINING_JOB, retrain.template.dump()
        output = template.get("output") or {}
        if "uri" in output:
            output["uri"] = output["uri"].replace("{trainingJob}", name)
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**MANAGED_BY, MONITOR_LABEL: meta["name"]},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": template,
    }


def render_evaluation(
    spec: DriftMonitorSpec,
    body: dict[str, Any],
    last: RetrainRecord,
    image: str,
    scheduling: Scheduling | None,
    live_rows: list[str] | None = None,
) -> dict[str, Any]:
    """The evaluation Job of the retrain `last`: its champion and challenger as recorded
    (and the serving pods' labelled rows, with `evaluate.live`)."""
    evaluate, ev = spec.on_drift.evaluate, last.evaluation
    assert evaluate is not None and ev is not None and last.model_uri is not None
    return render_eval.render_job(
        evaluate,
        name=ev.job,
        namespace=body["metadata"]["namespace"],
        monitor=body["metadata"]["name"],
        champion=ev.champion_uri,
        challenger=last.model_uri,
        image=image,
        owner=owner_reference(body, controller=False),
        fallback_scheduling=scheduling,
        live_rows=live_rows,
    )


def promotion_patch(
    target: dict[str, Any],
    uri: str,
    monitor: str,
    record: RetrainRecord,
    promote_with: str = "Spec",
) -> dict[str, Any]:
    """Canary first when the deployment has canary settings, else the model itself; the
    annotation tells the deployment's history who made the change and on what scores.
    With `promoteWith: Annotation` the annotation alone, naming the field it stands in
    for (controllers/promotion_note.py): the spec stays as Git has it."""
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
    in_place = promote_with == "Annotation"
    content = promotion_note.note(target, uri, who, in_place)
    patch: dict[str, Any] = {
        "metadata": {"annotations": {PROMOTION_ANNOTATION: json.dumps(content, sort_keys=True)}}
    }
    if in_place:
        return patch
    model = {"uri": uri, "fromTrainingJob": None, "fromExperiment": None}
    if (spec.get("canary") or {}).get("steps"):
        # A new analysis: a pause or an abort left on the last canary does not apply.
        patch["spec"] = {"canary": {"model": model, "paused": None, "abort": None}}
    elif spec.get("canary"):
        patch["spec"] = {"canary": {"model": model}}
    else:
        patch["spec"] = {"model": model}
    return patch
