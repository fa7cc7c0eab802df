"""Progress and metrics of a TrainingJob, read from its worker 0.

While the run is Running, worker 0's progress endpoint (Prometheus text, as
`kubeloop.train.report()` serves it) is read at most every 10 s per job, with a
backoff up to 2 min while it does not answer (a script that reports nothing costs one
refused connection per interval at first, then less). When the run ends, the final
metrics come from worker 0's termination message, which the kubelet keeps in the pod's
status after the container exits. The format is `kubeloop.progress`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.trainingjob import Progress, TrainingJobSpec, TrainingJobStatus
from kubeloop.controllers.common import rfc3339
from kubeloop.controllers.k8sread import termination_message
from kubeloop.controllers.runtime import Key
from kubeloop.names import COMPLETION_INDEX_ANNOTATION
from kubeloop.progress import Report, parse_final, parse_text
from kubeloop.render.trainingjob import WORKER_CONTAINER

READ_INTERVAL = 10.0
MAX_BACKOFF = 120.0
READ_TIMEOUT = 2.0
READ_DEADLINE = 5.0
MAX_BODY = 64 * 1024


@dataclass
class Schedule:
    next_read: float
    failures: int
    # The last report read: applied at every pass, so that a read whose status write
    # was held back by the 10 s throttle is written with the next one, not lost.
    report: Report | None = None


_schedules: dict[Key, Schedule] = {}


def forget(key: Key) -> None:
    _schedules.pop(key, None)


def worker_zero(pods: list[dict[str, Any]], job_name: str | None) -> dict[str, Any] | None:
    """Worker 0 of the current attempt (the newest, should a retried pod exist)."""
    found = [
        p
        for p in pods
        if (p["metadata"].get("labels") or {}).get("job-name") == job_name
        and (p["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION) == "0"
    ]
    found.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
    return found[-1] if found else None


def read_endpoint(url: str) -> str | None:
    """A progress endpoint's text, at most MAX_BODY; None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT) as resp:
            return resp.read(MAX_BODY + 1).decode("utf-8", "replace")[:MAX_BODY]
    except (OSError, urllib.error.URLError, ValueError):
        return None


def progress_of(report: Report, total_known: int | None = None) -> Progress:
    """status.progress from a report: percent, and the time left at the rate so far."""
    total = report.total_steps if report.total_steps is not None else total_known
    remaining = None
    if (
        report.step
        and total
        and report.started is not None
        and report.updated is not None
        and report.updated > report.started
    ):
        rate = report.step / (report.updated - report.started)
        remaining = max(round((total - report.step) / rate), 0)
    percent = None
    if report.step is not None and total:
        percent = round(min(100.0, 100.0 * report.step / total), 1)
    updated = (
        rfc3339(dt.datetime.fromtimestamp(report.updated, dt.UTC))
        if report.updated is not None
        else None
    )
    return Progress(
        percent=percent,
        step=report.step,
        total_steps=total,
        estimated_remaining_seconds=remaining,
        last_update_time=updated,
    )


def headline(metrics: dict[str, float]) -> str | None:
    """`name=value` of the first metric the run reported, for the METRIC column (the
    report's own order: the API server hands maps back sorted by key)."""
    for name, value in metrics.items():
        return f"{name}={value:.6g}"
    return None


def _apply(status: TrainingJobStatus, report: Report) -> None:
    total = status.progress.total_steps if status.progress else None
    if report.step is not None or report.total_steps is not None:
        before = status.progress
        status.progress = progress_of(report, total)
        if status.progress.last_update_time is None and before is not None:
            # A final message has no clock of its own: the last live one stands.
            status.progress.last_update_time = before.last_update_time
    if report.metrics:
        merged = {**status.metrics, **report.metrics}
        status.metrics = dict(list(merged.items())[:16])
        status.metric = headline(report.metrics)


async def observe(
    key: Key,
    spec: TrainingJobSpec,
    status: TrainingJobStatus,
    prev: TrainingJobStatus,
    pods: list[dict[str, Any]],
) -> float | None:
    """Carry progress and metrics forward, and read new ones where due; returns the
    seconds until the next read while the run is Running, else None."""
    status.progress, status.metrics, status.metric = prev.progress, dict(prev.metrics), prev.metric
    pod = worker_zero(pods, status.job_name)
    if status.phase in (c.SUCCEEDED, c.FAILED):
        forget(key)
        # Read whenever worker 0 is still there (idempotent): a pod that reached the
        # store only after the phase changed (a restart) still gives its final words.
        if pod is not None:
            final = parse_final(termination_message(pod, WORKER_CONTAINER))
            if final is not None:
                _apply(status, final)
            if status.phase == c.SUCCEEDED and status.progress and status.progress.total_steps:
                status.progress.step = status.progress.total_steps
                status.progress.percent = 100.0
                status.progress.estimated_remaining_seconds = 0
        return None
    if status.phase != c.RUNNING or not spec.progress_port:
        return None
    ip = ((pod or {}).get("status") or {}).get("podIP")
    if pod is None or not ip or (pod.get("status") or {}).get("phase") != "Running":
        return None
    schedule = _schedules.get(key)
    now = time.monotonic()
    if schedule is None:
        # The first read waits one interval: a short run is over before it matters.
        schedule = _schedules[key] = Schedule(now + READ_INTERVAL, 0)
    if schedule.report is not None:
        _apply(status, schedule.report)
    if now < schedule.next_read:
        return schedule.next_read - now
    url = f"http://{ip}:{spec.progress_port}/metrics"
    try:
        # A whole-read deadline: a worker that trickles bytes holds no reconcile.
        text = await asyncio.wait_for(asyncio.to_thread(read_endpoint, url), READ_DEADLINE)
    except TimeoutError:
        text = None
    report = parse_text(text) if text is not None else None
    if report is None:
        schedule.failures += 1
        wait = min(READ_INTERVAL * 2**schedule.failures, MAX_BACKOFF)
    else:
        schedule.failures = 0
        wait = READ_INTERVAL
        schedule.report = report
        _apply(status, report)
    schedule.next_read = time.monotonic() + wait
    return wait
