"""A DriftMonitor's batch source (`source.type: batchPrediction`): the rows a
BatchPrediction scored, counted by its pods on the model's reference profile bins as the
model server counts what it serves (kubeloop/batch/drift.py), read from its
`status.drift`. A run is judged once, when it has succeeded: its counts are the window,
and its verdict stands until another run succeeds (of that name, or the newest of
those with the monitor's labels: the dated runs of a schedule)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kubeloop import conditions as c
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
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


def watched(
    spec: DriftMonitorSpec, namespace: str, batches: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The run a monitor looks at: the one it names; or, among those with its labels,
    the newest that succeeded with counts, else the newest (to say what it waits for)."""
    source = spec.source
    mine = [
        b
        for b in batches
        if b["metadata"].get("namespace") == namespace and _selected(source, b["metadata"])
    ]
    done = [b for b in mine if run_of(b)]
    if done:
        return max(
            done,
            key=lambda b: (
                (b.get("status") or {}).get("completionTime") or "",
                b["metadata"].get("creationTimestamp") or "",
            ),
        )
    return max(mine, key=lambda b: b["metadata"].get("creationTimestamp") or "", default=None)


def _selected(source: Any, meta: dict[str, Any]) -> bool:
    if source.type != "batchPrediction":
        return False
    if source.batch_prediction is not None:
        return bool(meta.get("name") == source.batch_prediction)
    labels = meta.get("labels") or {}
    wanted = source.batch_prediction_labels or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def watches(spec: DriftMonitorSpec, batch: dict[str, Any]) -> bool:
    """Whether a monitor looks at this BatchPrediction (same namespace assumed)."""
    return _selected(spec.source, batch["metadata"])


def described(spec: DriftMonitorSpec) -> str:
    source = spec.source
    if source.batch_prediction is not None:
        return f"BatchPrediction {source.batch_prediction}"
    labels = ",".join(f"{k}={v}" for k, v in sorted((source.batch_prediction_labels or {}).items()))
    return f"a BatchPrediction labelled {labels}"


def not_yet(spec: DriftMonitorSpec, namespace: str, batch: dict[str, Any] | None) -> str:
    """Why there is nothing to judge yet, in words."""
    if batch is None:
        return f"waiting for {described(spec)} in {namespace}: there is none"
    name = batch["metadata"]["name"]
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
