"""The retrain loop's state machine, row by row of its table (controllers/retrain_step.py):
from a record and what is observed, the next record and what to do. No API server."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, RetrainRecord
from kubeloop.controllers.retrain_actions import Actions, Observed
from kubeloop.controllers.retrain_step import step
from kubeloop.kube import KubeError
from kubeloop.names import CHAMPION_ANNOTATION

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
MONITOR = {
    "apiVersion": "kubeloop.io/v1alpha1",
    "kind": "DriftMonitor",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u1"},
}
CHAMPION, CHALLENGER = "pvc://models/a", "pvc://models/b"
GATE = {"data": {"uri": "pvc://data/holdout.csv"}, "metric": "accuracy"}


def spec(evaluate: bool = False, promote: bool = True, retrain: bool = True) -> DriftMonitorSpec:
    on_drift: dict[str, Any] = {"promote": promote}
    if retrain:
        on_drift["retrain"] = {
            "template": {"image": "i", "output": {"uri": "pvc://models/{trainingJob}"}}
        }
    if evaluate:
        on_drift["evaluate"] = GATE
    return DriftMonitorSpec.model_validate({"modelDeployment": "md", "onDrift": on_drift})


def target(serving: str = CHAMPION, **md_spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "md", "namespace": "ns"},
        "spec": {"model": {"uri": serving}, **md_spec},
        "status": {"activeModelUri": serving},
    }


def record(result: str, **fields: Any) -> DriftMonitorStatus:
    last = RetrainRecord(
        training_job="m-retrain-1", time="2026-01-01T11:00:00Z", result=result, **fields
    )
    return DriftMonitorStatus(retrain_count=1, last_retrain=last)


def tj(phase: str, uri: str = CHALLENGER, message: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": "m-retrain-1", "uid": "tj1", "ownerReferences": [{"uid": "u1"}]},
        "status": {"phase": phase, "modelUri": uri, "message": message},
    }


def eval_job(
    done: str | None = None, ago: float = 60.0, champion: str = CHAMPION
) -> dict[str, Any]:
    conds = []
    if done:
        at = (NOW - dt.timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        conds = [
            {
                "type": done,
                "status": "True",
                "lastTransitionTime": at,
                "reason": "DeadlineExceeded" if done == "Failed" else "",
                "message": "late",
            }
        ]
    return {
        "metadata": {
            "name": "m-retrain-1-eval",
            "uid": "job1",
            "annotations": {CHAMPION_ANNOTATION: champion},
        },
        "status": {"conditions": conds},
    }


def pod(message: str | None, exit_code: int = 0) -> dict[str, Any]:
    term: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
    }
    if message is not None:
        term["message"] = message
    return {
        "metadata": {"name": "m-retrain-1-eval-x", "ownerReferences": [{"uid": "job1"}]},
        "spec": {"nodeName": "n1"},
        "status": {"containerStatuses": [{"name": "evaluate", "state": {"terminated": term}}]},
    }


def verdict(passed: bool, **extra: Any) -> str:
    return json.dumps(
        {
            "champion": 0.7,
            "challenger": 0.9 if passed else 0.6,
            "passed": passed,
            "reason": "Improved" if passed else "NotBetter",
            "message": "scores",
            **extra,
        }
    )


def evaluating(**fields: Any) -> DriftMonitorStatus:
    from kubeloop.api.driftmonitor import Evaluation

    ev = Evaluation(job="m-retrain-1-eval", metric="accuracy", champion_uri=CHAMPION)
    return record("Evaluating", created=True, model_uri=CHALLENGER, evaluation=ev, **fields)


def run(status: DriftMonitorStatus, **obs: Any) -> tuple[DriftMonitorStatus, Actions]:
    obs.setdefault("spec", spec())
    obs.setdefault("target", target())
    before = status.model_copy(deep=True)
    out = step(status, Observed(monitor=MONITOR, now=NOW, image="img", **obs))
    assert status == before, "the step changed its input"
    return out


def reasons(acts: Actions) -> list[str]:
    return [e[1] for e in acts.events]


def last(status: DriftMonitorStatus) -> RetrainRecord:
    assert status.last_retrain is not None
    return status.last_retrain


# --- Starting ----------------------------------------------------------------------------


def test_a_wanted_retrain_is_counted_first_then_created() -> None:
    status, acts = run(
        DriftMonitorStatus(), wants_retrain=True, next_number=1, next_name="m-retrain-1"
    )
    assert status.retrain_count == 1 and last(status).result == "Running"
    assert last(status).training_job == "m-retrain-1" and not last(status).created
    assert acts.status_first and acts.started
    (create,) = acts.creates
    assert create.obj["kind"] == "TrainingJob" and create.obj["metadata"]["name"] == "m-retrain-1"
    assert create.obj["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert create.obj["spec"]["output"]["uri"] == "pvc://models/m-retrain-1"
    assert acts.events == [("Normal", "RetrainStarted", "created TrainingJob m-retrain-1")]


def test_a_taken_name_is_stepped_over_and_said() -> None:
    status, acts = run(
        DriftMonitorStatus(),
        wants_retrain=True,
        next_number=2,
        next_name="m-retrain-2",
        skipped=["TrainingJob m-retrain-1"],
    )
    assert status.retrain_count == 2 and last(status).training_job == "m-retrain-2"
    assert "(TrainingJob m-retrain-1 exists and is not this monitor's)" in acts.events[0][2]


def test_nothing_starts_without_a_retrain_template_or_while_one_runs() -> None:
    status, acts = run(DriftMonitorStatus(), spec=spec(retrain=False), wants_retrain=True)
    assert status.last_retrain is None and acts == Actions()
    running = record("Running", created=True)
    status, acts = run(running, training_job=tj("Running"), wants_retrain=True, next_name="x")
    assert status == running and not acts.creates


@pytest.mark.parametrize(("code", "final"), [(422, True), (403, True), (500, False), (0, False)])
def test_a_refused_retrain_is_failed_a_passing_error_is_retried(code: int, final: bool) -> None:
    status, acts = run(
        DriftMonitorStatus(), wants_retrain=True, next_number=1, next_name="m-retrain-1"
    )
    assert acts.creates[0].on_refused(KubeError(code, "R", "no")) is final
    if final:
        assert last(status).result == "Failed" and status.retrains[0].result == "Failed"
        assert "RetrainFailed" in reasons(acts)
        assert last(status).message == f"refused by the API server: {code} R: no"
    else:
        assert last(status).result == "Running"


# --- Running -----------------------------------------------------------------------------


def test_a_counted_retrain_not_yet_created_is_created() -> None:
    status, acts = run(record("Running"))
    assert [c.obj["metadata"]["name"] for c in acts.creates] == ["m-retrain-1"]
    assert last(status).result == "Running" and not acts.status_first


def test_a_name_held_by_another_is_not_adopted() -> None:
    status, acts = run(record("Running"), taken="TrainingJob m-retrain-1")
    assert last(status).result == "Failed" and not acts.creates
    assert acts.events[0][1] == "RetrainFailed" and "not adopted" in acts.events[0][2]


def test_a_deleted_retrain_is_failed_not_created_again() -> None:
    status, acts = run(record("Running", created=True), gone=True)
    assert last(status).result == "Failed" and last(status).finish_time == "2026-01-01T12:00:00Z"
    assert not acts.creates and "deleted before it ended" in acts.events[0][2]
    assert "deleted before it ended" in (last(status).message or "")


def test_a_running_retrain_is_recorded_as_created_and_waited_for() -> None:
    status, acts = run(record("Running"), training_job=tj("Running"))
    assert last(status).created is True and last(status).result == "Running"
    assert acts == Actions()


def test_a_failed_retrain_is_failed() -> None:
    status, acts = run(record("Running", created=True), training_job=tj("Failed", message="OOM"))
    assert last(status).result == "Failed" and "OOM" in acts.events[0][2]
    assert [r.result for r in status.retrains] == ["Failed"]
    assert last(status).message == acts.events[0][2]  # kept: the Event expires


def test_the_words_kept_on_a_failed_record_are_bounded() -> None:
    status, _ = run(record("Running", created=True), training_job=tj("Failed", message="x" * 5000))
    words = last(status).message or ""
    assert len(words) == 400 and words.startswith("TrainingJob m-retrain-1 failed: xxx")


def test_a_succeeded_retrain_without_promotion_is_succeeded() -> None:
    status, acts = run(
        record("Running", created=True), spec=spec(promote=False), training_job=tj("Succeeded")
    )
    assert last(status).result == "Succeeded" and last(status).model_uri == CHALLENGER
    assert acts.promote is None


def test_a_succeeded_retrain_is_promoted_and_a_refusal_is_final() -> None:
    status, acts = run(record("Running", created=True), training_job=tj("Succeeded"))
    assert last(status).result == "Promoted" and reasons(acts) == ["Promoted"]
    assert acts.promote is not None and acts.promote.name == "md"
    assert acts.promote.patch["spec"] == {
        "model": {"uri": CHALLENGER, "fromTrainingJob": None, "fromExperiment": None}
    }
    assert acts.promote.field_manager == "kubeloop-promoter"
    # A 5xx or a lost connection passes: the step is taken again, nothing changes.
    assert acts.promote.on_refused(KubeError(503, "ServiceUnavailable", "x")) is False
    assert last(status).result == "Promoted"
    # A refusal: Succeeded, not promoted, and only PromotionFailed is said.
    assert acts.promote.on_refused(KubeError(422, "Invalid", "bad")) is True
    assert last(status).result == "Succeeded" and reasons(acts) == ["PromotionFailed"]


def test_a_deployment_with_canary_steps_rolls_the_model_out() -> None:
    md = target(canary={"steps": [10, 50]})
    status, acts = run(record("Running", created=True), training_job=tj("Succeeded"), target=md)
    assert last(status).result == "RollingOut" and reasons(acts) == ["RollingOut"]
    assert acts.promote is not None and "canary" in acts.promote.patch["spec"]
    assert status.retrains == []  # not ended


# --- Evaluating ----------------------------------------------------------------------------


def test_a_gated_retrain_is_evaluated_against_the_champion() -> None:
    status, acts = run(
        record("Running", created=True), spec=spec(evaluate=True), training_job=tj("Succeeded")
    )
    ev = last(status).evaluation
    assert last(status).result == "Evaluating" and ev is not None
    assert ev.job == "m-retrain-1-eval" and ev.champion_uri == CHAMPION
    (create,) = acts.creates
    assert create.obj["kind"] == "Job" and create.store_kind == "DriftMonitor/Job"
    assert reasons(acts) == ["EvaluationStarted"]
    assert create.on_refused(KubeError(403, "Forbidden", "quota")) is True
    assert last(status).result == "EvaluationFailed"


def test_an_evaluation_job_made_before_a_restart_keeps_its_champion() -> None:
    status, acts = run(
        record("Running", created=True),
        spec=spec(evaluate=True),
        training_job=tj("Succeeded"),
        evaluation_job=eval_job(champion="pvc://models/older"),
    )
    ev = last(status).evaluation
    assert ev is not None and ev.champion_uri == "pvc://models/older" and not acts.creates


def test_a_challenger_written_over_the_champion_is_not_evaluated() -> None:
    status, acts = run(
        record("Running", created=True),
        spec=spec(evaluate=True),
        training_job=tj("Succeeded", uri=CHAMPION),
    )
    assert last(status).result == "EvaluationFailed" and not acts.creates
    assert "{trainingJob}" in (last(status).evaluation.message or "")  # type: ignore[union-attr]


def test_an_evaluation_job_of_another_is_not_adopted() -> None:
    status, acts = run(evaluating(), spec=spec(evaluate=True), evaluation_taken=True)
    assert last(status).result == "EvaluationFailed" and not acts.creates
    assert "not adopted" in acts.events[0][2]


def test_a_lost_evaluation_job_is_made_again() -> None:
    status, acts = run(evaluating(), spec=spec(evaluate=True))
    assert last(status).result == "Evaluating" and [c.obj["kind"] for c in acts.creates] == ["Job"]


def test_the_gate_removed_meanwhile_cancels_the_evaluation() -> None:
    status, acts = run(evaluating(), spec=spec(evaluate=False), evaluation_job=eval_job())
    assert last(status).result == "Succeeded" and reasons(acts) == ["EvaluationCancelled"]


def test_a_running_evaluation_is_waited_for() -> None:
    status, acts = run(evaluating(), spec=spec(evaluate=True), evaluation_job=eval_job())
    assert status == evaluating() and acts == Actions()


def test_a_verdict_on_its_way_is_waited_for_from_the_jobs_own_finish_time() -> None:
    job = eval_job("Complete", ago=3)
    status, acts = run(evaluating(), spec=spec(evaluate=True), evaluation_job=job)
    assert last(status).result == "Evaluating" and acts.requeue_after == 1.0
    late = eval_job("Complete", ago=30)
    status, acts = run(evaluating(), spec=spec(evaluate=True), evaluation_job=late)
    assert last(status).result == "EvaluationFailed" and "without a verdict" in acts.events[0][2]


def test_no_verdict_says_why() -> None:
    status, _ = run(
        evaluating(),
        spec=spec(evaluate=True),
        evaluation_job=eval_job("Complete"),
        evaluation_pod=pod(None),
    )
    message = last(status).evaluation.message  # type: ignore[union-attr]
    assert "pod m-retrain-1-eval-x on node n1: exit code 0 (Completed)" in (message or "")
    status, _ = run(
        evaluating(),
        spec=spec(evaluate=True),
        evaluation_job=eval_job("Failed"),
        evaluation_pod=pod('{"error": "no column species"}', exit_code=2),
    )
    assert last(status).evaluation.message == "no column species"  # type: ignore[union-attr]
    assert last(status).result == "EvaluationFailed"


def test_a_worse_challenger_is_rejected() -> None:
    status, acts = run(
        evaluating(),
        spec=spec(evaluate=True),
        evaluation_job=eval_job("Complete"),
        evaluation_pod=pod(verdict(False)),
    )
    ev = last(status).evaluation
    assert last(status).result == "Rejected" and ev is not None and ev.passed is False
    assert ev.challenger == 0.6 and ev.reason == "NotBetter" and acts.promote is None
    assert reasons(acts) == ["Rejected"] and "keeps serving" in acts.events[0][2]


def test_a_passing_verdict_about_a_replaced_champion_does_not_apply() -> None:
    status, acts = run(
        evaluating(),
        spec=spec(evaluate=True),
        evaluation_job=eval_job("Complete"),
        evaluation_pod=pod(verdict(True)),
        target=target(serving="pvc://models/hand-picked"),
    )
    assert last(status).result == "Succeeded" and acts.promote is None
    assert last(status).evaluation.reason == "ChampionChanged"  # type: ignore[union-attr]


def test_a_passing_challenger_is_promoted_with_its_scores() -> None:
    status, acts = run(
        evaluating(),
        spec=spec(evaluate=True),
        evaluation_job=eval_job("Complete"),
        evaluation_pod=pod(verdict(True)),
    )
    assert last(status).result == "Promoted" and reasons(acts) == ["EvaluationPassed", "Promoted"]
    assert acts.promote is not None
    note = json.loads(acts.promote.patch["metadata"]["annotations"]["kubeloop.io/promotion"])
    assert note["evaluation"] == {"metric": "accuracy", "champion": 0.7, "challenger": 0.9}
    # A refusal of the patch: only PromotionFailed; the verdict stays recorded.
    assert acts.promote.on_refused(KubeError(404, "NotFound", "gone"))
    assert reasons(acts) == ["EvaluationPassed", "PromotionFailed"]
    assert last(status).result == "Succeeded" and last(status).evaluation.passed  # type: ignore[union-attr]


# --- Rolling out ---------------------------------------------------------------------------


def rolling(md: dict[str, Any] | None) -> tuple[DriftMonitorStatus, Actions]:
    return run(record("RollingOut", created=True, model_uri=CHALLENGER), target=md)


def test_a_canary_that_passed_every_step_is_promoted() -> None:
    md = target(serving=CHALLENGER, canary={"steps": [10], "model": {"uri": CHALLENGER}})
    md["status"]["canary"] = {"state": "Promoted", "modelUri": CHALLENGER}
    status, acts = rolling(md)
    assert last(status).result == "Promoted" and reasons(acts) == ["Promoted"]


def test_a_canary_replaced_or_gone_is_superseded() -> None:
    md = target(canary={"steps": [10], "model": {"uri": "pvc://models/other"}})
    assert last(rolling(md)[0]).result == "Superseded"
    assert last(rolling(None)[0]).result == "Superseded"


def test_a_canary_rolled_back_is_rolled_back() -> None:
    md = target(canary={"steps": [10], "model": {"uri": CHALLENGER}})
    md["status"]["canary"] = {"state": "RolledBack", "modelUri": CHALLENGER, "message": "errors"}
    status, acts = rolling(md)
    assert last(status).result == "RolledBack" and "errors" in acts.events[0][2]


def test_a_canary_under_way_is_waited_for() -> None:
    md = target(canary={"steps": [10], "model": {"uri": CHALLENGER}})
    md["status"]["canary"] = {"state": "Progressing", "modelUri": CHALLENGER}
    status, acts = rolling(md)
    assert last(status).result == "RollingOut" and acts == Actions()


def test_an_ended_retrain_is_kept_newest_first_at_most_ten() -> None:
    old = [
        RetrainRecord(training_job=f"m-retrain-{n}", time="t", result="Failed")
        for n in range(9, 0, -1)
    ]
    status = record("Running", created=True)
    status.retrains = [RetrainRecord(training_job="m-retrain-0", time="t", result="Failed"), *old]
    status.retrain_count = 11
    out, _ = run(status, training_job=tj("Failed"))
    assert [r.training_job for r in out.retrains][:2] == ["m-retrain-1", "m-retrain-0"]
    assert len(out.retrains) == 10


# --- A retrain that is a search (onDrift.retrain.experiment) ---------------------------

SEARCH = {
    "trainingJob": {"image": "i", "output": {"uri": "pvc://models/{trainingJob}"}},
    "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 1, "log": True}],
    "objective": {"metric": "loss", "direction": "minimize"},
    "maxTrials": 2,
}


def search_spec(evaluate: bool = False) -> DriftMonitorSpec:
    on_drift: dict[str, Any] = {"promote": True, "retrain": {"experiment": SEARCH}}
    if evaluate:
        on_drift["evaluate"] = GATE
    return DriftMonitorSpec.model_validate({"modelDeployment": "md", "onDrift": on_drift})


def searching(**fields: Any) -> DriftMonitorStatus:
    return record("Running", experiment="m-retrain-1", created=True, **fields)


def experiment(phase: str, best: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "message": "2 trials failed"}
    if best:
        status["bestTrial"] = best
    return {"metadata": {"name": "m-retrain-1", "uid": "e1"}, "status": status}


BEST = {"name": "m-retrain-1-trial-1", "value": 0.2, "modelUri": CHALLENGER}


def test_a_search_retrain_creates_one_experiment_and_records_it() -> None:
    obs = Observed(
        MONITOR, search_spec(), NOW, next_number=1, next_name="m-retrain-1", wants_retrain=True
    )
    status, acts = step(DriftMonitorStatus(), obs)
    assert status.last_retrain is not None and status.last_retrain.experiment == "m-retrain-1"
    (create,) = acts.creates
    assert create.obj["kind"] == "Experiment" and create.store_kind == "Experiment"
    assert create.obj["spec"]["trainingJob"]["output"]["uri"] == "pvc://models/{trainingJob}"
    assert create.obj["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert acts.status_first and "created Experiment m-retrain-1" in acts.events[0][2]


def test_a_search_still_running_waits() -> None:
    obs = Observed(MONITOR, search_spec(), NOW, experiment=experiment("Running", BEST))
    status, acts = step(searching(), obs)
    assert status.last_retrain is not None and status.last_retrain.result == "Running"
    assert not acts.creates and acts.promote is None


def test_a_finished_search_promotes_its_best_trial_without_a_gate() -> None:
    obs = Observed(
        MONITOR, search_spec(), NOW, experiment=experiment("Succeeded", BEST), target=target()
    )
    status, acts = step(searching(), obs)
    last = status.last_retrain
    assert last is not None and last.result == "Promoted"
    assert (last.training_job, last.model_uri) == ("m-retrain-1-trial-1", CHALLENGER)
    assert acts.promote is not None
    assert acts.promote.patch["spec"]["model"]["uri"] == CHALLENGER


def test_a_finished_search_puts_its_best_trial_before_the_gate() -> None:
    obs = Observed(
        MONITOR,
        search_spec(evaluate=True),
        NOW,
        experiment=experiment("Succeeded", BEST),
        target=target(),
    )
    status, acts = step(searching(), obs)
    last = status.last_retrain
    assert last is not None and last.result == "Evaluating" and last.evaluation is not None
    assert last.evaluation.job == "m-retrain-1-trial-1-eval"
    assert last.evaluation.champion_uri == CHAMPION
    (create,) = acts.creates
    args = create.obj["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--challenger") + 1] == "file:///mnt/pvc/models/b"  # CHALLENGER


@pytest.mark.parametrize("ended", [experiment("Failed"), experiment("Succeeded")])
def test_a_search_without_a_best_trial_fails_the_retrain(ended: dict[str, Any]) -> None:
    obs = Observed(MONITOR, search_spec(), NOW, experiment=ended, target=target())
    status, acts = step(searching(), obs)
    assert status.last_retrain is not None and status.last_retrain.result == "Failed"
    assert acts.promote is None and acts.events[0][1] == "RetrainFailed"


def test_a_deleted_search_is_failed_not_created_again() -> None:
    obs = Observed(MONITOR, search_spec(), NOW, gone=True)
    status, acts = step(searching(), obs)
    assert status.last_retrain is not None and status.last_retrain.result == "Failed"
    assert not acts.creates and "Experiment m-retrain-1 was deleted" in acts.events[0][2]
