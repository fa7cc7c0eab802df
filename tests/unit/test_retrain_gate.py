"""The retraining loop's pure parts: the verdict the operator reads from an evaluation
pod, the RetrainAccepted condition, the evaluation Job it renders, the promotion note
and the ModelDeployment history built from it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
    Evaluate,
    Evaluation,
    RetrainRecord,
)
from kubeloop.api.modeldeployment import HistoryEntry
from kubeloop.api.trainingjob import Scheduling
from kubeloop.controllers import history, retrain
from kubeloop.names import EVALUATION_LABEL, MODEL_URI_ANNOTATION, PROMOTION_ANNOTATION
from kubeloop.render import evaluation as render_eval
from kubeloop.render.modeldeployment import FETCH_CONTAINER

VERDICT = {
    "metric": "accuracy",
    "champion": 0.71,
    "challenger": 0.93,
    "passed": True,
    "reason": "Improved",
    "message": "accuracy 0.93 vs 0.71",
}


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "[1, 2]",
        json.dumps({**VERDICT, "challenger": "0.9"}),
        json.dumps({**VERDICT, "challenger": float("nan")}),
        json.dumps({**VERDICT, "challenger": True}),
        json.dumps({**VERDICT, "champion": "x"}),
        json.dumps({**VERDICT, "passed": "yes"}),
        json.dumps({k: v for k, v in VERDICT.items() if k != "passed"}),
        json.dumps({**VERDICT, "message": "x" * 5000}),
    ],
)
def test_no_verdict_from_garbage(text: str | None) -> None:
    assert retrain.parse_verdict(text) is None


def test_verdict_and_error_are_read() -> None:
    got = retrain.parse_verdict(json.dumps(VERDICT))
    assert got == {
        "champion": 0.71,
        "challenger": 0.93,
        "passed": True,
        "reason": "Improved",
        "message": "accuracy 0.93 vs 0.71",
    }
    assert retrain.parse_verdict(json.dumps({**VERDICT, "champion": None}))["champion"] is None
    assert retrain.parse_verdict('{"error": "no column species"}') == {"error": "no column species"}


def _status(result: str, passed: bool | None, reason: str | None = None) -> DriftMonitorStatus:
    ev = Evaluation(
        job="m-retrain-1-eval",
        metric="accuracy",
        champion_uri="pvc://m/a",
        champion=0.7,
        challenger=0.6,
        passed=passed,
        reason=reason,
        message="why",
    )
    last = RetrainRecord(
        training_job="m-retrain-1", time="t", result=result, model_uri="pvc://m/b", evaluation=ev
    )
    return DriftMonitorStatus(last_retrain=last)


def test_accepted_condition_follows_the_verdict() -> None:
    assert retrain.accepted_condition(DriftMonitorStatus()) is None
    evaluating = retrain.accepted_condition(_status(retrain.EVALUATING, None))
    assert evaluating is not None and evaluating.status is None
    assert evaluating.reason == "Evaluating"
    rejected = retrain.accepted_condition(_status(retrain.REJECTED, False, "NotBetter"))
    assert rejected is not None and rejected.status is False
    assert rejected.reason == "NotBetter"
    assert "challenger 0.6, champion 0.7" in rejected.message
    failed = retrain.accepted_condition(
        _status(retrain.EVALUATION_FAILED, False, retrain.EVALUATION_FAILED)
    )
    assert failed is not None and (failed.status, failed.reason) == (False, "EvaluationFailed")
    passed = retrain.accepted_condition(_status(retrain.PROMOTED, True, "Improved"))
    assert passed is not None and passed.status is True


def test_an_evaluation_holds_the_next_retrain_back() -> None:
    import datetime as dt

    spec = DriftMonitorSpec.model_validate(
        {"modelDeployment": "m", "onDrift": {"retrain": {"template": {"image": "i"}}}}
    )
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    blocked = retrain.retrain_blocked(spec, _status(retrain.EVALUATING, None), now, 0.0)
    assert blocked is not None and "evaluating" in blocked


def _evaluate(**extra: Any) -> Evaluate:
    return Evaluate.model_validate(
        {"data": {"uri": "pvc://data/holdout.csv"}, "metric": "f1", **extra}
    )


def test_evaluation_job_is_bounded_and_safe() -> None:
    job = render_eval.render_job(
        _evaluate(floor=0.8, labelColumn="species"),
        name="m-retrain-1-eval",
        namespace="ns",
        monitor="m",
        champion="pvc://models/a",
        challenger="pvc://models/b",
        image="img",
        owner={"kind": "DriftMonitor", "name": "m"},
        fallback_scheduling=Scheduling(node_selector={"pool": "train"}),
    )
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 600
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert container["args"][:5] == [
        "evaluate",
        "--champion",
        "file:///mnt/pvc/models/a",
        "--challenger",
        "file:///mnt/pvc/models/b",
    ]
    args = container["args"]
    assert args[args.index("--data") + 1] == "file:///mnt/pvc/data/holdout.csv"
    assert args[args.index("--floor") + 1] == "0.8"
    assert args[args.index("--label-column") + 1] == "species"
    assert args[args.index("--termination-log") + 1] == container["terminationMessagePath"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"models", "data"}
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] != "tmp")
    assert pod["nodeSelector"] == {"pool": "train"}
    labels = spec["template"]["metadata"]["labels"]
    assert labels[EVALUATION_LABEL] == "m"


def test_evaluation_without_champion_and_long_names() -> None:
    args = render_eval.args(_evaluate(), None, "pvc://models/b")
    assert "--champion" not in args
    name = render_eval.job_name("x" * 60 + "-retrain-12")
    assert len(name) <= 63 and name.endswith("-eval")
    assert name != render_eval.job_name("x" * 60 + "-retrain-13")


def test_promotion_note_becomes_the_history_entry() -> None:
    record = _status(retrain.PROMOTED, True, "Improved").last_retrain
    assert record is not None
    patch = retrain.promotion_patch({"spec": {}}, "pvc://m/b", "mon", record)
    assert patch["spec"] == {
        "model": {"uri": "pvc://m/b", "fromTrainingJob": None, "fromExperiment": None}
    }
    annotations = patch["metadata"]["annotations"]
    prev = [HistoryEntry.model_validate({"uri": "pvc://m/a", "from": "t0", "changedBy": "user"})]
    pods = [_pod("pvc://m/b", json.dumps({"manifestSha256": "a" * 64}))]
    got = history.update(prev, "pvc://m/b", "t1", annotations, "m-retrain-1", pods)
    assert [e.uri for e in got] == ["pvc://m/b", "pvc://m/a"]
    assert got[1].to == "t1" and got[0].from_ == "t1" and got[0].to is None
    assert got[0].changed_by == "DriftMonitor/mon"
    assert got[0].evaluation is not None and got[0].evaluation.challenger == 0.6
    assert got[0].manifest_sha256 == "a" * 64
    assert got[0].training_job == "m-retrain-1"
    # A later change by the user to another model is the user's, whatever the note says.
    again = history.update(got, "pvc://m/c", "t2", annotations, None, [])
    assert again[0].changed_by == "user" and again[0].evaluation is None
    # Back to the loop's model by hand: that promotion is already in the history.
    back = history.update(again, "pvc://m/b", "t3", annotations, None, [])
    assert back[0].changed_by == "user" and back[0].evaluation is None
    # The canary gets the model when the deployment has canary settings.
    target = {"spec": {"canary": {"trafficPercent": 10}}}
    canary = retrain.promotion_patch(target, "pvc://m/b", "mon", record)
    assert "canary" in canary["spec"]


def _pod(uri: str, message: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {MODEL_URI_ANNOTATION: uri}},
        "status": {
            "initContainerStatuses": [
                {"name": FETCH_CONTAINER, "state": {"terminated": {"message": message}}}
            ]
        },
    }


def test_history_is_bounded_and_stable() -> None:
    entries: list[HistoryEntry] = []
    for i in range(15):
        entries = history.update(entries, f"pvc://m/{i}", f"t{i}", {}, None, [])
    assert len(entries) == history.MAX_ENTRIES
    assert entries[0].uri == "pvc://m/14" and entries[-1].uri == "pvc://m/5"
    assert history.update(entries, "pvc://m/14", "t99", {}, None, []) == entries
    assert history.update(entries, None, "t99", {}, None, []) == entries


@pytest.mark.parametrize(
    "message", ["", "{}", '{"manifestSha256": "short"}', "[]", "x" * 5000, "{bad"]
)
def test_no_manifest_hash_from_garbage(message: str) -> None:
    assert history.manifest_sha256([_pod("pvc://m/b", message)], "pvc://m/b") is None


def test_a_note_for_another_model_is_not_trusted() -> None:
    note = json.dumps({"uri": "pvc://m/other", "by": "DriftMonitor/x"})
    assert history.promoted_by({PROMOTION_ANNOTATION: note}, "pvc://m/b") == (
        "user",
        None,
        None,
    )
    assert history.promoted_by({PROMOTION_ANNOTATION: "{oops"}, "pvc://m/b")[0] == "user"


def test_old_status_with_a_count_is_read() -> None:
    status = DriftMonitorStatus.model_validate({"retrains": 3})
    assert status.retrain_count == 3 and status.retrains == []
