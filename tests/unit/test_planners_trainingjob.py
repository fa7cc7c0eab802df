"""Each TrainingJob planner on its own (controllers/trainingjob_plan.py): what it
decides, what it leaves to the next one (None), and the actions it adds to the plan."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeloop.controllers import trainingjob_plan as tp
from kubeloop.controllers.execute import Plan
from kubeloop.render.trainingjob import render_job

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
GPU_NODE = {
    "metadata": {"name": "n", "labels": {}},
    "spec": {"taints": []},
    "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}},
}


def attempt(
    prev: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> tp.Attempt:
    body = {
        "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"image": "i", **spec},
        "status": prev or {},
    }
    parsed = TrainingJobSpec.model_validate(body["spec"])
    observed = tp.Observed([job] if job else [], pods or [], [], True)
    return tp.attempt(parsed, body, observed, NOW)


def job(
    attempt_no: int = 0, conds: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    rendered = render_job(TrainingJobSpec(image="i"), "t", "ns", attempt_no, {})
    rendered["metadata"]["uid"] = f"uid-t-r{attempt_no}"
    rendered["status"] = {"conditions": conds or [], **extra}
    return rendered


def out() -> Plan[TrainingJobStatus]:
    return Plan(status=TrainingJobStatus())


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "t-r0-0-x", "labels": {"job-name": "t-r0"}},
        "status": {"phase": phase, **status},
    }


def test_finished_keeps_a_run_that_ended_and_stops_a_job_left_running() -> None:
    ended = {
        "phase": "Failed",
        "message": "no restarts left",
        "conditions": [{"type": "Ready", "status": "False", "reason": "BackoffLimitExceeded"}],
    }
    plan = out()
    verdict = tp.finished(attempt(ended, job()), plan.status, plan)
    assert verdict is not None and (verdict.phase, verdict.reason) == (
        "Failed",
        "BackoffLimitExceeded",
    )
    assert verdict.stalled and [d.name for d in plan.delete] == ["t-r0"]
    assert tp.finished(attempt({"phase": "Running"}), plan.status, out()) is None


def test_deadline_fails_the_run_with_status_first_or_waits_for_it() -> None:
    start = (NOW - dt.timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    plan = out()
    plan.status.start_time = start
    verdict = tp.deadline(attempt(job=job(), activeDeadlineSeconds=60), plan.status, plan)
    assert verdict is not None and verdict.reason == c.DEADLINE_EXCEEDED
    assert plan.status_first and [d.name for d in plan.delete] == ["t-r0"]
    waiting = out()
    waiting.status.start_time = start
    assert tp.deadline(attempt(activeDeadlineSeconds=160), waiting.status, waiting) is None
    assert waiting.requeue_after == 60 and not waiting.delete


def test_no_job_creates_the_attempts_job_and_says_why_it_waits() -> None:
    plan = out()
    verdict = tp.no_job(attempt(), plan, {}, None)
    assert verdict is not None and verdict.phase == c.PENDING and verdict.reconciling
    assert [child.obj["metadata"]["name"] for child in plan.apply] == ["t-r0"]
    assert tp.no_job(attempt(suspend=True), out(), {}, None) == tp.SUSPENDED
    queued = tp.no_job(attempt(scheduling={"queueName": "q"}), out(), {}, None)
    assert queued is not None and queued.phase == c.QUEUED
    unfit = tp.no_job(attempt(), out(), {}, "no node has 9 GPUs")
    assert unfit is not None and unfit.stalled and unfit.extra[0].type == c.SCHEDULED
    assert tp.no_job(attempt(job=job()), out(), {}, None) is None


def test_never_fits_names_what_no_node_has() -> None:
    big = attempt(gpu={"count": 4})
    why = tp.never_fits(big, [GPU_NODE])
    assert why is not None and "gpu" in why.lower()
    assert tp.never_fits(attempt(gpu={"count": 2}), [GPU_NODE]) is None


def test_ended_succeeds_with_the_output_or_leaves_a_live_job_alone() -> None:
    done = job(
        conds=[{"type": "Complete", "status": "True"}], completionTime="2026-01-01T11:00:00Z"
    )
    plan = out()
    verdict = tp.ended(attempt(job=done, output={"uri": "s3://m"}), plan.status, plan)
    assert verdict is not None and verdict.phase == c.SUCCEEDED and verdict.ready
    assert plan.status.model_uri == "s3://m"
    assert plan.status.completion_time == "2026-01-01T11:00:00Z"
    assert tp.ended(attempt(job=job()), out().status, out()) is None


def test_a_failed_job_restarts_all_workers_until_no_restart_is_left() -> None:
    failed = job(conds=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    crashed = pod(
        "Failed",
        containerStatuses=[
            {"name": "worker", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
        ],
    )
    plan = out()
    verdict = tp.ended(attempt(job=failed, pods=[crashed], maxRestarts=1), plan.status, plan)
    assert verdict is not None and verdict.phase == c.RESTARTING
    assert plan.status.restarts == 1 and plan.status.job_name == "t-r1" and plan.status_first
    assert [d.name for d in plan.delete] == ["t-r0"]
    last = out()
    verdict = tp.ended(attempt(job=failed, pods=[crashed], maxRestarts=0), last.status, last)
    assert verdict is not None and verdict.reason == c.BACKOFF_LIMIT_EXCEEDED
    assert "exit code 3" in verdict.message and not last.delete


def test_a_failure_waits_briefly_for_its_failed_pod() -> None:
    since = (NOW - dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = job(conds=[{"type": "Failed", "status": "True", "lastTransitionTime": since}])
    plan = out()
    verdict = tp.ended(attempt({"phase": "Running"}, failed), plan.status, plan)
    assert verdict is not None and verdict.phase == c.RUNNING and plan.requeue_after == 1.0
    assert not plan.delete


def test_replaced_when_the_pod_template_changed() -> None:
    plan = out()
    verdict = tp.replaced(attempt(job=job(), image="other"), plan)
    assert verdict is not None and verdict.reconciling and [d.name for d in plan.delete] == ["t-r0"]
    assert tp.replaced(attempt(job=job()), out()) is None


def test_suspension_patches_the_job_both_ways_but_leaves_kueue_its_own() -> None:
    plan = out()
    assert tp.suspension(attempt(job=job(), suspend=True), plan) == tp.SUSPENDED
    assert [p.patch for p in plan.patch] == [{"spec": {"suspend": True}}]
    held = job()
    held["spec"]["suspend"] = True
    resumed = out()
    verdict = tp.suspension(attempt(job=held), resumed)
    assert verdict is not None and verdict.message == "resuming"
    assert [p.patch for p in resumed.patch] == [{"spec": {"suspend": False}}]
    queued = out()
    verdict = tp.suspension(attempt(job=held, scheduling={"queueName": "q"}), queued)
    assert verdict is not None and verdict.phase == c.QUEUED and not queued.patch
    assert tp.suspension(attempt(job=job()), out()) is None


def test_progress_from_pending_pods_to_running_workers() -> None:
    unscheduled = pod(
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
            }
        ],
    )
    verdict = tp.progress(attempt(job=job(), pods=[unscheduled]), out().status, None)
    assert verdict.reason == c.WAITING_FOR_SCHEDULER and "Insufficient cpu" in verdict.message
    running = tp.progress(attempt(job=job(), pods=[pod("Running")]), out().status, None)
    assert running.phase == c.RUNNING and running.ready
    assert running.message.startswith("1 of 1 workers running")
    idle = tp.progress(attempt(job=job()), out().status, None)
    assert idle.phase == c.PENDING and idle.message == "waiting for workers to start"
