"""DriftMonitor reconcile: checks the target every interval and closes the loop."""

from __future__ import annotations

import contextlib

from kubeloop import conditions as c
from kubeloop import metrics
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from kubeloop.controllers.common import (
    Ctx,
    finish_status,
    invalid_spec_status,
    parse_spec,
    record_event,
    rfc3339,
    write_status,
)
from kubeloop.controllers.runtime import Key, Result

KIND = "DriftMonitor"
MODEL_DEPLOYMENT = "ModelDeployment"


def forget(namespace: str, name: str) -> None:
    """Drop the gauges of a deleted monitor."""
    for sample in list(next(iter(metrics.DRIFT_SCORE.collect())).samples):
        labels = sample.labels
        if labels.get("namespace") == namespace and labels.get("monitor") == name:
            metrics.DRIFT_SCORE.remove(
                labels["namespace"], labels["monitor"], labels["feature"], labels["method"]
            )
    with contextlib.suppress(KeyError):
        metrics.DRIFT_DETECTED.remove(namespace, name)


async def reconcile(ctx: Ctx, key: Key) -> Result | None:
    _, namespace, name = key
    body = ctx.store.get(KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    now = ctx.clock()
    spec, error = parse_spec(DriftMonitorSpec, body)
    if spec is None:
        invalid = invalid_spec_status(body, DriftMonitorStatus(), error, rfc3339(now))
        if await write_status(ctx, body, invalid):
            await record_event(ctx, body, "Warning", c.INVALID_SPEC, error)
        return None
    prev = DriftMonitorStatus.model_validate(body.get("status") or {})
    target = ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment)
    status = prev.model_copy()
    if target is None:
        message = f"ModelDeployment {namespace}/{spec.model_deployment} does not exist"
        status.phase = "Pending"
        status.message = message
        conds = [
            c.Cond(c.READY, False, c.TARGET_NOT_FOUND, message),
            c.Cond(c.RECONCILING, True, c.TARGET_NOT_FOUND, message),
        ]
    else:
        message = f"waiting for {spec.min_samples} samples from {spec.model_deployment}"
        status.phase = c.COLLECTING
        status.message = message
        conds = [
            c.Cond(c.READY, True, c.COLLECTING, message),
        ]
    await write_status(ctx, body, finish_status(body, status, conds, rfc3339(now)))
    return None
