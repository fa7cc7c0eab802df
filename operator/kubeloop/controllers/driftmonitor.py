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
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubeloop import conditions as c
from kubeloop import metrics
from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
    FeatureScore,
    Window,
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
from kubeloop.controllers.runtime import Key, Result
from kubeloop.drift import report, sources, stats
from kubeloop.drift.profile import Profile
from kubeloop.drift.reference import (
    ReferenceInvalid,
    ReferenceNotServed,
    parse_profile,
    profile_from_server,
    profile_from_url,
)
from kubeloop.render.modeldeployment import MODEL_URI_ANNOTATION

log = logging.getLogger("kubeloop.driftmonitor")

KIND = retrain.KIND
MODEL_DEPLOYMENT = retrain.MODEL_DEPLOYMENT
TRAINING_JOB = retrain.TRAINING_JOB
MD_POD = "ModelDeployment/Pod"
MONITOR_LABEL = retrain.MONITOR_LABEL
PROMOTER = retrain.PROMOTER
MAX_PODS_SCRAPED = 20
SCRAPE_TIMEOUT = 5.0

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    return sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))


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


@dataclass
class Scrape:
    """Cumulative (metrics) or windowed (prometheus) per-bin counts."""

    counts: np.ndarray
    cumulative: bool


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


def reference_hash(profile: Profile) -> str:
    """Identifies the bins: a new model brings new edges, and a new window."""
    text = json.dumps([[f.name, f.kind, f.edges, f.categories] for f in profile.features])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_counts(window: Window | None, profile: Profile) -> np.ndarray | None:
    if window is None or window.reference != reference_hash(profile):
        return None
    out = np.zeros((len(profile.features), profile.max_bins))
    for row, feature in enumerate(profile.features):
        values = window.counts.get(feature.name)
        if values is None or len(values) != feature.bins:
            return None
        out[row, : feature.bins] = values
    return out


def _window_from(counts: np.ndarray, profile: Profile, now: str) -> Window:
    return Window(
        time=now,
        reference=reference_hash(profile),
        counts={
            f.name: [float(v) for v in counts[row, : f.bins]]
            for row, f in enumerate(profile.features)
        },
    )


def collecting(status: DriftMonitorStatus, spec: DriftMonitorSpec, why: str) -> list[c.Cond]:
    message = f"collecting: {why}, need {spec.min_samples}"
    status.phase = c.COLLECTING
    status.message = message
    return [
        c.Cond(c.READY, True, c.COLLECTING, message),
        c.Cond(c.SOURCE_READY, True, c.RECONCILED, why),
    ]


def reference_pending(status: DriftMonitorStatus, why: str) -> list[c.Cond]:
    """The reference is on its way (the model's pods are starting): a wait, not Stalled."""
    status.phase = c.PENDING
    status.message = why
    return [
        c.Cond(c.READY, False, c.REFERENCE_PENDING, why),
        c.Cond(c.SOURCE_READY, False, c.REFERENCE_PENDING, why),
        c.Cond(c.RECONCILING, True, c.REFERENCE_PENDING, why),
    ]


def broken(
    status: DriftMonitorStatus, reason: str, message: str, stalled: bool = False
) -> list[c.Cond]:
    status.phase = c.DEGRADED
    status.message = message
    conds = [
        c.Cond(c.READY, False, reason, message),
        c.Cond(c.SOURCE_READY, False, reason, message),
    ]
    if stalled:
        conds.append(c.Cond(c.STALLED, True, reason, message))
    return conds


def verdict_stands(
    status: DriftMonitorStatus, spec: DriftMonitorSpec, samples: int, now: dt.datetime
) -> list[c.Cond]:
    """The window after a verdict has too few samples so far: the last verdict stands
    (its phase, scores and sample count), and the message says how far the next window
    is, and what a retrain is doing. Going back to Collecting would flap the phase, and
    send an Event, at every interval of light traffic. A standing verdict starts no
    retrain: only a judged window does."""
    drifted = next((cd for cd in status.conditions if cd.type == c.DRIFTED), None)
    judged = drifted.message if drifted is not None else ""
    if status.drifted and spec.on_drift.retrain is not None:
        cooldown = parse_duration(spec.on_drift.retrain.cooldown)
        judged += retrain.retrain_blocked(spec, status, now, cooldown) or ""
    progress = f"next window: {samples} of {spec.min_samples} samples so far"
    status.phase = "Drifted" if status.drifted else "Healthy"
    status.message = f"{judged}; {progress}" if judged else progress
    reason = c.DRIFT_DETECTED if status.drifted else c.NO_DRIFT
    return [
        c.Cond(c.READY, True, c.RECONCILED, "checks running"),
        c.Cond(c.SOURCE_READY, True, c.RECONCILED, progress),
        c.Cond(c.DRIFTED, bool(status.drifted), reason, drifted.message if drifted else ""),
    ]


@dataclass
class Verdict:
    """The outcome of one check: conditions, per-feature gauges, and whether to retrain."""

    conds: list[c.Cond]
    scores: list[tuple[str, str, float]] = field(default_factory=list)
    wants_retrain: bool = False


def target_missing(
    status: DriftMonitorStatus, spec: DriftMonitorSpec, namespace: str
) -> list[c.Cond]:
    message = f"ModelDeployment {namespace}/{spec.model_deployment} does not exist"
    status.phase, status.message = "Pending", message
    return [
        c.Cond(c.READY, False, c.TARGET_NOT_FOUND, message),
        c.Cond(c.RECONCILING, True, c.TARGET_NOT_FOUND, message),
    ]


def judge(
    spec: DriftMonitorSpec,
    status: DriftMonitorStatus,
    profile: Profile,
    scrape: Scrape,
    now: dt.datetime,
    events: list[tuple[str, str, str]],
    spec_changed: bool = False,
) -> Verdict:
    """Pure: from the scraped counts and the previous window, the new status (updated in
    place), its conditions and Events. A verdict judged under an earlier spec (another
    method or threshold) does not stand for the new one."""
    stamp = rfc3339(now)
    if scrape.cumulative:
        baseline = _as_counts(status.window, profile)
        if baseline is None:
            if status.window is not None:
                # A new reference (a new model): the old verdict no longer applies.
                if status.drifted:
                    events.append(
                        (
                            "Normal",
                            c.DRIFT_RESET,
                            "the reference changed (a new model); the drift verdict is reset "
                            "and a new window starts",
                        )
                    )
                status.drifted, status.score, status.features = None, None, []
            status.window = _window_from(scrape.counts, profile, stamp)
            status.samples = 0
            return Verdict(collecting(status, spec, "baseline taken"))
        window = sources.window(baseline, scrape.counts)
    else:
        window = scrape.counts
    samples = int(window.sum(axis=1).min()) if len(window) else 0
    if samples < spec.min_samples:
        if status.drifted is not None and not spec_changed:
            return Verdict(verdict_stands(status, spec, samples, now))
        status.drifted, status.score, status.features = None, None, []
        status.samples = samples
        return Verdict(collecting(status, spec, f"{samples} samples so far"))
    status.samples = samples

    try:
        # compare() scores categorical features with chi2 where the method needs
        # ordered bins (ks, wasserstein).
        verdicts = report.compare(profile, window, spec.method, spec.threshold).features
    except stats.InsufficientData as err:
        if err.side == "current":
            return Verdict(collecting(status, spec, str(err)))
        return Verdict(broken(status, c.REFERENCE_INVALID, str(err), stalled=True))
    except ValueError as err:
        return Verdict(broken(status, c.REFERENCE_INVALID, str(err), stalled=True))
    if scrape.cumulative:
        status.window = _window_from(scrape.counts, profile, stamp)  # next window
    status.features = [
        FeatureScore(
            name=f.name,
            score=round(v.score, 6),
            p_value=None if v.p_value is None else round(v.p_value, 6),
            drifted=v.drifted,
        )
        for f, v in zip(profile.features, verdicts, strict=True)
    ]
    drifted_names = [f.name for f in status.features if f.drifted]
    status.score = max((f.score for f in status.features), default=0.0)
    was = status.drifted
    status.drifted = bool(drifted_names)
    scores: list[tuple[str, str, float]] = [
        (f.name, str(v.method), v.score) for f, v in zip(profile.features, verdicts, strict=True)
    ]
    wants_retrain = False

    if status.drifted:
        message = (
            f"{spec.method} drift in {len(drifted_names)} of {len(status.features)} "
            f"features ({', '.join(drifted_names)}) over {samples} samples"
        )
        if not was:
            events.append(("Warning", c.DRIFT_DETECTED, message))
        drifted_cond = c.Cond(c.DRIFTED, True, c.DRIFT_DETECTED, message)
        cooldown = parse_duration(spec.on_drift.retrain.cooldown) if spec.on_drift.retrain else 0
        blocked = retrain.retrain_blocked(spec, status, now, cooldown)
        wants_retrain = blocked is None
        message += blocked or ""
    else:
        message = f"no {spec.method} drift over {samples} samples"
        if was:
            events.append(("Normal", c.NO_DRIFT, message))
        drifted_cond = c.Cond(c.DRIFTED, False, c.NO_DRIFT, message)
    status.phase = "Drifted" if status.drifted else "Healthy"
    status.message = message
    return Verdict(
        [
            c.Cond(c.READY, True, c.RECONCILED, "checks running"),
            c.Cond(c.SOURCE_READY, True, c.RECONCILED, f"{samples} samples read"),
            drifted_cond,
        ],
        scores,
        wants_retrain,
    )


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
        # (namespace, model URI or reference URL) -> profile: a claim's name means
        # something else in another namespace.
        self._profiles: dict[tuple[str, str], Profile] = {}
        self._holds: dict[Key, Hold] = {}

    async def reference(
        self, ctx: Ctx, spec: DriftMonitorSpec, namespace: str, target: dict[str, Any]
    ) -> Profile:
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
            cached = self._profiles.get((namespace, version))
            if cached is not None:
                profile = cached
            else:
                text = (cm.get("data") or {}).get(key)
                if text is None:
                    raise ReferenceInvalid(
                        f"ConfigMap {namespace}/{ref.config_map.name} has no key {key!r}"
                    )
                profile = parse_profile(text, f"ConfigMap {ref.config_map.name} key {key}")
                self._profiles = {
                    k: v
                    for k, v in self._profiles.items()
                    if not (k[0] == namespace and k[1].startswith(version.split("@")[0] + "@"))
                }
                self._profiles[(namespace, version)] = profile
        elif ref.url is not None:
            # Read again at every check (the profile may change with the model); while
            # the server cannot answer, the last profile it gave stands.
            try:
                profile = await asyncio.to_thread(profile_from_url, ref.url)
            except ReferenceNotServed:
                if (namespace, ref.url) not in self._profiles:
                    raise
                profile = self._profiles[(namespace, ref.url)]
            self._profiles[(namespace, ref.url)] = profile
        else:
            uri = (target.get("status") or {}).get("activeModelUri")
            if not uri:
                raise ReferenceNotServed(
                    f"waiting for ModelDeployment {target['metadata']['name']} to have an "
                    "active model: the reference profile is read from its serving pods"
                )
            if (namespace, uri) not in self._profiles:
                base = self._server_of(ctx, namespace, target, uri)
                self._profiles[(namespace, uri)] = await asyncio.to_thread(
                    profile_from_server, base, target["metadata"]["name"]
                )
            profile = self._profiles[(namespace, uri)]
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
        port = md_spec.runtime.port if md_spec.runtime else 8080
        for pod in ctx.store.owned(MD_POD, namespace, target["metadata"]["name"]):
            meta, pod_status = pod["metadata"], pod.get("status") or {}
            ready = any(
                cond.get("type") == "Ready" and cond.get("status") == "True"
                for cond in pod_status.get("conditions") or []
            )
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
        port = md_spec.runtime.port if md_spec.runtime else 8080
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
        interval = max(parse_duration(spec.interval), 1.0)
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
            profile = await self.reference(ctx, spec, namespace, target)
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
        "kubeloop.io/v1alpha1",
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
