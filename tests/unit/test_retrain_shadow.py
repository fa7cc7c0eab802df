"""The shadow trial's rows of the retrain table (controllers/retrain_step.py with
controllers/retrain_shadow.py): from a record and what is observed, the next record and
what to do; the verdict on the deployment's `status.shadow.labelled`; and the shadow the
trial's note makes a deployment run (controllers/shadow_trial.py). No API server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import ValidationError

from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
    Evaluation,
    OnDrift,
    RetrainRecord,
    ShadowTrial,
)
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.controllers import shadow_trial
from kubeloop.controllers.retrain_verdict import accepted_condition, retrain_blocked
from kubeloop.kube import KubeError
from kubeloop.names import PROMOTION_ANNOTATION, SHADOW_TRIAL_ANNOTATION
from tests.unit.test_retrain_step import (
    CHALLENGER,
    CHAMPION,
    GATE,
    NOW,
    eval_job,
    last,
    pod,
    reasons,
    record,
    run,
    tj,
    verdict,
)

STARTED = NOW - dt.timedelta(minutes=5)


def spec(
    evaluate: bool = False, promote_with: str = "Spec", **gate: Any
) -> DriftMonitorSpec:
    on_drift: dict[str, Any] = {
        "promote": True,
        "promoteWith": promote_with,
        "retrain": {"template": {"image": "i", "output": {"uri": "pvc://models/{trainingJob}"}}},
        "shadow": {"minLabelled": 50, **gate},
    }
    if evaluate:
        on_drift["evaluate"] = GATE
    return DriftMonitorSpec.model_validate({"modelDeployment": "md", "onDrift": on_drift})


def note(uri: str = CHALLENGER) -> str:
    return json.dumps({"uri": uri, "by": "DriftMonitor/m", "trainingJob": "m-retrain-1"})


def target(
    labelled: dict[str, Any] | None = None,
    shadow_uri: str = CHALLENGER,
    serving: str = CHAMPION,
    trial: str | None = CHALLENGER,
    **md_spec: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {"activeModelUri": serving}
    if labelled is not None:
        status["shadow"] = {"modelUri": shadow_uri, "state": "Compared", "labelled": labelled}
    annotations = {SHADOW_TRIAL_ANNOTATION: note(trial)} if trial else {}
    return {
        "metadata": {"name": "md", "namespace": "ns", "annotations": annotations},
        "spec": {"model": {"uri": serving}, **md_spec},
        "status": status,
    }


def shadowing(**trial: Any) -> DriftMonitorStatus:
    on_trial = ShadowTrial(
        champion_uri=CHAMPION, started=STARTED.strftime("%Y-%m-%dT%H:%M:%SZ"), **trial
    )
    return record("Shadowing", created=True, model_uri=CHALLENGER, shadow=on_trial)


def classes(n: int, champion: float, shadow: float, p: float) -> dict[str, Any]:
    return {
        "samples": n,
        "championAccuracy": champion,
        "shadowAccuracy": shadow,
        "test": "mcnemar-exact",
        "pValue": p,
    }


def trial_of(status: DriftMonitorStatus) -> ShadowTrial:
    trial = last(status).shadow
    assert trial is not None
    return trial


# --- The spec ---------------------------------------------------------------------------


def test_the_gate_is_off_by_default_and_has_sane_defaults() -> None:
    assert OnDrift().shadow is None
    gate = spec().on_drift.shadow
    assert gate is not None
    assert (gate.require, gate.margin, gate.significance) == ("Better", 0.0, 0.05)
    assert (gate.mirror_percent, gate.timeout, gate.min_labelled) == (100, "24h", 50)


@pytest.mark.parametrize(
    "bad",
    [
        {"promote": False, "shadow": {}},
        {"promote": True, "shadow": {"significance": 0}},
        {"promote": True, "shadow": {"significance": 1}},
        {"promote": True, "shadow": {"minLabelled": 0}},
        {"promote": True, "shadow": {"margin": -0.1}},
        {"promote": True, "shadow": {"require": "Best"}},
        {"promote": True, "shadow": {"timeout": "soon"}},
        {"promote": True, "shadow": {"mirrorPercent": 0}},
    ],
)
def test_bad_gates_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OnDrift.model_validate({"retrain": {"template": {"image": "i"}}, **bad})


# --- Starting the trial -----------------------------------------------------------------


@pytest.mark.parametrize("promote_with", ["Spec", "Annotation"])
def test_a_succeeded_retrain_goes_on_trial_through_the_annotation(promote_with: str) -> None:
    status, acts = run(
        record("Running", created=True),
        spec=spec(promote_with=promote_with),
        training_job=tj("Succeeded"),
        target=target(trial=None),
    )
    assert last(status).result == "Shadowing" and status.retrains == []
    trial = trial_of(status)
    assert trial.champion_uri == CHAMPION and trial.started == "2026-01-01T12:00:00Z"
    assert acts.promote is not None and acts.promote.name == "md"
    # The spec is never written for the trial, whichever promoteWith says.
    assert set(acts.promote.patch) == {"metadata"}
    written = json.loads(acts.promote.patch["metadata"]["annotations"][SHADOW_TRIAL_ANNOTATION])
    assert written == {
        "uri": CHALLENGER,
        "by": "DriftMonitor/m",
        "trainingJob": "m-retrain-1",
        "mirrorPercent": 100,
        "minSamples": 50,
    }
    assert reasons(acts) == ["ShadowTrial"]
    blocked = retrain_blocked(spec(), status, NOW, 0)
    assert blocked == f"; {CHALLENGER} on trial as the shadow of md"
    cond = accepted_condition(status)
    assert cond is not None and cond.status is None and cond.reason == "ShadowTrial"


def test_the_trial_comes_after_the_evaluation_gate_passed() -> None:
    ev = Evaluation(job="m-retrain-1-eval", metric="accuracy", champion_uri=CHAMPION)
    evaluating = record("Evaluating", created=True, model_uri=CHALLENGER, evaluation=ev)
    status, acts = run(
        evaluating,
        spec=spec(evaluate=True),
        evaluation_job=eval_job("Complete"),
        evaluation_pod=pod(verdict(True)),
        target=target(trial=None),
    )
    assert last(status).result == "Shadowing"
    assert reasons(acts) == ["EvaluationPassed", "ShadowTrial"]
    assert acts.promote is not None and "spec" not in acts.promote.patch


def test_a_deployment_with_its_own_shadow_cannot_hold_a_trial() -> None:
    theirs = {"model": {"uri": "pvc://models/theirs"}}
    status, acts = run(
        record("Running", created=True),
        spec=spec(),
        training_job=tj("Succeeded"),
        target=target(trial=None, shadow=theirs),
    )
    assert last(status).result == "EvaluationFailed" and acts.promote is None
    assert trial_of(status).reason == "ShadowInUse" and "pvc://models/theirs" in (
        trial_of(status).message or ""
    )
    assert status.retrains[0].result == "EvaluationFailed"


def test_a_refused_note_ends_the_retrain_a_passing_error_retries() -> None:
    status, acts = run(
        record("Running", created=True),
        spec=spec(),
        training_job=tj("Succeeded"),
        target=target(trial=None),
    )
    assert acts.promote is not None
    assert acts.promote.on_refused(KubeError(503, "ServiceUnavailable", "x")) is False
    assert last(status).result == "Shadowing"
    assert acts.promote.on_refused(KubeError(404, "NotFound", "gone")) is True
    assert last(status).result == "EvaluationFailed" and reasons(acts) == ["EvaluationFailed"]


# --- Following it -----------------------------------------------------------------------


def test_too_few_labels_waits_and_looks_again() -> None:
    status, acts = run(shadowing(), spec=spec(), target=target(classes(49, 0.5, 0.9, 0.001)))
    assert last(status).result == "Shadowing" and trial_of(status).samples == 49
    assert acts.promote is None and acts.events == []
    assert acts.requeue_after == 60.0


def test_figures_of_another_shadow_do_not_count() -> None:
    status, _ = run(
        shadowing(),
        spec=spec(),
        target=target(classes(500, 0.5, 0.9, 0.001), shadow_uri="pvc://models/older"),
    )
    assert last(status).result == "Shadowing" and trial_of(status).samples == 0


def test_too_few_labels_past_the_timeout_is_rejected_and_the_shadow_removed() -> None:
    status, acts = run(
        shadowing(), spec=spec(timeout="5m"), target=target(classes(10, 0.5, 0.9, 0.001))
    )
    assert last(status).result == "Rejected" and trial_of(status).reason == "TooFewLabels"
    assert acts.promote is not None
    assert acts.promote.patch == {"metadata": {"annotations": {SHADOW_TRIAL_ANNOTATION: None}}}
    assert status.retrains[0].shadow is not None
    assert status.retrains[0].shadow.message == "10 of 50 labelled requests within 5m"


def test_a_better_challenger_is_promoted_and_the_note_removed_in_the_same_patch() -> None:
    status, acts = run(
        shadowing(), spec=spec(margin=0.1), target=target(classes(60, 0.6, 0.8, 0.01))
    )
    assert last(status).result == "Promoted"
    trial = trial_of(status)
    assert (trial.passed, trial.reason, trial.metric) == (True, "Improved", "accuracy")
    assert (trial.champion, trial.challenger, trial.p_value) == (0.6, 0.8, 0.01)
    assert acts.promote is not None
    annotations = acts.promote.patch["metadata"]["annotations"]
    assert annotations[SHADOW_TRIAL_ANNOTATION] is None and PROMOTION_ANNOTATION in annotations
    assert acts.promote.patch["spec"]["model"]["uri"] == CHALLENGER
    assert reasons(acts) == ["ShadowTrialPassed", "Promoted"]
    cond = accepted_condition(status)
    assert cond is not None and cond.status is True and cond.reason == "Improved"


def test_under_promote_with_annotation_the_promotion_stays_out_of_the_spec() -> None:
    status, acts = run(
        shadowing(),
        spec=spec(promote_with="Annotation"),
        target=target(classes(60, 0.6, 0.8, 0.01)),
    )
    assert last(status).result == "Promoted"
    assert acts.promote is not None and set(acts.promote.patch) == {"metadata"}
    annotations = acts.promote.patch["metadata"]["annotations"]
    assert annotations[SHADOW_TRIAL_ANNOTATION] is None
    assert json.loads(annotations[PROMOTION_ANNOTATION])["uri"] == CHALLENGER


def test_a_better_challenger_with_canary_steps_rolls_out_as_today() -> None:
    steps = {"model": {"uri": "x"}, "steps": [{"trafficPercent": 50}]}
    status, acts = run(
        shadowing(), spec=spec(), target=target(classes(60, 0.6, 0.8, 0.01), canary=steps)
    )
    assert last(status).result == "RollingOut"
    assert acts.promote is not None and acts.promote.patch["spec"]["canary"]["model"]["uri"] == (
        CHALLENGER
    )


@pytest.mark.parametrize(
    ("labelled", "gate", "reason"),
    [
        (classes(60, 0.8, 0.6, 0.01), {}, "NotBetter"),
        (classes(60, 0.6, 0.65, 0.01), {"margin": 0.1}, "NotBetter"),
        (classes(60, 0.6, 0.8, 0.2), {}, "NotSignificant"),
        (classes(60, 0.6, 0.8, 0.04), {"significance": 0.01}, "NotSignificant"),
        (classes(60, 0.8, 0.6, 0.5), {"require": "NotWorse", "margin": 0.1}, "Worse"),
        (classes(60, 0.8, 0.75, 0.01), {"require": "NotWorse", "margin": 0.1}, "Worse"),
        # Equal is not better, whatever the test says, with no margin asked.
        (classes(60, 0.7, 0.7, 0.01), {}, "NotBetter"),
        # Just under the margin, and just over it for NotWorse, in counts of 60.
        (classes(60, 36 / 60, 41 / 60, 0.01), {"margin": 0.1}, "NotBetter"),
        (classes(60, 48 / 60, 41 / 60, 0.5), {"require": "NotWorse", "margin": 0.1}, "Worse"),
    ],
)
def test_a_challenger_short_of_the_requirement_is_rejected(
    labelled: dict[str, Any], gate: dict[str, Any], reason: str
) -> None:
    status, acts = run(shadowing(), spec=spec(**gate), target=target(labelled))
    assert last(status).result == "Rejected" and trial_of(status).reason == reason
    assert trial_of(status).passed is False
    assert acts.promote is not None
    assert acts.promote.patch == {"metadata": {"annotations": {SHADOW_TRIAL_ANNOTATION: None}}}
    assert acts.events[0][:2] == ("Warning", "Rejected")
    assert f"{CHAMPION} keeps serving" in acts.events[0][2]
    cond = accepted_condition(status)
    assert cond is not None and cond.status is False and cond.reason == reason


@pytest.mark.parametrize(
    ("labelled", "gate"),
    [
        (classes(60, 0.8, 0.78, 0.5), {"require": "NotWorse", "margin": 0.05}),
        (classes(60, 0.8, 0.8, 1.0), {"require": "NotWorse"}),
        (classes(60, 0.6, 0.9, 0.001), {"require": "NotWorse"}),
        # Exactly the margin worse, in counts of 60: 48/60 - 42/60 is 0.1000...09 in floats.
        (classes(60, 48 / 60, 42 / 60, 0.5), {"require": "NotWorse", "margin": 0.1}),
    ],
)
def test_a_challenger_not_worse_passes_that_requirement(
    labelled: dict[str, Any], gate: dict[str, Any]
) -> None:
    status, _ = run(shadowing(), spec=spec(**gate), target=target(labelled))
    assert last(status).result == "Promoted" and trial_of(status).reason == "NotWorse"


def test_better_by_exactly_the_margin_is_better() -> None:
    """42/60 - 36/60 is 0.0999...98 in floats: still the margin of 0.1, so it passes."""
    labelled = classes(60, 36 / 60, 42 / 60, 0.01)
    status, _ = run(shadowing(), spec=spec(margin=0.1), target=target(labelled))
    assert last(status).result == "Promoted" and trial_of(status).reason == "Improved"


def test_regressors_are_judged_on_mean_absolute_error() -> None:
    errors = {"samples": 80, "championMAE": 2.0, "shadowMAE": 1.5, "test": "paired-t"}
    status, _ = run(shadowing(), spec=spec(), target=target({**errors, "pValue": 0.001}))
    assert last(status).result == "Promoted"
    assert (trial_of(status).metric, trial_of(status).reason) == ("mae", "Improved")
    status, _ = run(
        shadowing(), spec=spec(margin=1.0), target=target({**errors, "pValue": 0.001})
    )
    assert last(status).result == "Rejected" and trial_of(status).reason == "NotBetter"


@pytest.mark.parametrize(
    ("obs", "reason", "result"),
    [
        ({"spec": "no gate"}, "ShadowTrialCancelled", "Succeeded"),
        ({"target": None}, "ShadowTrialCancelled", "Succeeded"),
        ({"trial": None}, "ShadowTrialCancelled", "Succeeded"),
        ({"trial": "pvc://models/other"}, "ShadowTrialCancelled", "Succeeded"),
        ({"serving": "pvc://models/new"}, "ChampionChanged", "Succeeded"),
        ({"shadow": {"model": {"uri": "pvc://models/theirs"}}}, "ShadowInUse", "EvaluationFailed"),
    ],
)
def test_a_trial_that_cannot_go_on_ends_without_a_promotion(
    obs: dict[str, Any], reason: str, result: str
) -> None:
    gate_spec = spec()
    if obs.pop("spec", None):
        on_drift = gate_spec.on_drift.model_copy(update={"shadow": None})
        gate_spec = gate_spec.model_copy(update={"on_drift": on_drift})
    md = None if "target" in obs else target(classes(60, 0.6, 0.9, 0.001), **obs)
    status, acts = run(shadowing(), spec=gate_spec, target=md)
    assert last(status).result == result and trial_of(status).reason == reason
    assert status.retrains[0].result == result and acts.events[0][1] == reason
    if md is None:
        assert acts.promote is None
    else:
        assert acts.promote is not None and "spec" not in acts.promote.patch
        assert acts.promote.patch["metadata"]["annotations"] == {SHADOW_TRIAL_ANNOTATION: None}


# --- The deployment's side: the note serves as its shadow -------------------------------


def md_spec(**extra: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"uri": CHAMPION}, **extra})


def test_the_note_is_the_shadow_unless_the_spec_has_one() -> None:
    gate = spec(mirrorPercent=40).on_drift.shadow
    assert gate is not None
    written = shadow_trial.note(CHALLENGER, "m", "m-retrain-1", gate)
    body = {"metadata": {"annotations": {SHADOW_TRIAL_ANNOTATION: written}}}
    served = shadow_trial.served_spec(md_spec(), body)
    assert served.shadow is not None and served.shadow.model.uri == CHALLENGER
    assert (served.shadow.mirror_percent, served.shadow.min_samples) == (40, 50)
    theirs = md_spec(shadow={"model": {"uri": "pvc://models/theirs"}})
    assert shadow_trial.served_spec(theirs, body) == theirs
    assert shadow_trial.served_spec(md_spec(), {"metadata": {}}) == md_spec()
    for broken in ("", "{", "[]", '{"uri": ""}', json.dumps({"uri": CHAMPION})):
        bad = {"metadata": {"annotations": {SHADOW_TRIAL_ANNOTATION: broken}}}
        assert shadow_trial.served_spec(md_spec(), bad).shadow is None


def test_a_record_from_before_the_gate_reads_as_before() -> None:
    old = RetrainRecord(training_job="m-retrain-1", time="t", result="Promoted")
    assert RetrainRecord.model_validate(old.model_dump(by_alias=True)).shadow is None
