"""What a TrainingJob reads of its Job and pods: conditions, exits, counts."""

from __future__ import annotations

from typing import Any

from kubeloop.api.trainingjob import WorkerCounts
from kubeloop.controllers.k8sread import exit_text, job_condition, terminated
from kubeloop.names import COMPLETION_INDEX_ANNOTATION
from kubeloop.render.trainingjob import WORKER_CONTAINER


def deadline_failed(job: dict[str, Any]) -> bool:
    failed = job_condition(job, "Failed")
    return bool(failed and failed.get("reason") == "DeadlineExceeded")


def pod_index(pod: dict[str, Any]) -> str:
    annotations = pod.get("metadata", {}).get("annotations", {}) or {}
    return str(annotations.get(COMPLETION_INDEX_ANNOTATION, "?"))


def failure_message(pods: list[dict[str, Any]]) -> str:
    """`worker 1 failed: exit code 3 (Error): <message>` for the first failed worker."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return "a worker failed"
    failed.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), pod_index(p)))
    pod = failed[0]
    term = terminated(pod, WORKER_CONTAINER)
    text = f"worker {pod_index(pod)} failed"
    if term:
        text += f": {exit_text(term)}"
    else:
        reason = (pod.get("status") or {}).get("reason") or ""
        message = (pod.get("status") or {}).get("message") or ""
        if reason or message:
            text += f": {reason} {message}".rstrip()
    return text


def pod_phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_running(pod: dict[str, Any]) -> bool:
    return pod_phase(pod) == "Running" and not pod["metadata"].get("deletionTimestamp")


def worker_counts(job: dict[str, Any] | None) -> WorkerCounts:
    status = (job or {}).get("status") or {}
    return WorkerCounts(
        active=int(status.get("active", 0) or 0),
        ready=int(status.get("ready", 0) or 0),
        succeeded=int(status.get("succeeded", 0) or 0),
        failed=int(status.get("failed", 0) or 0),
    )
