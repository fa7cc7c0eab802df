"""Live figures of a canary and its stable, read from their pods' own `/metrics`.

A window opens with a baseline read of every serving pod; when it is due, the pods are
read again and the counters since the baseline are judged. The baselines live in the
operator's memory only: after a restart a new window opens, nothing is written for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeloop.api.common import duration_seconds
from kubeloop.api.modeldeployment import CanaryAnalysis
from kubeloop.canary.figures import (
    Figures,
    FiguresInvalid,
    Sample,
    combine,
    delta,
    divergence,
    parse_sample,
)
from kubeloop.canary.judge import HOLD, Verdict, judge
from kubeloop.controllers.k8sread import pod_ready
from kubeloop.drift import sources
from kubeloop.names import MODEL_URI_ANNOTATION, TRACK_LABEL

log = logging.getLogger("kubeloop.canary")

Key = tuple[str, str, str]
SCRAPE_TIMEOUT = 5.0
MAX_PODS_READ = 50
STABLE, CANARY = "stable", "canary"


def seconds(duration: str) -> float:
    """`1m30s` -> 90.0, at least 1 s (the schema has checked the pattern)."""
    return max(duration_seconds(duration), 1.0)


@dataclass(frozen=True)
class ServingPod:
    uid: str
    track: str
    url: str
    created: dt.datetime | None


@dataclass(frozen=True)
class Measured:
    """One judgement: the verdict and the figures it was made on."""

    uri: str
    step: int | None
    verdict: Verdict
    canary: Figures | None
    stable: Figures | None
    window_seconds: float
    divergence: float | None


@dataclass
class Window:
    uri: str
    step: int | None
    opened: float
    opened_at: dt.datetime
    due: float
    baselines: dict[str, Sample] = field(default_factory=dict)
    # A step's verdict, kept until the status moves on: a status write that failed
    # after it does not lose it.
    verdict: Measured | None = None


def _created(pod: dict[str, Any]) -> dt.datetime | None:
    stamp = pod["metadata"].get("creationTimestamp")
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def serving_pods(
    pods: Sequence[dict[str, Any]], port: int, uris: dict[str, str]
) -> list[ServingPod]:
    """Ready pods of each track that serve that track's model, with their metrics URL."""
    found = []
    for pod in pods:
        meta = pod["metadata"]
        track = (meta.get("labels") or {}).get(TRACK_LABEL, "")
        ip = (pod.get("status") or {}).get("podIP")
        serves = (meta.get("annotations") or {}).get(MODEL_URI_ANNOTATION)
        if (
            track in uris
            and serves == uris[track]
            and ip
            and pod_ready(pod)
            and not meta.get("deletionTimestamp")
        ):
            found.append(
                ServingPod(
                    str(meta.get("uid")), track, f"http://{ip}:{port}/metrics", _created(pod)
                )
            )
    # At most MAX_PODS_READ of each track: many stable pods never crowd out the canary.
    return [
        p
        for track in (CANARY, STABLE)
        for p in [pod for pod in found if pod.track == track][:MAX_PODS_READ]
    ]


@dataclass
class Reachability:
    """The pods of one ModelDeployment whose last read failed, and why. A pod that
    cannot be read is read again at every window; its failure is logged when it starts
    and its recovery once, not at every read."""

    failing: dict[str, str] = field(default_factory=dict)

    def observe(self, reads: dict[str, str | None]) -> list[str]:
        """The lines to log for one read of the pods: metrics URL -> why it failed, None
        when it answered. A pod not read any more (gone, not ready) is forgotten."""
        lines = []
        for url, error in reads.items():
            before = self.failing.get(url)
            if error is not None and before is None:
                lines.append(f"Could not read {url}: {error} (logged again once it answers)")
            elif error is None and before is not None:
                lines.append(f"{url} answers again")
        self.failing = {
            url: self.failing.get(url, error) for url, error in reads.items() if error is not None
        }
        return lines


def _read(url: str, model: str) -> Sample:
    text = sources.fetch_metrics(url, timeout=SCRAPE_TIMEOUT, retries=0)
    return parse_sample(text, model)


async def read_all(
    pods: Sequence[ServingPod], model: str, errors: dict[str, str] | None = None
) -> dict[str, Sample | None]:
    """Every pod's sample, read at once; None for a pod that did not answer in time, and
    why in `errors` (by pod uid)."""
    why: dict[str, str] = {} if errors is None else errors

    async def one(pod: ServingPod) -> Sample | None:
        try:
            return await asyncio.to_thread(_read, pod.url, model)
        except (sources.SourceUnavailable, sources.SourceInvalid, FiguresInvalid) as err:
            why[pod.uid] = str(err)
            return None

    # Each read has its own timeout once a thread runs it; all of them together get a
    # bound too, so that a reconcile is never held longer.
    tasks = [asyncio.create_task(one(p)) for p in pods]
    done: set[asyncio.Task[Sample | None]] = set()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=3 * SCRAPE_TIMEOUT)
        for task in pending:
            task.cancel()
    samples = [t.result() if t in done else None for t in tasks]
    for pod, task in zip(pods, tasks, strict=True):
        if task not in done:
            why[pod.uid] = f"no answer within {3 * SCRAPE_TIMEOUT:.0f} s"
    return {pod.uid: sample for pod, sample in zip(pods, samples, strict=True)}


def track_figures(
    track: str,
    pods: Sequence[ServingPod],
    now: dict[str, Sample | None],
    window: Window,
) -> Figures | None:
    """The track's counters since the window opened. None when a pod of the track did not
    answer (for the canary, an unreadable pod may be the broken one) or none serves.

    A pod that served before the window opened but was not read then (it was not ready,
    or did not answer) counts from now on: this read becomes its baseline."""
    parts = []
    for pod in pods:
        if pod.track != track:
            continue
        current = now.get(pod.uid)
        if current is None:
            return None
        base = window.baselines.get(pod.uid)
        if base is None and (pod.created is None or pod.created < window.opened_at):
            window.baselines[pod.uid] = base = current
        parts.append(delta(current, base))
    if not parts:
        return None
    try:
        return combine(parts)
    except FiguresInvalid as err:  # pods with different histograms: not comparable
        log.info("Cannot combine the %s pods' figures: %s", track, err)
        return None


class Meter:
    """Open windows by ModelDeployment."""

    def __init__(self) -> None:
        self.windows: dict[Key, Window] = {}
        self.reachability: dict[Key, Reachability] = {}

    def forget(self, key: Key) -> None:
        """Nothing is measured for this ModelDeployment any more."""
        self.windows.pop(key, None)
        self.reachability.pop(key, None)

    async def _read(
        self, key: Key, pods: Sequence[ServingPod], model: str
    ) -> dict[str, Sample | None]:
        errors: dict[str, str] = {}
        read = await read_all(pods, model, errors)
        reach = self.reachability.setdefault(key, Reachability())
        for line in reach.observe({pod.url: errors.get(pod.uid) for pod in pods}):
            log.info("%s %s/%s: %s", *key, line)
        return read

    async def measure(
        self,
        key: Key,
        analysis: CanaryAnalysis,
        model: str,
        pods: Sequence[ServingPod],
        uri: str,
        step: int | None,
        now: dt.datetime,
    ) -> tuple[Measured | None, float]:
        """A judgement when the window is due, else None and the seconds until it is."""
        interval = seconds(analysis.interval)
        clock = time.monotonic()
        window = self.windows.get(key)
        if window is None or window.uri != uri or window.step != step:
            read = await self._read(key, pods, model)
            window = Window(uri, step, clock, now, clock + interval)
            window.baselines = {uid: s for uid, s in read.items() if s is not None}
            self.windows[key] = window
            return None, interval
        if window.verdict is not None:
            return window.verdict, interval
        if clock < window.due:
            return None, window.due - clock
        read = await self._read(key, pods, model)
        canary = track_figures(CANARY, pods, read, window)
        stable = track_figures(STABLE, pods, read, window)
        verdict = judge(analysis, canary, stable)
        spread = divergence(canary.predictions, stable.predictions) if canary and stable else None
        measured = Measured(uri, step, verdict, canary, stable, clock - window.opened, spread)
        if verdict.decision == HOLD:
            window.due = clock + interval
        elif step is None:
            self.windows.pop(key, None)  # a fixed share is judged window after window
        else:
            window.verdict = measured
        return measured, interval


# The operator's open windows.
METER = Meter()
