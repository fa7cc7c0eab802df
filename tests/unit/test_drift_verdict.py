"""A DriftMonitor's verdict over successive windows of a cumulative source: a verdict
stands while the next window fills, so light traffic does not flap the phase (and send
an Event) back to Collecting at every interval."""

from __future__ import annotations

import datetime as dt

import numpy as np

from kubeloop import conditions as c
from kubeloop.api.common import Condition
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, RetrainRecord
from kubeloop.controllers.driftverdict import Scrape, judge
from kubeloop.drift.profile import Profile, build_profile, counts_for

NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def profile() -> Profile:
    rng = np.random.default_rng(0)
    return build_profile({"a": rng.normal(size=5000), "b": rng.normal(size=5000)})


def rows(n: int, shift: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(size=n) + shift, "b": rng.normal(size=n)}


class Monitor:
    """judge() as the reconcile calls it: the counts keep growing, and the conditions it
    returns are in the status the next check starts from."""

    def __init__(self, min_samples: int = 150, cumulative: bool = True, **spec: object) -> None:
        self.profile = profile()
        self.spec = DriftMonitorSpec.model_validate(
            {
                "modelDeployment": "m",
                "source": {"url": "http://m/metrics"},
                "method": "psi",
                "minSamples": min_samples,
                **spec,
            }
        )
        # A Prometheus source answers each window's counts, not running totals.
        self.is_cumulative = cumulative
        self.status = DriftMonitorStatus()
        self.cumulative = np.zeros((len(self.profile.features), self.profile.max_bins))
        self.events: list[tuple[str, str, str]] = []

    def check(self, n: int = 0, shift: float = 0.0, seed: int = 1) -> DriftMonitorStatus:
        if self.is_cumulative:
            if n:
                self.cumulative = self.cumulative + counts_for(self.profile, rows(n, shift, seed))
            counts = self.cumulative.copy()
        else:
            counts = counts_for(self.profile, rows(n, shift, seed)) if n else self.cumulative * 0
        verdict = judge(
            self.spec,
            self.status,
            self.profile,
            Scrape(counts=counts, cumulative=self.is_cumulative),
            NOW,
            self.events,
        )
        self.status.conditions = [
            Condition(type=cd.type, status=cd.status_str, reason=cd.reason, message=cd.message)
            for cd in verdict.conds
        ]
        return self.status

    def condition(self, kind: str) -> Condition:
        return next(cd for cd in self.status.conditions if cd.type == kind)


def test_a_verdict_stands_while_the_next_window_fills() -> None:
    m = Monitor()
    assert m.check().phase == c.COLLECTING  # the baseline
    assert m.check(n=100).phase == c.COLLECTING  # no verdict yet: collecting
    assert m.status.samples == 100

    healthy = m.check(n=500)
    assert (healthy.phase, healthy.drifted, healthy.samples) == ("Healthy", False, 600)
    judged = m.condition(c.DRIFTED).message
    assert judged == "no psi drift over 600 samples"

    for _ in range(3):  # no traffic: the verdict stands, nothing moves
        quiet = m.check()
        assert (quiet.phase, quiet.drifted, quiet.samples) == ("Healthy", False, 600)
        assert quiet.message == f"{judged}; next window: 0 of 150 samples so far"
        assert m.condition(c.DRIFTED).message == judged
        assert m.condition(c.READY).status == "True"

    filling = m.check(n=40)
    assert filling.phase == "Healthy" and "next window: 40 of 150" in (filling.message or "")
    assert not m.events


def test_a_drift_verdict_stands_and_is_replaced_by_the_next_full_window() -> None:
    m = Monitor()
    m.check()
    drifted = m.check(n=400, shift=3.0)
    assert (drifted.phase, drifted.drifted) == ("Drifted", True)
    assert [e[1] for e in m.events] == [c.DRIFT_DETECTED]

    quiet = m.check(n=10, shift=3.0, seed=2)
    assert (quiet.phase, quiet.drifted, quiet.samples) == ("Drifted", True, 400)
    assert m.condition(c.DRIFTED).status == "True"
    assert m.condition(c.DRIFTED).reason == c.DRIFT_DETECTED
    assert "next window: 10 of 150" in (quiet.message or "")
    assert [e[1] for e in m.events] == [c.DRIFT_DETECTED]  # no second Event

    # The next full window is judged on its own rows: traffic is back to normal.
    back = m.check(n=400, seed=3)
    assert (back.phase, back.drifted) == ("Healthy", False)
    assert back.samples == 410
    assert [e[1] for e in m.events] == [c.DRIFT_DETECTED, c.NO_DRIFT]


def test_a_new_reference_drops_the_verdict_and_collects_again() -> None:
    m = Monitor()
    m.check()
    m.check(n=400, shift=3.0)
    m.profile = build_profile({"a": np.arange(1000.0), "b": np.arange(1000.0)})
    m.cumulative = np.zeros((len(m.profile.features), m.profile.max_bins))
    fresh = m.check()
    assert (fresh.phase, fresh.drifted) == (c.COLLECTING, None)
    assert m.check(n=20).phase == c.COLLECTING
    assert m.status.samples == 20


def test_a_window_source_keeps_its_verdict_too() -> None:
    """Prometheus answers the counts of the last interval: a quiet interval after a
    verdict leaves it standing as well."""
    m = Monitor(cumulative=False)
    assert m.check(n=50).phase == c.COLLECTING
    assert m.check(n=600).phase == "Healthy"
    quiet = m.check(n=20)
    assert (quiet.phase, quiet.drifted, quiet.samples) == ("Healthy", False, 600)
    assert "next window: 20 of 150" in (quiet.message or "")


def test_a_standing_drift_says_what_its_retrain_is_doing() -> None:
    m = Monitor(onDrift={"retrain": {"cooldown": "1h", "template": {"image": "t:1"}}})
    m.check()
    m.check(n=400, shift=3.0)
    m.status.last_retrain = RetrainRecord(training_job="m-retrain-1", time="2026-12-02T00:00:00Z")
    quiet = m.check()
    assert quiet.phase == "Drifted"
    assert quiet.message is not None and "; retraining in m-retrain-1; next window: 0" in (
        quiet.message
    )
    assert "retraining" not in m.condition(c.DRIFTED).message


def test_a_failed_retrain_says_why_until_its_cooldown_ends() -> None:
    """Every check in the cooldown repeats why the last retrain failed: the message that
    told it first is rewritten by the next check, the Event expires."""
    m = Monitor(onDrift={"retrain": {"cooldown": "1h", "template": {"image": "t:1"}}})
    m.check()
    m.check(n=400, shift=3.0)
    m.status.last_retrain = RetrainRecord(
        training_job="m-retrain-1",
        time=(NOW - dt.timedelta(minutes=10)).isoformat(),
        result="Failed",
        message="refused by the API server: 403 Forbidden: no training here",
    )
    quiet = m.check()
    assert "; retrain m-retrain-1 failed (refused by the API server: 403 Forbidden: no " in (
        quiet.message or ""
    )
    assert "; retrain cooldown until" in (quiet.message or "")
    m.status.last_retrain.result = "Rejected"
    assert "failed (" not in (m.check().message or "")


def test_a_changed_spec_drops_the_standing_verdict() -> None:
    m = Monitor()
    m.check()
    assert m.check(n=400, shift=3.0).phase == "Drifted"
    m.spec = m.spec.model_copy(update={"method": "ks"})
    verdict = judge(
        m.spec,
        m.status,
        m.profile,
        Scrape(counts=m.cumulative.copy(), cumulative=True),
        NOW,
        m.events,
        spec_changed=True,
    )
    assert (m.status.phase, m.status.drifted, m.status.features) == (c.COLLECTING, None, [])
    assert verdict.conds[0].reason == c.COLLECTING
