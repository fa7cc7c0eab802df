"""What the kinds that run a batch/v1 Job to its end (TrainingJob, BatchPrediction)
share: the verdict a planner decides, a finished run that stays finished, and how a
Job's end reads (completed, failed, out of time).

Pure: no I/O, no clock (the caller passes `now`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.common import CommonStatus
from kubeloop.controllers.common import rfc3339
from kubeloop.controllers.k8sread import job_condition

TERMINAL = frozenset({c.SUCCEEDED, c.FAILED})


@dataclass(frozen=True)
class Verdict:
    """The phase a planner decided, and the conditions that say it."""

    phase: str
    reason: str
    message: str
    ready: bool | None
    reconciling: bool = False
    stalled: bool = False
    extra: tuple[c.Cond, ...] = ()

    def conds(self) -> list[c.Cond]:
        conds = [c.Cond(c.READY, self.ready, self.reason, self.message)]
        if self.reconciling:
            conds.append(c.Cond(c.RECONCILING, True, self.reason, self.message))
        if self.stalled:
            conds.append(c.Cond(c.STALLED, True, self.reason, self.message))
        return conds + list(self.extra)


def stays_finished(prev: CommonStatus) -> Verdict | None:
    """A run that ended stays so, with the reason and message it ended with."""
    if prev.phase not in TERMINAL:
        return None
    ready = prev.phase == c.SUCCEEDED
    reason = next((cd.reason for cd in prev.conditions if cd.type == c.READY), prev.phase or "")
    return Verdict(prev.phase or "", reason, prev.message or "", ready, stalled=not ready)


@dataclass(frozen=True)
class JobEnd:
    """A Job that ended: Complete, or Failed with its condition."""

    complete: bool
    failed: dict[str, Any] | None
    completion_time: str

    @property
    def out_of_time(self) -> bool:
        return (self.failed or {}).get("reason") == "DeadlineExceeded"


def job_end(job: dict[str, Any], now: dt.datetime) -> JobEnd | None:
    """How the Job ended, or None while it runs. Its completion time is the Job's own
    when it has one (a completed Job), else now."""
    complete, failed = job_condition(job, "Complete"), job_condition(job, "Failed")
    if not (complete or failed):
        return None
    when = (job.get("status") or {}).get("completionTime") if complete else None
    return JobEnd(bool(complete), None if complete else failed, when or rfc3339(now))
