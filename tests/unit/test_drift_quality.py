"""What a DriftMonitor with spec.performance acts on: the quality verdict of a window
and the rule of what acts, row by row; then judge() over windows of labels and inputs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from kubeloop.api.common import Condition
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, Performance
from kubeloop.controllers import driftquality as dq
from kubeloop.controllers.driftverdict import Scrape, judge
from kubeloop.drift import performance as perf
from kubeloop.drift.profile import build_profile, counts_for

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("configured", "input_drifted", "degraded", "acts"),
    [
        (False, False, None, False),  # today's behaviour: no drift, nothing acts
        (False, True, None, True),  # today's behaviour: input drift acts
        (True, True, False, False),  # a harmless input shift is only reported
        (True, True, None, False),  # quality unknown (too few labels): nothing acts
        (True, False, True, True),  # concept drift: quality drops, inputs unchanged
        (True, True, True, True),  # both: the quality drop acts
        (True, False, False, False),
        (True, False, None, False),
    ],
)
def test_what_acts(
    configured: bool, input_drifted: bool, degraded: bool | None, acts: bool
) -> None:
    assert dq.acts(configured, input_drifted, degraded) is acts


def window(
    labels: int, accuracy: float | None, estimated: float | None, **extra: float
) -> perf.WindowQuality:
    return perf.WindowQuality(
        version="v1", labels=labels, accuracy=accuracy, estimated_accuracy=estimated, **extra
    )


def spec(**fields: object) -> Performance:
    return Performance.model_validate(fields)


@pytest.mark.parametrize(
    ("performance", "figures", "baseline", "degraded", "reason", "judged"),
    [
        # both: realised with enough labels, else estimated
        (
            {"minimum": 0.8, "minLabels": 50},
            window(60, 0.7, 0.95),
            None,
            True,
            dq.QUALITY_DROPPED,
            0.7,
        ),
        (
            {"minimum": 0.8, "minLabels": 50},
            window(60, 0.9, 0.5),
            None,
            False,
            dq.QUALITY_HELD,
            0.9,
        ),
        (
            {"minimum": 0.8, "minLabels": 50},
            window(10, 0.1, 0.85),
            None,
            False,
            dq.QUALITY_HELD,
            0.85,
        ),
        (
            {"minimum": 0.8, "minLabels": 50},
            window(10, 0.9, 0.6),
            None,
            True,
            dq.QUALITY_DROPPED,
            0.6,
        ),
        (
            {"minimum": 0.8, "minLabels": 50},
            window(10, 0.9, None),
            None,
            None,
            dq.NO_ESTIMATE,
            None,
        ),
        # labels only: too few labels is no verdict, whatever the estimate
        (
            {"source": "labels", "minimum": 0.8, "minLabels": 50},
            window(10, 0.1, 0.1),
            None,
            None,
            dq.TOO_FEW_LABELS,
            None,
        ),
        # estimated only: labels are not looked at
        (
            {"source": "estimated", "minimum": 0.8},
            window(500, 0.1, 0.9),
            None,
            False,
            dq.QUALITY_HELD,
            0.9,
        ),
        # maxDrop from the baseline, or no verdict without one
        (
            {"maxDrop": 0.05, "minLabels": 1},
            window(5, 0.86, None),
            0.9,
            False,
            dq.QUALITY_HELD,
            0.86,
        ),
        (
            {"maxDrop": 0.05, "minLabels": 1},
            window(5, 0.84, None),
            0.9,
            True,
            dq.QUALITY_DROPPED,
            0.84,
        ),
        (
            {"maxDrop": 0.05, "minLabels": 1},
            window(5, 0.1, None),
            None,
            None,
            dq.BASELINE_MISSING,
            0.1,
        ),
        # lower is better: maximum is a ceiling, both means labels only
        (
            {"metric": "rmse", "maximum": 2.0, "minLabels": 5},
            window(5, None, None, rmse=2.5),
            None,
            True,
            dq.QUALITY_DROPPED,
            2.5,
        ),
        (
            {"metric": "rmse", "maximum": 2.0, "minLabels": 5},
            window(5, None, None, rmse=1.5),
            None,
            False,
            dq.QUALITY_HELD,
            1.5,
        ),
        (
            {"metric": "mae", "maximum": 2.0, "minLabels": 5},
            window(4, None, 0.99, mae=9.0),
            None,
            None,
            dq.TOO_FEW_LABELS,
            None,
        ),
        (
            {"metric": "f1", "minimum": 0.5, "minLabels": 5},
            window(9, 0.9, 0.9, f1=0.4),
            None,
            True,
            dq.QUALITY_DROPPED,
            0.4,
        ),
    ],
)
def test_quality_verdict(
    performance: dict[str, object],
    figures: perf.WindowQuality,
    baseline: float | None,
    degraded: bool | None,
    reason: str,
    judged: float | None,
) -> None:
    verdict = dq.judge_quality(spec(**performance), figures, baseline)
    assert (verdict.degraded, verdict.reason, verdict.status.judged) == (degraded, reason, judged)
    assert verdict.status.degraded is degraded
    assert verdict.message


def test_no_window_is_no_verdict() -> None:
    verdict = dq.judge_quality(spec(minimum=0.5), None, None)
    assert (verdict.degraded, verdict.reason) == (None, dq.NO_ESTIMATE)


class Loop:
    """judge() over cumulative scrapes of inputs and labels, as the reconcile calls it."""

    def __init__(self, **performance: object) -> None:
        rng = np.random.default_rng(0)
        self.profile = build_profile({"a": rng.normal(size=5000), "b": rng.normal(size=5000)})
        body: dict[str, object] = {
            "modelDeployment": "m",
            "source": {"url": "http://m/metrics"},
            "minSamples": 100,
            "onDrift": {"retrain": {"cooldown": "1h", "template": {"image": "t:1"}}},
        }
        if performance:
            body["performance"] = performance
        self.spec = DriftMonitorSpec.model_validate(body)
        self.status = DriftMonitorStatus()
        self.inputs = np.zeros((2, self.profile.max_bins))
        self.confusion: dict[tuple[str, ...], float] = {}
        self.events: list[tuple[str, str, str]] = []
        self.seed = 0

    def check(self, n: int = 0, shift: float = 0.0, right: int = 0, wrong: int = 0) -> bool:
        self.seed += 1
        rng = np.random.default_rng(self.seed)
        if n:
            rows = {"a": rng.normal(size=n) + shift, "b": rng.normal(size=n)}
            self.inputs = self.inputs + counts_for(self.profile, rows)
        for key, k in ((("x", "x"), right), (("x", "y"), wrong)):
            self.confusion[key] = self.confusion.get(key, 0.0) + k
        quality = perf.QualityCounts({"v1": {perf.CONFUSION: dict(self.confusion)}})
        scrape = Scrape(self.inputs.copy(), cumulative=True, quality=quality)
        verdict = judge(self.spec, self.status, self.profile, scrape, NOW, self.events)
        self.status.conditions = [
            Condition(type=cd.type, status=cd.status_str, reason=cd.reason, message=cd.message)
            for cd in verdict.conds
        ]
        return verdict.wants_retrain

    def condition(self, kind: str) -> Condition:
        return next(cd for cd in self.status.conditions if cd.type == kind)


def test_concept_drift_acts_and_a_harmless_input_shift_is_only_reported() -> None:
    loop = Loop(source="labels", minimum=0.8, minLabels=50)
    assert not loop.check()  # the baseline
    # Inputs as the reference, labels that agree: healthy, nothing acts.
    assert not loop.check(n=2000, right=95, wrong=5)
    assert loop.condition(dq.PERFORMANCE_DEGRADED).status == "False"
    assert loop.status.performance is not None and loop.status.performance.realised == 0.95
    # A big input shift with quality held: InputDrift reported, no retrain.
    assert not loop.check(n=2000, shift=2.0, right=96, wrong=4)
    assert loop.condition(dq.INPUT_DRIFT).status == "True"
    assert loop.condition(dq.PERFORMANCE_DEGRADED).reason == dq.QUALITY_HELD
    assert "reported only" in (loop.status.message or "")
    # Concept drift: the inputs as the reference, labels disagree. It acts.
    assert loop.check(n=2000, right=30, wrong=70)
    degraded = loop.condition(dq.PERFORMANCE_DEGRADED)
    assert (degraded.status, degraded.reason) == ("True", dq.QUALITY_DROPPED)
    assert "realised accuracy over 100 labels 0.3000 is below 0.8000" in degraded.message
    assert loop.condition(dq.INPUT_DRIFT).status == "False"
    reasons = [reason for _, reason, _ in loop.events]
    assert reasons.count(dq.QUALITY_DROPPED) == 1 and reasons.count(dq.QUALITY_HELD) == 1


def test_too_few_labels_is_no_verdict_and_acts_on_nothing() -> None:
    loop = Loop(source="labels", minimum=0.8, minLabels=50)
    loop.check()
    assert not loop.check(n=2000, shift=2.0, right=0, wrong=10)
    assert loop.condition(dq.PERFORMANCE_DEGRADED).status == "Unknown"
    assert loop.condition(dq.PERFORMANCE_DEGRADED).reason == dq.TOO_FEW_LABELS


def test_without_performance_input_drift_acts_as_before() -> None:
    loop = Loop()
    loop.check()
    assert loop.check(n=2000, shift=2.0, right=0, wrong=100)
    assert all(cd.type not in dq.QUALITY_CONDITIONS for cd in loop.status.conditions)
    assert loop.status.performance is None


def test_the_version_judged_is_the_watched_models_own() -> None:
    # During a rollout the old model's pods (version "old") answer more than the new
    # one's; the pods of the watched model answered with "new" only.
    new_pod = perf.QualityCounts(
        {
            "new": {perf.PREDICTED_CLASS: {("x",): 10.0}, perf.CONFUSION: {("x", "x"): 5.0}},
            "old": {perf.CONFUSION: {("x", "y"): 3.0}},  # labels for old answers
        }
    )
    old_pod = perf.QualityCounts({"old": {perf.PREDICTED_CLASS: {("x",): 90.0}}})
    assert perf.served_versions(new_pod) == {"new"}
    assert perf.served_versions(perf.QualityCounts({"v": {perf.CONFUSION: {}}})) == set()
    both = perf.add([new_pod, old_pod])
    assert dq.busiest_version(both) == "old"
    assert dq.busiest_version(both, frozenset({"new"})) == "new"
    # Nothing known of the watched model's versions: the busiest, as before.
    assert dq.busiest_version(both, frozenset({"gone"})) == "old"


def test_a_window_is_judged_on_the_version_its_pods_served() -> None:
    loop = Loop(source="labels", minimum=0.8, minLabels=50)
    profile = loop.profile
    rng = np.random.default_rng(1)
    inputs = counts_for(profile, {"a": rng.normal(size=2000), "b": rng.normal(size=2000)})

    def quality(scale: float) -> perf.QualityCounts:
        return perf.QualityCounts(
            {
                "new": {perf.CONFUSION: {("x", "x"): 60 * scale, ("x", "y"): 40 * scale}},
                "old": {perf.CONFUSION: {("x", "x"): 900 * scale}},
            }
        )

    scrapes = [
        Scrape(inputs * k, cumulative=True, quality=quality(k), versions=frozenset({"new"}))
        for k in (0, 1)
    ]
    assert not judge(loop.spec, loop.status, profile, scrapes[0], NOW, loop.events).wants_retrain
    assert judge(loop.spec, loop.status, profile, scrapes[1], NOW, loop.events).wants_retrain
    assert loop.status.performance is not None
    assert (loop.status.performance.version, loop.status.performance.realised) == ("new", 0.6)
