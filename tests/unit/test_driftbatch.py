"""A DriftMonitor's batch source: which run to judge, and its counts on the
reference's bins (pure)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.controllers import driftbatch
from kubeloop.drift.profile import FeatureProfile, Profile, bins_hash
from kubeloop.drift.sources import SourceInvalid

PROFILE = Profile(rows=8, features=[
    FeatureProfile(name="x", kind="numeric", edges=[0.0, 1.0], counts=[2, 3, 3]),
    FeatureProfile(name="c", kind="categorical", categories=["a"], counts=[5, 3]),
])  # fmt: skip


def batch(phase: str = "Succeeded", name: str = "nightly", done: str = "", created: str = "",
          labels: dict[str, str] | None = None, **drift: Any) -> dict[str, Any]:
    counts = {"rows": 8, "reference": bins_hash(PROFILE),
              "features": {"x": [1, 1, 6], "c": [8, 0]}, **drift}
    return {"metadata": {"name": name, "uid": f"uid-{name}", "namespace": "ns",
                         "labels": labels or {}, "creationTimestamp": created},
            "status": {"phase": phase, "drift": counts, "completionTime": done}}


def monitor(**source: Any) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(
        {"modelDeployment": "web", "source": {"type": "batchPrediction", **source}})


def test_only_a_run_that_succeeded_with_counts_is_judged() -> None:
    assert driftbatch.run_of(batch()) == "nightly/uid-nightly"
    assert driftbatch.run_of(batch("Running")) is None
    assert driftbatch.run_of(None) is None
    named = monitor(batchPrediction="nightly")
    assert "phase Running" in driftbatch.not_yet(named, "ns", batch("Running"))
    assert "BatchPrediction nightly in ns: there is none" in driftbatch.not_yet(named, "ns", None)


def test_by_labels_the_newest_run_that_succeeded() -> None:
    """The dated runs of a schedule: the newest that succeeded is judged; a run still
    going does not hide the one before it."""
    spec = monitor(batchPredictionLabels={"schedule": "nightly"})
    mine = {"schedule": "nightly"}
    runs = [
        batch(name="d1", done="2026-12-05T03:00:00Z", created="2026-12-05T02:00:00Z", labels=mine),
        batch(name="d2", done="2026-12-06T03:00:00Z", created="2026-12-06T02:00:00Z", labels=mine),
        batch("Running", name="d3", created="2026-12-07T02:00:00Z", labels=mine),
        batch(name="other", done="2026-12-07T04:00:00Z", labels={"schedule": "weekly"}),
    ]
    chosen = driftbatch.watched(spec, "ns", runs)
    assert chosen is not None and chosen["metadata"]["name"] == "d2"
    assert [driftbatch.watches(spec, r) for r in runs] == [True, True, True, False]
    waiting = driftbatch.watched(spec, "ns", [runs[2]])
    assert waiting is not None and waiting["metadata"]["name"] == "d3"
    assert "labelled schedule=nightly in ns" in driftbatch.not_yet(spec, "ns", None)
    assert driftbatch.watched(spec, "other-ns", runs) is None


def test_the_counts_are_the_window_on_the_references_bins() -> None:
    scrape = driftbatch.scrape(batch(), PROFILE, PROFILE)
    assert not scrape.cumulative
    np.testing.assert_array_equal(scrape.counts, [[1, 1, 6], [8, 0, 0]])
    only_c = PROFILE.select(["c"])
    np.testing.assert_array_equal(driftbatch.scrape(batch(), PROFILE, only_c).counts, [[8, 0]])


def test_counts_on_other_bins_are_refused() -> None:
    with pytest.raises(SourceInvalid, match="other bins than the reference"):
        driftbatch.scrape(batch(reference="another"), PROFILE, PROFILE)
    with pytest.raises(SourceInvalid, match="feature 'x'"):
        driftbatch.scrape(batch(features={"c": [8, 0]}), PROFILE, PROFILE)
