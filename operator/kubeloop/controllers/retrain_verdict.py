"""What the evaluation says, read from its pod (pure): the verdict in its termination
message, why there is none, and the monitor's `RetrainAccepted` condition."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, LiveScores
from kubeloop.controllers.common import parse_time, refused, rfc3339
from kubeloop.controllers.k8sread import exit_text, terminated
from kubeloop.controllers.retrain_actions import (
    EVALUATING,
    FAILED,
    ROLLING_OUT,
    RUNNING,
    SHADOWING,
)
from kubeloop.kube import KubeError
from kubeloop.progress import MAX_MESSAGE_BYTES
from kubeloop.render import evaluation as render_eval

RETRAIN_ACCEPTED = c.RETRAIN_ACCEPTED


def parse_verdict(text: str | None) -> dict[str, Any] | None:
    """The evaluation's termination message: a verdict with numeric scores, or an
    error. Anything else (empty, oversized, not JSON, missing fields) is None."""
    if not text or len(text.encode()) > MAX_MESSAGE_BYTES:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("error"), str):
        return {"error": data["error"][:512]}
    challenger, champion = data.get("challenger"), data.get("champion")
    if not isinstance(challenger, int | float) or not _finite(challenger):
        return None
    if not (champion is None or _finite(champion)):
        return None
    if not isinstance(data.get("passed"), bool):
        return None
    verdict = {
        "champion": None if champion is None else float(champion),
        "challenger": float(challenger),
        "passed": data["passed"],
        "reason": str(data.get("reason") or "")[:64],
        "message": str(data.get("message") or "")[:512],
    }
    live = _live(data.get("live"))
    if live is not None:
        verdict["live"] = live
    return verdict


def _live(data: Any) -> LiveScores | None:
    """The scores on live labelled rows, when the verdict has them (else None)."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), int):
        return None

    def score(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) and _finite(value) else None

    passed = data.get("passed")
    return LiveScores(
        rows=max(0, data["rows"]),
        champion=score("champion"),
        challenger=score("challenger"),
        passed=passed if isinstance(passed, bool) else None,
    )


def _finite(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def no_verdict(done: dict[str, Any], pod: dict[str, Any] | None) -> str:
    """Why a finished evaluation gave nothing to read, in the cluster's own words: the
    Job's condition, and which pod ran where and how it ended."""
    term = terminated(pod, render_eval.CONTAINER)
    where = ""
    if pod is not None:
        node = (pod.get("spec") or {}).get("nodeName")
        where = f"pod {pod['metadata']['name']}" + (f" on node {node}" if node else "")
        where += f": {exit_text(term)}" if term else ": it never ran"
    if done.get("type") == "Complete":
        text = "the evaluation Job completed without a verdict in its termination message"
        return f"{text} ({where})" if where else text
    text = f"{done.get('reason', 'Failed')}: {done.get('message', 'the Job failed')}"
    return f"{text}; {where}" if where else text


def accepted_condition(status: DriftMonitorStatus) -> c.Cond | None:
    """`RetrainAccepted`: the evaluation gate's word on the latest retrain, and the
    shadow trial's once it is on trial."""
    last = status.last_retrain
    trial = last.shadow if last is not None else None
    if last is not None and trial is not None:
        if last.result == SHADOWING:
            return c.Cond(
                RETRAIN_ACCEPTED,
                None,
                c.SHADOW_TRIAL,
                f"{last.model_uri} on trial as the shadow: {trial.samples} labelled requests",
            )
        if trial.passed is not None:
            return c.Cond(
                RETRAIN_ACCEPTED, trial.passed, trial.reason or c.SHADOW_TRIAL, trial.message or ""
            )
    ev = last.evaluation if last is not None else None
    if last is None or ev is None:
        return None
    if last.result == c.EVALUATING:
        return c.Cond(
            RETRAIN_ACCEPTED, None, c.EVALUATING, f"evaluating {last.model_uri} in Job {ev.job}"
        )
    if ev.passed is None:
        return None
    message = ev.message or ""
    if ev.reason not in (c.EVALUATION_FAILED, c.EVALUATION_CANCELLED):
        message = f"{ev.metric}: challenger {ev.challenger}, champion {ev.champion}; {message}"
    return c.Cond(RETRAIN_ACCEPTED, ev.passed, ev.reason or c.EVALUATION_FAILED, message)


def retrain_blocked(
    spec: DriftMonitorSpec, status: DriftMonitorStatus, now: dt.datetime, cooldown: float
) -> str | None:
    """None when a retrain should start now; else what holds it back, for the message."""
    if spec.on_drift.retrain is None:
        return ""
    last = status.last_retrain
    if last is not None and last.result == RUNNING:
        return f"; retraining in {last.training_job}"
    if last is not None and last.result == EVALUATING and last.evaluation is not None:
        return f"; evaluating {last.training_job} in Job {last.evaluation.job}"
    if last is not None and last.result == SHADOWING:
        return f"; {last.model_uri} on trial as the shadow of {spec.model_deployment}"
    if last is not None and last.result == ROLLING_OUT:
        return f"; {last.model_uri} rolls out as the canary of {spec.model_deployment}"
    if last is not None:
        # From the end of the last retrain: a long run or evaluation does not eat it.
        since = (now - (parse_time(last.finish_time or last.time) or now)).total_seconds()
        if since < cooldown:
            until = now + dt.timedelta(seconds=cooldown - since)
            failed = ""
            if last.result == FAILED and last.message:
                failed = f"; retrain {last.training_job} failed ({last.message})"
            return f"{failed}; retrain cooldown until {rfc3339(until)}"
    return None


def promotion_refused(err: KubeError) -> bool:
    """The API server said no to the promotion itself (an invalid change, RBAC, the
    deployment gone): final. Anything else passes, and the promotion is made again."""
    return refused(err) or err.status in (403, 404)


def seconds_since_done(done: dict[str, Any], job: dict[str, Any], now: dt.datetime) -> float:
    """Seconds since the Job finished, by its own status (0 when it does not say)."""
    at = parse_time(
        done.get("lastTransitionTime") or (job.get("status") or {}).get("completionTime")
    )
    return (now - at).total_seconds() if at is not None else 0.0
