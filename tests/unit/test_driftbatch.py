"""A DriftMonitor's batch source: which run to judge, and its counts on the
reference's bins (pure)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kubeloop.controllers import driftbatch
from kubeloop.drift.profile import FeatureProfile, Profile, bins_hash
from kubeloop.drift.sources import SourceInvalid

PROFILE = Profile(rows=8, features=[
    FeatureProfile(name="x", kind="numeric", edges=[0.0, 1.0], counts=[2, 3, 3]),
    FeatureProfile(name="c", kind="categorical", categories=["a"], counts=[5, 3]),
])  # fmt: skip


def batch(phase: str = "Succeeded", **drift: Any) -> dict[str, Any]:
    counts = {"rows": 8, "reference": bins_hash(PROFILE),
              "features": {"x": [1, 1, 6], "c": [8, 0]}, **drift}
    return {"metadata": {"name": "nightly", "uid": "u1"},
            "status": {"phase": phase, "drift": counts}}


def test_only_a_run_that_succeeded_with_counts_is_judged() -> None:
    assert driftbatch.run_of(batch()) == "nightly/u1"
    assert driftbatch.run_of(batch("Running")) is None
    assert driftbatch.run_of(None) is None
    assert "phase Running" in driftbatch.not_yet("nightly", "ns", batch("Running"))
    assert "does not exist" in driftbatch.not_yet("nightly", "ns", None)


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
