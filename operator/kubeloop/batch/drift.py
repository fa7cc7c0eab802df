"""Drift counts of what a run scores: its input rows on the model's reference profile
bins, counted exactly as the model server counts what it serves
(:class:`kubeloop.serving.livestats.LiveStats`), so that a DriftMonitor judges a batch
as it judges a deployment's traffic.

Counts are kept per shard (in the shard's manifest, so a retried pod that skips a
done shard still has them) and added up into the output's ``_manifest.json``::

    {"rows": 600, "reference": "<bins hash>", "features": {"petal_width_cm": [..]}}

A model without a profile has no counts (``None``), and so has a total that lacks one
shard's counts: a partial count is never given as the whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from kubeloop.drift.profile import bins_hash
from kubeloop.modeldir import LoadedModel
from kubeloop.serving.livestats import LiveStats


class DriftCounter:
    """One shard's counts."""

    def __init__(self, model: LoadedModel) -> None:
        profile = model.profile
        self.reference = bins_hash(profile) if profile is not None else None
        self.stats = LiveStats(model.metadata.name, model, monitoring=True) if profile else None
        self.rows = 0

    def observe(self, rows: np.ndarray) -> None:
        if self.stats is not None:
            self.stats.observe_inputs(rows)
            self.rows += len(rows)

    def counts(self) -> dict[str, Any] | None:
        if self.stats is None or self.reference is None:
            return None
        return {
            "rows": self.rows,
            "reference": self.reference,
            "features": self.stats.feature_counts(),
        }


def add_up(parts: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The counts of all shards added up; None when a shard has none, or shards were
    counted on different bins."""
    total: dict[str, Any] | None = None
    for part in parts:
        if part is None:
            return None
        if total is None:
            total = {
                "rows": part["rows"],
                "reference": part["reference"],
                "features": {k: list(v) for k, v in part["features"].items()},
            }
            continue
        if (
            part["reference"] != total["reference"]
            or part["features"].keys() != total["features"].keys()
        ):
            return None
        total["rows"] += part["rows"]
        for name, counts in part["features"].items():
            mine = total["features"][name]
            if len(mine) != len(counts):
                return None
            total["features"][name] = [a + b for a, b in zip(mine, counts, strict=True)]
    return total
