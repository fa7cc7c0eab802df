"""The TrainingJob decision function, without a cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.controllers.common import parse_spec
from kubeloop.controllers.trainingjob import Observed, plan

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kubeloop.io/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"image": "i", **spec}, "status": status or {}}


def job(name: str, conds: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    from kubeloop.render.trainingjob import render_job

    attempt = int(name.rsplit("-r", 1)[1])
    rendered = render_job(TrainingJobSpec(image="i"), "t", "ns", attempt, {})
    rendered["metadata"]["uid"] = f"uid-{name}"
    rendered["status"] = {"conditions": conds or [], **status}
    return rendered


def failed_pod(job_name: str, code: int = 3) -> dict[str, Any]:
    return {"metadata": {"name": f"{job_name}-0-x", "labels": {"job-name": job_name},
                         "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "worker", "state": {"terminated": {"exitCode": code, "reason": "Error"}}}]}}


def decide(b: dict[str, Any], jobs: list[dict[str, Any]] | None = None,
           pods: list[dict[str, Any]] | None = None) -> Any:
    spec, err = parse_spec(TrainingJobSpec, b)
    assert spec is not None, err
    return plan(spec, b, Observed(jobs or [], pods or [], [], True), NOW)


def creates_job(decided: Any) -> bool:
    return any(child.obj["kind"] == "Job" for child in decided.apply)


def deleted(decided: Any) -> list[str]:
    """The Jobs the plan deletes, each with its uid precondition."""
    assert all(d.uid == f"uid-{d.name}" for d in decided.delete)
    return [d.name for d in decided.delete]


def suspend(decided: Any) -> bool | None:
    return next((p.patch["spec"]["suspend"] for p in decided.patch), None)


def test_invalid_spec_message_names_the_field() -> None:
    spec, message = parse_spec(TrainingJobSpec, {"spec": {"image": "i", "workers": 0}})
    assert spec is None and message.startswith("spec.workers:")


def test_new_job_is_created_and_pending() -> None:
    decided = decide(body())
    assert creates_job(decided) and decided.status.phase == "Pending"
    assert decided.status.job_name == "t-r0"


def test_failed_attempt_restarts_with_status_written_first() -> None:
    failed = job("t-r0", [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    decided = decide(body(maxRestarts=2), [failed], [failed_pod("t-r0")])
    assert decided.status.phase == "Restarting" and decided.status.restarts == 1
    assert decided.status_first and deleted(decided) == ["t-r0"]
    assert "exit code 3" in (decided.status.message or "")


def test_the_first_failure_already_says_why_in_the_scripts_own_words() -> None:
    failed = job("t-r0", [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    pod = failed_pod("t-r0", 2)
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = (
        "usage: train.py [-h]\ntrain.py: error: unrecognized arguments: --n_estimators=50\n")
    decided = decide(body(maxRestarts=2), [failed], [pod])
    message = decided.status.message or ""
    assert decided.status.phase == "Restarting"
    assert "worker 0 failed: exit code 2 (Error): usage: train.py [-h] | train.py: error:" \
        " unrecognized arguments: --n_estimators=50; restarting all workers" in message


def test_no_restarts_left_fails_with_exit_code() -> None:
    failed = job("t-r2", [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    decided = decide(body({"restarts": 2, "phase": "Running"}, maxRestarts=2), [failed],
                     [failed_pod("t-r2", 137)])
    assert decided.status.phase == "Failed" and not deleted(decided)
    assert "exit code 137" in (decided.status.message or "")


def test_stale_attempt_job_is_deleted_and_current_created() -> None:
    old = job("t-r0", [{"type": "Failed", "status": "True"}])
    decided = decide(body({"restarts": 1, "phase": "Restarting"}), [old])
    assert deleted(decided) == ["t-r0"] and creates_job(decided)
    assert decided.status.job_name == "t-r1"


def test_finished_run_stays_finished_without_a_job() -> None:
    decided = decide(body({"phase": "Succeeded", "restarts": 0, "modelUri": "s3://m",
                           "workers": {"succeeded": 1},
                           "conditions": [{"type": "Ready", "status": "True",
                                           "reason": "Succeeded"}]}))
    assert not creates_job(decided) and decided.status.phase == "Succeeded"
    assert decided.status.model_uri == "s3://m"
    assert decided.status.workers and decided.status.workers.succeeded == 1


def test_deadline_counts_across_restarts() -> None:
    start = (NOW - dt.timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    running = job("t-r1", startTime=start)
    decided = decide(body({"restarts": 1, "startTime": start}, activeDeadlineSeconds=60),
                     [running])
    assert decided.status.phase == "Failed" and deleted(decided) == ["t-r1"]
    assert decided.conds[0].reason == "DeadlineExceeded"


def test_deadline_in_future_requeues() -> None:
    start = (NOW - dt.timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    decided = decide(body({"startTime": start}, activeDeadlineSeconds=60), [job("t-r0")])
    assert decided.requeue_after == 50


def test_user_suspend_patches_the_job() -> None:
    decided = decide(body(suspend=True), [job("t-r0")])
    assert suspend(decided) is True and decided.status.phase == "Suspended"


def test_queued_job_is_not_unsuspended_by_us() -> None:
    queued = job("t-r0")
    queued["spec"]["suspend"] = True
    b = body(scheduling={"queueName": "q"})
    spec, _ = parse_spec(TrainingJobSpec, b)
    assert spec is not None
    from kubeloop.render.trainingjob import render_job

    queued["metadata"]["annotations"] = render_job(spec, "t", "ns", 0, {})["metadata"][
        "annotations"]
    decided = decide(b, [queued])
    assert decided.status.phase == "Queued" and suspend(decided) is None


def test_finished_job_deleted_by_ttl_before_it_was_seen_still_counts() -> None:
    from kubeloop.controllers.trainingjob import GONE

    done = job("t-r0", [{"type": "Complete", "status": "True"}], succeeded=1)
    done["metadata"]["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    done[GONE] = True
    decided = decide(body({"phase": "Running"}, output={"uri": "s3://m"}), [done])
    assert decided.status.phase == "Succeeded" and decided.status.model_uri == "s3://m"
    assert not creates_job(decided)
