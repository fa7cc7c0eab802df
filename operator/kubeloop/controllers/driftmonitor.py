"""DriftMonitor reconcile: a drift check every interval, and the closed loop.

Every `interval` the monitor reads the live histograms of its target (the model
server pods' `/metrics`, an allowed URL, or Prometheus), compares the window since the
last judgement with the reference profile, and writes per-feature scores. On drift,
outside the cooldown, it starts the loop of `controllers/retrain.py`: retrain, evaluate
when the monitor has a gate, promote.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubeloop import conditions as c
from kubeloop import metrics
from kubeloop.api.common import duration_seconds
from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
)
from kubeloop.controllers import driftbatch, retrain
from kubeloop.controllers.common import (
    Ctx,
    begin,
    parse_time,
    rfc3339,
)
from kubeloop.controllers.driftread import (
    References,
    chosen,
    refused_url,
    scrape_metrics,
    scrape_prometheus,
)
from kubeloop.controllers.driftverdict import (
    broken,
    judge,
    reference_pending,
    target_missing,
)
from kubeloop.controllers.execute import ALL, execute
from kubeloop.controllers.registration import ChildWatch, Controller, slim_pod
from kubeloop.controllers.retrain_actions import RUNNING
from kubeloop.controllers.runtime import Key, Result
from kubeloop.drift import sources
from kubeloop.drift.reference import (
    ReferenceInvalid,
    ReferenceNotServed,
)
from kubeloop.names import API_VERSION, EVALUATION_LABEL

log = logging.getLogger("kubeloop.driftmonitor")

KIND = retrain.KIND
MODEL_DEPLOYMENT = retrain.MODEL_DEPLOYMENT
TRAINING_JOB = retrain.TRAINING_JOB
EXPERIMENT = retrain.EXPERIMENT
MD_POD = "ModelDeployment/Pod"
PROMOTER = retrain.PROMOTER
MAX_PODS_SCRAPED = 20
SCRAPE_TIMEOUT = 5.0


def forget(namespace: str, name: str) -> None:
    """Drop the gauges of a deleted monitor."""
    for sample in list(next(iter(metrics.DRIFT_SCORE.collect())).samples):
        labels = sample.labels
        if labels.get("namespace") == namespace and labels.get("monitor") == name:
            with contextlib.suppress(KeyError):
                metrics.DRIFT_SCORE.remove(
                    labels["namespace"], labels["monitor"], labels["feature"], labels["method"]
                )
    with contextlib.suppress(KeyError):
        metrics.DRIFT_DETECTED.remove(namespace, name)
    for key in [k for k in reconcile._holds if k[1:] == (namespace, name)]:
        del reconcile._holds[key]
    reconcile.refs.forget(namespace, name)


def remembered(namespace: str, name: str) -> list[str]:
    """What this process keeps in memory about a monitor (for tests and debugging):
    empty once it is deleted."""
    held = [f"hold {k}" for k in reconcile._holds if k[1:] == (namespace, name)]
    held += reconcile.refs.held(namespace, name)
    return held


# Phases that are the verdict of a check that ran, carried until the next interval.
CHECKED_PHASES = frozenset({c.COLLECTING, "Healthy", "Drifted", c.DEGRADED})
MAX_BACKOFF_STEPS = 12


@dataclass
class Hold:
    """A monitor that waits or is stalled: when to look again, and how often it did."""

    generation: int | None
    until: float
    tries: int
    target_model: str | None  # a new model of the target is looked at at once
    stalled: bool


class Reconciler:
    """Holds, per monitor, the reference profiles and the backoff of a wait."""

    def __init__(self) -> None:
        self.refs = References()
        self._holds: dict[Key, Hold] = {}

    async def __call__(self, ctx: Ctx, key: Key) -> Result | None:
        namespace = key[1]
        if await _migrate_count(ctx, key):
            return Result(requeue_after=0.5)
        started = await begin(ctx, key, DriftMonitorSpec, DriftMonitorStatus())
        if started is None:
            return None
        body, spec, now = started
        prev = DriftMonitorStatus.model_validate(body.get("status") or {})
        interval = max(duration_seconds(spec.interval), 1.0)

        # The loop first: follow the retrain we started, evaluate and promote its model.
        status, acts = await retrain.advance(ctx, body, spec, prev, now)
        events = acts.events

        target = ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment)
        last = parse_time(prev.last_check_time)
        generation = body["metadata"].get("generation")
        due = last is None or (now - last).total_seconds() >= interval - 0.05
        batch = _batch(ctx, spec, namespace)
        if spec.source.type == "batchPrediction":
            # A run is judged once: due when one that was not judged has succeeded.
            run = driftbatch.run_of(batch)
            due = run is not None and run != prev.judged_batch
        hold = self._holds.get(key)
        target_model = ((target or {}).get("status") or {}).get("activeModelUri")
        conds: list[c.Cond]
        if target is None:
            conds = target_missing(status, spec, namespace)
            requeue = interval
        elif (
            hold is not None
            and (hold.generation, hold.target_model) == (generation, target_model)
            and time.monotonic() < hold.until
        ):
            # A wait or a stalled check retries on its backoff, not on every event.
            conds = _carried(prev)
            requeue = hold.until - time.monotonic()
        elif (
            not due
            and hold is None
            and prev.observed_generation == generation
            and prev.phase in CHECKED_PHASES
        ):
            # Only the verdict of a check is carried to the next interval: a wait
            # (a missing target, a reference on its way) is looked at again now.
            assert last is not None
            conds = _carried(prev)
            requeue = interval - (now - last).total_seconds()
        else:
            conds, wants_retrain = await self._check(
                ctx, spec, body, target, batch, status, events, now
            )
            if wants_retrain:
                status, acts = await self._start(ctx, body, spec, status, acts, now)
            requeue = interval
            waiting = any(cd.type == c.RECONCILING for cd in conds)
            if waiting or any(cd.type == c.STALLED for cd in conds):
                # No new check time for a check that did not run: the status stays
                # what it was, so a wait or a stalled monitor writes nothing again.
                status.last_check_time = prev.last_check_time
                stalled = not waiting
                same = hold is not None and (hold.generation, hold.stalled) == (generation, stalled)
                tries = min(hold.tries + 1, MAX_BACKOFF_STEPS) if same and hold else 0
                requeue = min(2.0**tries, interval) if waiting else min(interval * 2**tries, 3600)
                self._holds[key] = Hold(
                    generation, time.monotonic() + requeue, tries, target_model, stalled
                )
            else:
                self._holds.pop(key, None)
        conds = [cd for cd in conds if cd.type != retrain.RETRAIN_ACCEPTED]
        accepted = retrain.accepted_condition(status)
        if accepted is not None:
            conds.append(accepted)
        if acts.requeue_after is not None:
            requeue = min(requeue, acts.requeue_after)
        plan = retrain.plan(status, conds, acts)
        # Every change of a monitor's status is written at once (check times, scores).
        plan.urgent, plan.announce_reason = (ALL,), True
        plan.requeue(max(requeue, 0.5))
        result = await execute(ctx, body, plan)
        if acts.started and status.last_retrain and status.last_retrain.result == RUNNING:
            metrics.RETRAINS.labels(namespace, key[2]).inc()
        return result

    async def _check(
        self,
        ctx: Ctx,
        spec: DriftMonitorSpec,
        body: dict[str, Any],
        target: dict[str, Any],
        batch: dict[str, Any] | None,
        status: DriftMonitorStatus,
        events: list[tuple[str, str, str]],
        now: dt.datetime,
    ) -> tuple[list[c.Cond], bool]:
        """The drift check: its conditions, and whether it wants a retrain now."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        status.last_check_time = rfc3339(now)
        model = spec.model_deployment
        refused = refused_url(spec, ctx.config.drift_source_allowlist)
        if refused:
            return broken(status, c.SOURCE_NOT_ALLOWED, refused, stalled=True), False
        run = driftbatch.run_of(batch)
        if spec.source.type == "batchPrediction" and run is None:
            why = driftbatch.not_yet(spec, namespace, batch)
            return driftbatch.pending(status, why), False
        try:
            full = await self.refs.reference(ctx, spec, body, target)
            profile = chosen(spec, full)
        except ReferenceNotServed as err:
            return reference_pending(status, str(err)), False
        except ReferenceInvalid as err:
            return broken(status, c.REFERENCE_INVALID, str(err), stalled=True), False
        try:
            if batch is not None and run is not None:
                scrape = driftbatch.scrape(batch, full, profile)
                status.judged_batch = run
            elif spec.source.type == "prometheus":
                prom = spec.source.prometheus
                assert prom is not None
                version = await self.refs.version(ctx, body, target)
                scrape = await asyncio.to_thread(
                    scrape_prometheus,
                    prom.url,
                    prom.query,
                    profile,
                    model,
                    namespace,
                    spec.interval,
                    version,
                )
            else:
                urls = self.refs.endpoints(ctx, spec, namespace, target)
                scrape = await asyncio.to_thread(scrape_metrics, urls, profile, model)
        except sources.SourceUnavailable as err:
            return broken(status, c.SOURCE_UNAVAILABLE, str(err)), False
        except sources.SourceInvalid as err:
            return broken(status, c.SOURCE_INVALID, str(err)), False

        # 0: the CRD's default before the first status write (nothing observed yet).
        changed = status.observed_generation not in (None, 0, body["metadata"].get("generation"))
        verdict = judge(spec, status, profile, scrape, now, events, spec_changed=changed)
        for feature, method, score in verdict.scores:
            metrics.DRIFT_SCORE.labels(namespace, name, feature, method).set(score)
        if status.drifted is not None:
            metrics.DRIFT_DETECTED.labels(namespace, name).set(1 if status.drifted else 0)
        return verdict.conds, verdict.wants_retrain

    @staticmethod
    async def _start(
        ctx: Ctx,
        body: dict[str, Any],
        spec: DriftMonitorSpec,
        status: DriftMonitorStatus,
        acts: retrain.Actions,
        now: dt.datetime,
    ) -> tuple[DriftMonitorStatus, retrain.Actions]:
        """The check wants a retrain: the loop's step that starts one."""
        status, started = await retrain.advance(ctx, body, spec, status, now, wants_retrain=True)
        if started.started and status.last_retrain is not None:
            status.message = (
                f"{status.message or ''}; retraining in {status.last_retrain.training_job}"
            )
        started.events[:0] = acts.events
        started.creates[:0] = acts.creates
        started.promote = started.promote or acts.promote
        return status, started


async def _migrate_count(ctx: Ctx, key: Key) -> bool:
    """Before 0.2 `status.retrains` was a count; now it is the list of retrains. An
    apply cannot convert such a stored status (the schema says list), so the count is
    moved to `retrainCount` by one merge patch, once. True when it patched."""
    body = ctx.store.get(*key)
    count = ((body or {}).get("status") or {}).get("retrains")
    if body is None or not isinstance(count, int):
        return False
    patched = await ctx.kube.merge_patch(
        API_VERSION,
        KIND,
        key[1],
        key[2],
        {"status": {"retrains": None, "retrainCount": count}},
        subresource="status",
    )
    ctx.store.put(KIND, patched)
    return True


def _batch(ctx: Ctx, spec: DriftMonitorSpec, namespace: str) -> dict[str, Any] | None:
    if spec.source.type != "batchPrediction":
        return None
    return driftbatch.watched(spec, namespace, ctx.store.all(driftbatch.KIND))


def _carried(prev: DriftMonitorStatus) -> list[c.Cond]:
    return [
        c.Cond(cd.type, _status_bool(cd.status), cd.reason, cd.message) for cd in prev.conditions
    ]


def _status_bool(value: str) -> bool | None:
    return None if value == "Unknown" else value == "True"


reconcile = Reconciler()


def _dependents(ctx: Ctx, kind: str, obj: dict[str, Any]) -> list[Key]:
    """Monitors watching a ModelDeployment or a BatchPrediction, or waiting for the
    retrain they started (a TrainingJob, or an Experiment)."""
    if kind == driftbatch.KIND:
        return _watching_batch(ctx, obj)
    if kind not in (MODEL_DEPLOYMENT, TRAINING_JOB, EXPERIMENT):
        return []
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    found: list[Key] = []
    for dm in ctx.store.all(KIND):
        if dm["metadata"]["namespace"] != namespace:
            continue
        spec = dm.get("spec") or {}
        last = (dm.get("status") or {}).get("lastRetrain") or {}
        started = last.get("experiment") if kind == EXPERIMENT else last.get("trainingJob")
        if (kind == MODEL_DEPLOYMENT and spec.get("modelDeployment") == name) or (
            kind != MODEL_DEPLOYMENT and started == name
        ):
            found.append((KIND, namespace, dm["metadata"]["name"]))
    return found


def _watching_batch(ctx: Ctx, obj: dict[str, Any]) -> list[Key]:
    namespace = obj["metadata"]["namespace"]
    found: list[Key] = []
    for dm in ctx.store.all(KIND):
        if dm["metadata"]["namespace"] != namespace:
            continue
        try:
            spec = DriftMonitorSpec.model_validate(dm.get("spec") or {})
        except ValueError:
            continue
        if driftbatch.watches(spec, obj):
            found.append((KIND, namespace, dm["metadata"]["name"]))
    return found


def _forget(ctx: Ctx, key: Key) -> None:
    forget(key[1], key[2])


CONTROLLER = Controller(
    kind=KIND,
    plural="driftmonitors",
    reconcile=reconcile,
    children=(
        # The evaluation Jobs of the retrains, and their pods (which carry the verdict).
        ChildWatch("batch", "v1", "jobs", "Job", retrain.EVAL_JOB, EVALUATION_LABEL),
        ChildWatch("", "v1", "pods", "Pod", retrain.EVAL_POD, EVALUATION_LABEL, slim=slim_pod),
    ),
    dependents=_dependents,
    forget=_forget,
)
