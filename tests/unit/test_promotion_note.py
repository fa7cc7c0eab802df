"""A promotion kept out of the spec (`onDrift.promoteWith: Annotation`,
controllers/promotion_note.py): the monitor writes only its annotation, the deployment
serves the promoted model while the field it was made over still says what it said
(as a GitOps re-apply leaves it), and a new value in that field (a user's commit) takes
over. No API server: the pure note, the retrain step and the ModelDeployment plan."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, RetrainRecord
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.controllers import modeldeployment_plan as mp
from kubeloop.controllers import modeldeployment_tracks as mt
from kubeloop.controllers import promotion_note as pn
from kubeloop.controllers.retrain_actions import Observed
from kubeloop.controllers.retrain_step import step
from kubeloop.names import MODEL_URI_ANNOTATION, PROMOTION_ANNOTATION

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
GIT, PROMOTED, NEW = "s3://models/git", "s3://models/retrained", "s3://models/new-in-git"
MONITOR = {
    "apiVersion": "kubeloop.io/v1alpha1",
    "kind": "DriftMonitor",
    "metadata": {"name": "d", "namespace": "ns", "uid": "u1"},
}


def monitor_spec(promote_with: str) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(
        {
            "modelDeployment": "iris",
            "onDrift": {
                "promote": True,
                "promoteWith": promote_with,
                "retrain": {"template": {"image": "i", "output": {"uri": "s3://m/{trainingJob}"}}},
            },
        }
    )


def md(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "ns",
            "uid": "md1",
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": {"model": {"uri": GIT, "format": "sklearn"}, **spec},
        "status": {"activeModelUri": GIT},
    }


def promote(target: dict[str, Any], promote_with: str = "Annotation") -> dict[str, Any]:
    """The retrain step's promotion of PROMOTED into `target`: its merge patch."""
    running = DriftMonitorStatus(
        retrain_count=1,
        last_retrain=RetrainRecord(training_job="d-retrain-1", time="t", result="Running"),
    )
    tj = {
        "metadata": {"name": "d-retrain-1", "uid": "tj", "ownerReferences": [{"uid": "u1"}]},
        "status": {"phase": "Succeeded", "modelUri": PROMOTED},
    }
    obs = Observed(
        monitor=MONITOR,
        spec=monitor_spec(promote_with),
        now=NOW,
        training_job=tj,
        target=target,
    )
    status, acts = step(running, obs)
    assert status.last_retrain is not None and status.last_retrain.result == "Promoted"
    assert acts.promote is not None
    return acts.promote.patch


def patched(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The object after the merge patch (annotations and spec merged one level down)."""
    out = json.loads(json.dumps(target))
    out["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    for key, value in (patch.get("spec") or {}).items():
        out["spec"][key] = value
    return out


def serve(
    body: dict[str, Any], stable: str | None = None, prev: dict[str, Any] | None = None
) -> mp.MDPlan:
    """The plan of the deployment as read, its Deployment serving `stable`."""
    body = json.loads(json.dumps(body))
    if prev is not None:
        body["status"] = prev
    deployment = None
    if stable:
        deployment = {"metadata": {"name": "iris", "annotations": {MODEL_URI_ANNOTATION: stable}}}
    observed = mt.Observed(
        stable=deployment, canary=None, service=None, hpa=None, pods=[], training_jobs={}
    )
    spec = ModelDeploymentSpec.model_validate(body["spec"])
    return mp.plan(spec, body, observed, "img", NOW)


def stable_uri(out: mp.MDPlan) -> str | None:
    for child in out.apply:
        if child.obj["kind"] == "Deployment" and child.obj["metadata"]["name"] == "iris":
            return str(child.obj["metadata"]["annotations"][MODEL_URI_ANNOTATION])
    return None


def test_the_monitor_writes_only_the_annotation_naming_what_it_stands_in_for() -> None:
    patch = promote(md())
    assert set(patch) == {"metadata"}, "no spec write with promoteWith: Annotation"
    note = json.loads(patch["metadata"]["annotations"][PROMOTION_ANNOTATION])
    assert note["uri"] == PROMOTED and note["by"] == "DriftMonitor/d"
    assert note["field"] == "model"
    assert note["inPlaceOf"] == {"uri": GIT, "format": "sklearn"}
    # The old way stays the default: the spec itself, and a note without inPlaceOf.
    old = promote(md(), "Spec")
    assert old["spec"]["model"]["uri"] == PROMOTED
    assert "inPlaceOf" not in json.loads(old["metadata"]["annotations"][PROMOTION_ANNOTATION])
    # With a canary, the note stands in for the canary's model (canary first).
    canary = md(canary={"model": {"uri": GIT}, "trafficPercent": 20})
    note = json.loads(promote(canary)["metadata"]["annotations"][PROMOTION_ANNOTATION])
    assert (note["field"], note["inPlaceOf"]) == ("canary.model", {"uri": GIT})


def test_the_promotion_serves_over_a_reapplied_spec_and_a_new_git_model_takes_over() -> None:
    promoted = patched(md(), promote(md()))
    assert promoted["spec"]["model"]["uri"] == GIT  # Git's spec, untouched
    out = serve(promoted, stable=GIT)
    assert stable_uri(out) == PROMOTED and out.status.active_model_uri == PROMOTED
    resolved = next(cd for cd in out.conds if cd.type == "ModelResolved")
    assert "promoted by DriftMonitor/d (retrain d-retrain-1)" in resolved.message
    assert GIT in resolved.message
    history = out.status.history
    assert [(h.uri, h.changed_by) for h in history] == [(PROMOTED, "DriftMonitor/d")]

    # Git's next sync re-applies the same spec (a re-apply, other keys reordered): the
    # promotion stands.
    reapplied = json.loads(json.dumps(promoted))
    reapplied["spec"]["model"] = {"format": "sklearn", "uri": GIT}
    prev = out.status.dump()
    again = serve(reapplied, stable=PROMOTED, prev=prev)
    assert stable_uri(again) == PROMOTED
    assert [h.uri for h in again.status.history] == [PROMOTED]

    # A user's commit of a new model: it serves, and the history records both.
    committed = json.loads(json.dumps(promoted))
    committed["spec"]["model"]["uri"] = NEW
    moved = serve(committed, stable=PROMOTED, prev=again.status.dump())
    assert stable_uri(moved) == NEW and moved.status.active_model_uri == NEW
    assert [(h.uri, h.changed_by) for h in moved.status.history] == [
        (NEW, "user"),
        (PROMOTED, "DriftMonitor/d"),
    ]
    # The stale note no longer stands: a later re-apply of the same new model keeps it.
    assert pn.standing(committed) is None


def test_a_canary_promotion_serves_as_the_canary_until_git_changes_it() -> None:
    target = md(canary={"model": {"uri": GIT}, "trafficPercent": 20})
    promoted = patched(target, promote(target))
    st = pn.standing(promoted)
    assert st is not None and st.field == "canary.model"
    served = pn.served_spec(ModelDeploymentSpec.model_validate(promoted["spec"]), st)
    assert served.canary is not None and served.canary.model.uri == PROMOTED
    assert served.model.uri == GIT
    raw = pn.served_raw(promoted["spec"], st)
    assert raw["canary"]["model"] == {"uri": PROMOTED} and raw["canary"]["trafficPercent"] == 20
    # Git removes the canary: nothing to stand in for.
    gone = json.loads(json.dumps(promoted))
    del gone["spec"]["canary"]
    assert pn.standing(gone) is None


def test_a_note_that_does_not_parse_or_does_not_match_stands_for_nothing() -> None:
    assert pn.standing(md({PROMOTION_ANNOTATION: "{oops"})) is None
    assert pn.standing(md({PROMOTION_ANNOTATION: json.dumps({"uri": PROMOTED})})) is None
    bad_field = {"uri": PROMOTED, "field": "replicas", "inPlaceOf": {"uri": GIT}}
    assert pn.standing(md({PROMOTION_ANNOTATION: json.dumps(bad_field)})) is None
    from_job = {"uri": PROMOTED, "field": "model", "inPlaceOf": {"fromTrainingJob": {"name": "t"}}}
    note = {PROMOTION_ANNOTATION: json.dumps(from_job)}
    body = md(note, model={"fromTrainingJob": {"name": "t"}})
    st = pn.standing(body)
    assert st is not None and "fromTrainingJob t" in st.describe()
