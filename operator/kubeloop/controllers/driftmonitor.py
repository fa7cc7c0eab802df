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

import numpy as np

from kubeloop import conditions as c
from kubeloop import metrics
from kubeloop.api.common import duration_seconds
from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
)
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.controllers import retrain
from kubeloop.controllers.common import (
    Ctx,
    begin,
    finish_status,
    parse_time,
    record_event,
    rfc3339,
    transition_event,
    write_status,
)
from kubeloop.controllers.driftverdict import (
    Scrape,
    broken,
    judge,
    reference_pending,
    target_missing,
)
from kubeloop.controllers.k8sread import pod_ready
from kubeloop.controllers.runtime import Key, Result
from kubeloop.drift import sources
from kubeloop.drift.profile import Profile
from kubeloop.drift.reference import (
    ReferenceInvalid,
    ReferenceNotServed,
    parse_profile,
    profile_from_server,
    profile_from_url,
)
from kubeloop.names import API_VERSION, MODEL_URI_ANNOTATION, SERVER_PORT

log = logging.getLogger("kubeloop.driftmonitor")

KIND = retrain.KIND
MODEL_DEPLOYMENT = retrain.MODEL_DEPLOYMENT
TRAINING_JOB = retrain.TRAINING_JOB
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
    reconcile._profiles.pop((namespace, name), None)
    retrain.forget(namespace, name)


def remembered(namespace: str, name: str) -> list[str]:
    """What this process keeps in memory about a monitor (for tests and debugging):
    empty once it is deleted."""
    held = [f"hold {k}" for k in reconcile._holds if k[1:] == (namespace, name)]
    held += [f"profiles {k}" for k in reconcile._profiles if k == (namespace, name)]
    held += [f"verdict wait {k}" for k in retrain._done_seen if k[:2] == (namespace, name)]
    return held


def url_allowed(url: str, allowlist: list[str]) -> bool:
    return any(url.startswith(prefix) for prefix in allowlist if prefix)


def refused_url(spec: DriftMonitorSpec, allowlist: list[str]) -> str | None:
    """Why a URL the monitor names may not be read by the operator, or None. The
    operator reads only the addresses its administrator allowed (no SSRF through it)."""
    prom = spec.source.prometheus if spec.source.type == "prometheus" else None
    named = [
        ("source.prometheus.url", prom.url if prom else None),
        ("source.url", spec.source.url if prom is None else None),
        ("reference.url", spec.reference.url),
    ]
    for field_name, url in named:
        if url and not url_allowed(url, allowlist):
            return f"{field_name} {url} is not allowed by the operator's driftSourceAllowlist"
    return None


def _scrape_metrics(urls: list[str], profile: Profile, model: str) -> Scrape:
    total: np.ndarray | None = None
    errors = []
    for url in urls:
        try:
            text = sources.fetch_metrics(url, timeout=SCRAPE_TIMEOUT, retries=1)
            counts = sources.parse_metrics(text, profile, model)
        except sources.SourceUnavailable as err:
            errors.append(str(err))
            continue
        total = counts if total is None else total + counts
    if total is None:
        raise sources.SourceUnavailable("; ".join(errors) or "no endpoint to scrape")
    return Scrape(total, cumulative=True)


def _scrape_prometheus(
    url: str, query: str, profile: Profile, model: str, namespace: str, window: str
) -> Scrape:
    counts = sources.prometheus_counts(
        url,
        profile,
        model=model,
        namespace=namespace,
        window=window,
        bucket_query=query,
        timeout=SCRAPE_TIMEOUT,
    )
    return Scrape(counts, cumulative=False)


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
    """Holds the per-monitor reference cache between checks."""

    def __init__(self) -> None:
        # Per monitor (namespace, name): its reference profiles by source (a ConfigMap's
        # version, the URL, the model URI). Dropped with the monitor (forget).
        self._profiles: dict[tuple[str, str], dict[str, Profile]] = {}
        self._holds: dict[Key, Hold] = {}

    async def reference(
        self, ctx: Ctx, spec: DriftMonitorSpec, body: dict[str, Any], target: dict[str, Any]
    ) -> Profile:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        cache = self._profiles.setdefault((namespace, name), {})
        ref = spec.reference
        if ref.config_map is not None:
            cm = await ctx.kube.get("v1", "ConfigMap", namespace, ref.config_map.name)
            if cm is None:
                raise ReferenceNotServed(
                    f"waiting for ConfigMap {namespace}/{ref.config_map.name} with the "
                    "reference profile"
                )
            key = ref.config_map.key
            # Parsed once per version of the ConfigMap, not at every check.
            version = (
                f"configmap/{ref.config_map.name}/{key}@{cm['metadata'].get('resourceVersion')}"
            )
            cached = cache.get(version)
            if cached is not None:
                profile = cached
            else:
                text = (cm.get("data") or {}).get(key)
                if text is None:
                    raise ReferenceInvalid(
                        f"ConfigMap {namespace}/{ref.config_map.name} has no key {key!r}"
                    )
                profile = parse_profile(text, f"ConfigMap {ref.config_map.name} key {key}")
                cache.clear()
                cache[version] = profile
        elif ref.url is not None:
            # Read again at every check (the profile may change with the model); while
            # the server cannot answer, the last profile it gave stands.
            try:
                profile = await asyncio.to_thread(profile_from_url, ref.url)
            except ReferenceNotServed:
                if ref.url not in cache:
                    raise
                profile = cache[ref.url]
            cache.clear()
            cache[ref.url] = profile
        else:
            uri = (target.get("status") or {}).get("activeModelUri")
            if not uri:
                raise ReferenceNotServed(
                    f"waiting for ModelDeployment {target['metadata']['name']} to have an "
                    "active model: the reference profile is read from its serving pods"
                )
            if uri not in cache:
                base = self._server_of(ctx, namespace, target, uri)
                fetched = await asyncio.to_thread(
                    profile_from_server, base, target["metadata"]["name"]
                )
                cache.clear()
                cache[uri] = fetched
            profile = cache[uri]
        if spec.features:
            try:
                profile = profile.select(spec.features)
            except ValueError as err:
                raise ReferenceInvalid(str(err)) from err
        return profile

    @staticmethod
    def _server_of(ctx: Ctx, namespace: str, target: dict[str, Any], uri: str) -> str:
        """A ready pod of the target that serves `uri`: only pods can read a claim."""
        md_spec = ModelDeploymentSpec.model_validate(target.get("spec") or {})
        port = md_spec.runtime.port if md_spec.runtime else SERVER_PORT
        for pod in ctx.store.owned(MD_POD, namespace, target["metadata"]["name"]):
            meta, pod_status = pod["metadata"], pod.get("status") or {}
            ready = pod_ready(pod)
            serves = (meta.get("annotations") or {}).get(MODEL_URI_ANNOTATION) == uri
            if ready and serves and pod_status.get("podIP") and not meta.get("deletionTimestamp"):
                return f"http://{pod_status['podIP']}:{port}"
        raise ReferenceNotServed(
            f"waiting for a ready pod of ModelDeployment {target['metadata']['name']} that "
            f"serves {uri}: its reference profile is read from the model server"
        )

    def endpoints(
        self, ctx: Ctx, spec: DriftMonitorSpec, namespace: str, target: dict[str, Any]
    ) -> list[str]:
        if spec.source.url:
            return [spec.source.url]
        md_spec = ModelDeploymentSpec.model_validate(target.get("spec") or {})
        port = md_spec.runtime.port if md_spec.runtime else SERVER_PORT
        pods = ctx.store.owned(MD_POD, namespace, target["metadata"]["name"])
        urls = [
            f"http://{p['status']['podIP']}:{port}/metrics"
            for p in pods
            if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
        ][:MAX_PODS_SCRAPED]
        # No pod known (yet): the target's own Service in the same namespace.
        return urls or [f"http://{target['metadata']['name']}.{namespace}.svc:{port}/metrics"]

    async def __call__(self, ctx: Ctx, key: Key) -> Result | None:
        namespace = key[1]
        if await _migrate_count(ctx, key):
            return Result(requeue_after=0.5)
        started = await begin(ctx, key, DriftMonitorSpec, DriftMonitorStatus())
        if started is None:
            return None
        body, spec, now = started
        stamp = rfc3339(now)
        prev = DriftMonitorStatus.model_validate(body.get("status") or {})
        status = prev.model_copy(deep=True)
        interval = max(duration_seconds(spec.interval), 1.0)
        events: list[tuple[str, str, str]] = []

        # The loop first: follow the retrain we started, evaluate and promote its model.
        verdict_due = await retrain.follow(ctx, spec, body, status, events, now)

        target = ctx.store.get(MODEL_DEPLOYMENT, namespace, spec.model_deployment)
        last = parse_time(prev.last_check_time)
        generation = body["metadata"].get("generation")
        due = last is None or (now - last).total_seconds() >= interval - 0.05
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
            conds = await self._check(ctx, spec, body, target, status, events, now)
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
        if verdict_due is not None:
            requeue = min(requeue, verdict_due)
        new_status = finish_status(body, status, conds, stamp)
        written = await write_status(ctx, body, new_status)
        if written and not events:
            event = transition_event(status.phase, status.message or "", conds)
            before = transition_event(prev.phase, "", _carried(prev))
            if (status.phase, event[1]) != (prev.phase, before[1]):
                events.append(event)
        for event in events:
            await record_event(ctx, body, *event)
        return Result(requeue_after=max(requeue, 0.5))

    async def _check(
        self,
        ctx: Ctx,
        spec: DriftMonitorSpec,
        body: dict[str, Any],
        target: dict[str, Any],
        status: DriftMonitorStatus,
        events: list[tuple[str, str, str]],
        now: dt.datetime,
    ) -> list[c.Cond]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        stamp = rfc3339(now)
        status.last_check_time = stamp
        model = spec.model_deployment
        refused = refused_url(spec, ctx.config.drift_source_allowlist)
        if refused:
            return broken(status, c.SOURCE_NOT_ALLOWED, refused, stalled=True)
        try:
            profile = await self.reference(ctx, spec, body, target)
        except ReferenceNotServed as err:
            return reference_pending(status, str(err))
        except ReferenceInvalid as err:
            return broken(status, c.REFERENCE_INVALID, str(err), stalled=True)
        try:
            if spec.source.type == "prometheus":
                prom = spec.source.prometheus
                assert prom is not None
                scrape = await asyncio.to_thread(
                    _scrape_prometheus,
                    prom.url,
                    prom.query,
                    profile,
                    model,
                    namespace,
                    spec.interval,
                )
            else:
                urls = self.endpoints(ctx, spec, namespace, target)
                scrape = await asyncio.to_thread(_scrape_metrics, urls, profile, model)
        except sources.SourceUnavailable as err:
            return broken(status, c.SOURCE_UNAVAILABLE, str(err))
        except sources.SourceInvalid as err:
            return broken(status, c.SOURCE_INVALID, str(err))

        changed = status.observed_generation not in (None, body["metadata"].get("generation"))
        verdict = judge(spec, status, profile, scrape, now, events, spec_changed=changed)
        for feature, method, score in verdict.scores:
            metrics.DRIFT_SCORE.labels(namespace, name, feature, method).set(score)
        if status.drifted is not None:
            metrics.DRIFT_DETECTED.labels(namespace, name).set(1 if status.drifted else 0)
        if verdict.wants_retrain:
            status.message = (status.message or "") + await retrain.start(
                ctx, spec, body, status, events, now
            )
        return verdict.conds


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


def _carried(prev: DriftMonitorStatus) -> list[c.Cond]:
    return [
        c.Cond(cd.type, _status_bool(cd.status), cd.reason, cd.message) for cd in prev.conditions
    ]


def _status_bool(value: str) -> bool | None:
    return None if value == "Unknown" else value == "True"


reconcile = Reconciler()
