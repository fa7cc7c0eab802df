"""A DriftMonitor's batch source (`source.type: batchPrediction`): the rows a
BatchPrediction scored, counted by its pods on the model's reference profile bins as the
model server counts what it serves (kubeloop/batch/drift.py), read from its
`status.drift`. A run is judged once, when it has succeeded: its counts are the window,
and its verdict stands until another run of that name succeeds."""

from __future__ import annotations

from typing import Any

import numpy as np

from kubeloop import conditions as c
from kubeloop.api.driftmonitor import DriftMonitorStatus
from kubeloop.controllers.driftverdict import Scrape
from kubeloop.drift.profile import Profile, bins_hash
from kubeloop.drift.sources import SourceInvalid

KIND = "BatchPrediction"


def run_of(batch: dict[str, Any] | None) -> str | None:
    """The run to judge (`NAME/UID`): a BatchPrediction that succeeded with its counts;
    None before that."""
    status = (batch or {}).get("status") or {}
    if batch is None or status.get("phase") != c.SUCCEEDED or not status.get("drift"):
        return None
    meta = batch["metadata"]
    return f"{meta['name']}/{meta.get('uid', '')}"


def not_yet(name: str, namespace: str, batch: dict[str, Any] | None) -> str:
    """Why there is nothing to judge yet, in words."""
    if batch is None:
        return f"waiting for BatchPrediction {namespace}/{name}: it does not exist"
    status = batch.get("status") or {}
    phase = status.get("phase") or c.PENDING
    if phase == c.SUCCEEDED:
        return (
            f"BatchPrediction {name} succeeded without drift counts (a model without a "
            "reference profile, or counts too large for its pods' termination messages: "
            "they are in the output's _manifest.json)"
        )
    return f"waiting for BatchPrediction {name} to succeed (phase {phase})"


def pending(status: DriftMonitorStatus, why: str) -> list[c.Cond]:
    status.phase, status.message = c.PENDING, why
    return [
        c.Cond(c.READY, False, c.BATCH_PENDING, why),
        c.Cond(c.SOURCE_READY, False, c.BATCH_PENDING, why),
        c.Cond(c.RECONCILING, True, c.BATCH_PENDING, why),
    ]


def scrape(batch: dict[str, Any], full: Profile, profile: Profile) -> Scrape:
    """The run's counts as a window on `profile` (the monitor's features of the
    reference `full`). Counts on other bins than the reference's are refused."""
    drift = (batch.get("status") or {}).get("drift") or {}
    name = batch["metadata"]["name"]
    if drift.get("reference") != bins_hash(full):
        raise SourceInvalid(
            f"BatchPrediction {name} counted its rows on other bins than the reference's: "
            "it scored with a model whose reference profile differs (set reference to that "
            "model's profile, or watch a run of the reference's model)"
        )
    features = drift.get("features") or {}
    counts = np.zeros((len(profile.features), profile.max_bins), dtype=np.float64)
    for row, feature in enumerate(profile.features):
        values = features.get(feature.name)
        if values is None or len(values) != feature.bins:
            raise SourceInvalid(
                f"BatchPrediction {name} has no counts on the reference's bins for "
                f"feature {feature.name!r}"
            )
        counts[row, : feature.bins] = values
    return Scrape(counts, cumulative=False)
