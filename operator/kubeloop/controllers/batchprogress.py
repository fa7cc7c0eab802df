"""Live progress of a BatchPrediction: every running scoring pod serves its rows done,
its rows to do and its rate (`kubeloop.train.report`, Prometheus text on the progress
port); the operator reads each as soon as it runs, then at most every 10 s per run, with
a backoff up to 2 min
while a pod does not answer, and adds them to the numbers of the pods that ended (their
termination messages, controllers/batchprediction_plan.py). What was read last stands
between reads, so a status write held back by the throttle is not lost."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from kubeloop.api.batchprediction import BatchPredictionStatus, ShardResult
from kubeloop.controllers.batchprediction_plan import latest_per_index, progress_of
from kubeloop.controllers.runtime import Key
from kubeloop.controllers.trainingprogress import (
    MAX_BACKOFF,
    READ_DEADLINE,
    READ_INTERVAL,
    read_endpoint,
)
from kubeloop.names import PROGRESS_PORT
from kubeloop.progress import Report, parse_text

RUNNING = "Running"


@dataclass
class Schedule:
    next_read: float
    failures: int = 0
    # The last report of each running pod, by pod UID.
    reports: dict[str, Report] = field(default_factory=dict)


_schedules: dict[Key, Schedule] = {}


def forget(key: Key) -> None:
    _schedules.pop(key, None)


def with_live(shard: ShardResult, report: Report | None) -> ShardResult:
    """A running index's numbers from its live report (a pod that ended has its own)."""
    if report is None or shard.state != RUNNING:
        return shard
    rate = report.metrics.get("rows_per_second")
    return shard.model_copy(
        update={
            "rows": report.step if report.step is not None else shard.rows,
            "rows_total": report.total_steps,
            "rows_per_second": round(rate, 1) if rate is not None else shard.rows_per_second,
        }
    )


def apply(status: BatchPredictionStatus, reports: dict[int, Report], parallelism: int) -> None:
    """The running indexes' live numbers into status.shards, and the run's progress
    from all indexes (pure)."""
    if not reports:
        return
    status.shards = [with_live(s, reports.get(s.index)) for s in status.shards]
    status.progress = progress_of(status.shards, parallelism) or status.progress


async def _read_all(urls: dict[str, str]) -> dict[str, Report | None]:
    async def one(url: str) -> Report | None:
        try:
            text = await asyncio.wait_for(asyncio.to_thread(read_endpoint, url), READ_DEADLINE)
        except TimeoutError:
            return None
        return parse_text(text) if text is not None else None

    found = await asyncio.gather(*(one(u) for u in urls.values()))
    return dict(zip(urls, found, strict=True))


async def observe(
    key: Key,
    status: BatchPredictionStatus,
    pods: list[dict[str, Any]],
    parallelism: int,
    port: int = PROGRESS_PORT,
) -> float | None:
    """Apply the live numbers, reading them again where due; the seconds until the
    next read while pods run, else None."""
    running = {
        i: p
        for i, p in latest_per_index(pods).items()
        if (p.get("status") or {}).get("phase") == RUNNING and (p.get("status") or {}).get("podIP")
    }
    if status.phase != RUNNING or not running:
        forget(key)
        return None
    now = time.monotonic()
    # Read at once: a batch run is its pods, and each pod's first numbers say how fast
    # the whole run goes.
    schedule = _schedules.setdefault(key, Schedule(now))
    uid = {
        i: str(p["metadata"].get("uid") or p["metadata"].get("name")) for i, p in running.items()
    }
    if now >= schedule.next_read:
        urls = {
            uid[i]: f"http://{p['status']['podIP']}:{port}/metrics"
            for i, p in running.items()
        }
        read = await _read_all(urls)
        answered = {u: r for u, r in read.items() if r is not None}
        schedule.failures = 0 if answered else schedule.failures + 1
        schedule.reports = {
            **{u: schedule.reports[u] for u in urls if u in schedule.reports},
            **answered,
        }
        # A pod's server comes up a few seconds after the pod runs (imports, listing the
        # input): the first miss waits one interval, not two.
        wait = min(READ_INTERVAL * 2 ** max(schedule.failures - 1, 0), MAX_BACKOFF)
        schedule.next_read = time.monotonic() + wait
    by_index = {i: schedule.reports[u] for i, u in uid.items() if u in schedule.reports}
    apply(status, by_index, parallelism)
    return max(schedule.next_read - time.monotonic(), 0.5)
