"""The stable pods' shadow counters, read from their `/metrics` at most every
`READ_INTERVAL` per ModelDeployment and kept in the operator's memory between reads
(after a restart the first reconcile reads again)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubeloop.canary.figures import FiguresInvalid
from kubeloop.canary.measure import SCRAPE_TIMEOUT, ServingPod
from kubeloop.drift import sources
from kubeloop.shadow.figures import ShadowSample, parse_shadow, total

log = logging.getLogger("kubeloop.shadow")

Key = tuple[str, str, str]
READ_INTERVAL = 15.0


@dataclass(frozen=True)
class Reading:
    """The counters summed over the pods that answered, and those that did not."""

    total: ShadowSample
    pods: int
    unreadable: dict[str, str]
    time: dt.datetime
    shadow_uri: str


@dataclass
class _Held:
    reading: Reading
    at: float


@dataclass
class ShadowReader:
    held: dict[Key, _Held] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.held.pop(key, None)

    def due_in(self, key: Key) -> float:
        held = self.held.get(key)
        return 0.0 if held is None else max(0.0, held.at + READ_INTERVAL - time.monotonic())

    async def read(
        self,
        key: Key,
        pods: Sequence[ServingPod],
        model: str,
        shadow_uri: str,
        now: dt.datetime,
    ) -> Reading:
        """The last reading, read again when due or when the shadow or the pods changed."""
        held = self.held.get(key)
        if (
            held is not None
            and held.reading.shadow_uri == shadow_uri
            and held.reading.pods + len(held.reading.unreadable) == len(pods)
            and self.due_in(key) > 0
        ):
            return held.reading
        reading = await read_pods(pods, model, shadow_uri, now)
        for uid, why in reading.unreadable.items():
            log.info("%s %s/%s: could not read the shadow counters of pod %s: %s", *key, uid, why)
        self.held[key] = _Held(reading, time.monotonic())
        return reading


def _read(url: str, model: str) -> ShadowSample:
    return parse_shadow(sources.fetch_metrics(url, timeout=SCRAPE_TIMEOUT, retries=0), model)


async def read_pods(
    pods: Sequence[ServingPod], model: str, shadow_uri: str, now: dt.datetime
) -> Reading:
    why: dict[str, str] = {}

    async def one(pod: ServingPod) -> ShadowSample | None:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(_read, pod.url, model), 2 * SCRAPE_TIMEOUT
            )
        except (sources.SourceUnavailable, sources.SourceInvalid, FiguresInvalid) as err:
            why[pod.uid] = str(err)
        except TimeoutError:
            why[pod.uid] = f"no answer within {2 * SCRAPE_TIMEOUT:.0f} s"
        return None

    samples = await asyncio.gather(*(one(p) for p in pods))
    read = [s for s in samples if s is not None]
    return Reading(total(read), len(read), why, now, shadow_uri)


# The operator's readings.
READER = ShadowReader()
