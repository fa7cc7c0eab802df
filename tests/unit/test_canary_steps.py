"""The canary's state machine (controllers/canary.py): steps, holds, rollbacks, pause,
abort and promotion, from the previous status, the Deployments and a judgement."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop.api.modeldeployment import Canary, CanaryStatus, ModelDeploymentStatus, Promotion
from kubeloop.canary.figures import Figures
from kubeloop.canary.judge import FAIL, HOLD, PASS, Verdict
from kubeloop.canary.measure import Measured
from kubeloop.controllers import canary as cn

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
V1, V2 = "s3://m/v1", "s3://m/v2"
STEPS = [25, 50, 100]


def dep(uri: str, replicas: int, available: int | None = None) -> dict[str, Any]:
    ready = replicas if available is None else available
    return {
        "metadata": {"generation": 1, "annotations": {"kubeloop.io/model-uri": uri}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "updatedReplicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "replicas": replicas,
        },
    }


def spec(**extra: Any) -> Canary:
    return Canary.model_validate({"model": {"uri": V2}, "steps": STEPS, **extra})


def figures(requests: int) -> Figures:
    return Figures(requests=requests, errors=0, p99_seconds=0.01, predictions={}, pods=1)


def measured(decision: str, step: int | None = 1, uri: str = V2) -> Measured:
    verdict = Verdict(decision, "X", f"{decision.lower()} figures")
    return Measured(uri, step, verdict, figures(100), figures(300), 2.0, None)


def decide(
    prev: CanaryStatus | None = None,
    canary: Canary | None = None,
    canary_dep: dict[str, Any] | None = None,
    stable_dep: dict[str, Any] | None = None,
    judged: Measured | None = None,
    promotion: Promotion | None = None,
    stable_uri: str = V1,
) -> cn.Decision:
    return cn.decide(
        cn.Inputs(
            canary=canary or spec(),
            uri=V2,
            prev=prev or CanaryStatus(),
            stable_uri=promotion.uri if promotion else stable_uri,
            model_uri=V1,
            promotion=promotion,
            world=cn.World(stable_dep or dep(V1, 3), canary_dep, None),
            measured=judged,
            due_in=None,
            replicas_for=lambda share: 1 if share < 50 else 2,
            now=NOW,
        )
    )


def at(state: str, step: int, **extra: Any) -> CanaryStatus:
    return CanaryStatus(
        model_uri=V2,
        state=state,
        step=step,
        step_start_time="2026-12-01T11:59:00Z",
        start_time="2026-12-01T11:59:00Z",
        **extra,
    )


def test_a_new_canary_starts_at_step_one_and_waits_for_its_pods() -> None:
    out = decide()
    assert out.status and (out.status.state, out.status.step, out.share) == ("Progressing", 1, 25)
    assert [e[1] for e in out.events] == ["CanaryStarted"]
    assert out.under_way and out.cond and out.cond.reason == "CanaryProgressing"


def test_available_pods_open_a_window() -> None:
    out = decide(at("Progressing", 1), canary_dep=dep(V2, 1))
    assert out.status and out.status.state == "Analyzing" and out.share == 25
    assert out.requeue_after == 0.5  # the baseline is read at once


def test_no_judgement_yet_keeps_the_state() -> None:
    out = decide(at("Analyzing", 1), canary_dep=dep(V2, 1))
    assert out.status and out.status.state == "Analyzing" and out.events == []


def test_a_passed_step_moves_to_the_next() -> None:
    out = decide(at("Analyzing", 1), canary_dep=dep(V2, 1), judged=measured(PASS))
    assert out.status and (out.status.state, out.status.step, out.share) == ("Progressing", 2, 50)
    assert out.status.step_start_time == "2026-12-01T12:00:00Z"
    assert out.status.analysis and out.status.analysis.decision == "Pass"
    assert [e[1] for e in out.events] == ["CanaryStepPassed"]


def test_a_judgement_of_another_step_is_ignored() -> None:
    out = decide(at("Analyzing", 2), canary_dep=dep(V2, 2), judged=measured(PASS, step=1))
    assert out.status and (out.status.state, out.status.step) == ("Analyzing", 2)


def test_too_few_requests_hold_the_step() -> None:
    out = decide(at("Analyzing", 1), canary_dep=dep(V2, 1), judged=measured(HOLD))
    assert out.status and (out.status.state, out.status.step, out.share) == ("Holding", 1, 25)
    assert [e[1] for e in out.events] == ["CanaryHolding"]
    again = decide(at("Holding", 1), canary_dep=dep(V2, 1), judged=measured(HOLD))
    assert again.events == []  # one Event on entering the hold, not one per interval


def test_a_failed_step_rolls_back_with_its_numbers() -> None:
    out = decide(at("Analyzing", 2), canary_dep=dep(V2, 2), judged=measured(FAIL, step=2))
    assert out.status and out.status.state == "RolledBack" and out.share is None
    assert "failed step 2 of 3 (50% of traffic): fail figures" in (out.status.message or "")
    assert out.cond and out.cond.reason == "CanaryRolledBack" and out.cond.status is False
    assert [e[:2] for e in out.events] == [("Warning", "CanaryRolledBack")]
    kept = decide(out.status, canary_dep=dep(V2, 0))
    assert kept.status and kept.status.state == "RolledBack" and kept.share is None


def test_passing_the_step_before_100_promotes() -> None:
    out = decide(at("Analyzing", 2), canary_dep=dep(V2, 2), judged=measured(PASS, step=2))
    assert out.promotion == Promotion(uri=V2, replaces=V1, time="2026-12-01T12:00:00Z")
    assert out.status and out.status.state == "Promoting" and out.share == 50
    # Once the stable serves the canary's model: Promoted, the canary at zero.
    done = decide(out.status, canary_dep=dep(V2, 2), stable_dep=dep(V2, 3), promotion=out.promotion)
    assert done.status and done.status.state == "Promoted" and done.share is None
    assert [e[1] for e in done.events] == ["CanaryPromoted"] and done.promotion == out.promotion


def test_the_stable_still_rolling_keeps_promoting() -> None:
    promotion = Promotion(uri=V2, replaces=V1)
    out = decide(
        at("Promoting", 3),
        canary_dep=dep(V2, 2),
        stable_dep=dep(V2, 3, available=1),
        promotion=promotion,
    )
    assert out.status and out.status.state == "Promoting" and out.under_way


def test_paused_holds_and_resumes_with_a_fresh_window() -> None:
    paused = decide(
        at("Analyzing", 1), spec(paused=True), canary_dep=dep(V2, 1), judged=measured(PASS)
    )
    assert paused.status and (paused.status.state, paused.status.step) == ("Paused", 1)
    assert not cn.judging(spec(paused=True), at("Analyzing", 1))
    resumed = decide(paused.status, canary_dep=dep(V2, 1))
    assert resumed.status and resumed.status.state == "Analyzing"
    assert [e[1] for e in resumed.events] == ["CanaryResumed"]


def test_abort_rolls_back_and_undoes_a_promotion_under_way() -> None:
    out = decide(at("Analyzing", 2), spec(abort=True), canary_dep=dep(V2, 2))
    assert out.status and out.status.state == "Aborted" and out.share is None
    promoting = decide(
        at("Promoting", 3),
        spec(abort=True),
        canary_dep=dep(V2, 2),
        stable_dep=dep(V2, 3, available=1),
        promotion=Promotion(uri=V2, replaces=V1),
    )
    assert promoting.status and promoting.status.state == "Aborted"
    assert promoting.promotion is None
    assert V1 in (promoting.status.message or "")
    # Cleared: the same model starts over.
    again = decide(out.status)
    assert again.status and (again.status.state, again.status.step) == ("Progressing", 1)


def test_a_new_canary_model_restarts_the_analysis() -> None:
    prev = CanaryStatus(model_uri="s3://m/old", state="RolledBack", step=2)
    out = decide(prev)
    assert out.status and (out.status.state, out.status.step) == ("Progressing", 1)


def test_missed_deadline_rolls_back() -> None:
    prev = at("Progressing", 2)
    prev.step_start_time = "2026-12-01T11:00:00Z"
    out = decide(prev, canary_dep=dep(V2, 2, available=1))
    assert out.status and out.status.state == "RolledBack"
    assert "not available within 600s" in (out.status.message or "")


def test_fixed_share_with_analysis_rolls_back_on_failure_but_never_promotes() -> None:
    fixed = Canary.model_validate(
        {"model": {"uri": V2}, "trafficPercent": 25, "analysis": {"interval": "1s"}}
    )
    prev = CanaryStatus(model_uri=V2, state="Available", start_time="2026-12-01T11:59:00Z")
    passed = decide(prev, fixed, canary_dep=dep(V2, 1), judged=measured(PASS, step=None))
    assert passed.status and passed.status.state == "Available" and passed.promotion is None
    failed = decide(prev, fixed, canary_dep=dep(V2, 1), judged=measured(FAIL, step=None))
    assert failed.status and failed.status.state == "RolledBack"


def test_promotion_stands_until_spec_model_changes() -> None:
    prev = ModelDeploymentStatus(promotion=Promotion(uri=V2, replaces=V1))
    assert cn.current_promotion(prev, V1) == prev.promotion
    assert cn.current_promotion(prev, "s3://m/v9") is None  # the user's new model wins
    assert cn.current_promotion(prev, V2) is None  # declared now: nothing to stand in for


def test_shortened_steps_go_on_from_the_share_they_had_never_straight_to_100() -> None:
    prev = at("Analyzing", 3, traffic_percent=50)
    out = decide(prev, spec(steps=[20, 100]), canary_dep=dep(V2, 2))
    assert out.status and (out.status.step, out.status.state) == (1, "Analyzing"), out.status
    assert out.promotion is None and out.status.step_start_time == "2026-12-01T12:00:00Z"


def test_a_promotion_that_no_longer_stands_starts_the_analysis_again() -> None:
    # spec.model changed after v2 was promoted: current_promotion() ended it.
    prev = at("Promoted", 3, traffic_percent=0)
    out = decide(prev, canary_dep=dep(V2, 0), stable_uri="s3://m/v9")
    assert out.status and (out.status.state, out.status.step) == ("Progressing", 1)
    assert out.promotion is None


def test_pods_lost_after_the_step_was_available_hold_without_the_deadline() -> None:
    prev = at("Analyzing", 1, traffic_percent=25)
    prev.step_start_time = "2026-12-01T10:00:00Z"  # long past the deadline
    out = decide(prev, canary_dep=dep(V2, 1, available=0))
    assert out.status and out.status.state == "Analyzing" and out.share == 25
    assert out.cond and out.cond.reason == "CanaryProgressing"
    crashing = cn.decide(
        cn.Inputs(
            canary=spec(),
            uri=V2,
            prev=prev,
            stable_uri=V1,
            model_uri=V1,
            promotion=None,
            world=cn.World(dep(V1, 3), dep(V2, 1, available=0), "pod c: CrashLoopBackOff"),
            measured=None,
            due_in=None,
            replicas_for=lambda share: 1,
            now=NOW,
        )
    )
    assert crashing.status and crashing.status.state == "RolledBack"
    assert "CrashLoopBackOff" in (crashing.status.message or "")


def test_a_failed_verdict_rolls_back_even_while_pods_are_missing() -> None:
    out = decide(
        at("Analyzing", 1, traffic_percent=25),
        canary_dep=dep(V2, 1, available=0),
        judged=measured(FAIL),
    )
    assert out.status and out.status.state == "RolledBack"


def test_the_route_gets_no_weight_before_the_canary_pods_are_ready() -> None:
    first = decide()
    assert first.route_share is None
    passed = decide(
        at("Analyzing", 1, traffic_percent=25), canary_dep=dep(V2, 1), judged=measured(PASS)
    )
    assert (passed.share, passed.route_share) == (50, 25)


def test_promoted_keeps_the_canary_pods_until_the_stable_has_all_its_replicas() -> None:
    promotion = Promotion(uri=V2, replaces=V1)
    inputs: dict[str, Any] = dict(
        canary=spec(),
        uri=V2,
        prev=at("Promoting", 3, traffic_percent=50),
        stable_uri=V2,
        model_uri=V1,
        promotion=promotion,
        measured=None,
        due_in=None,
        replicas_for=lambda share: 2,
        now=NOW,
        stable_total=4,
    )
    scaling = cn.decide(cn.Inputs(world=cn.World(dep(V2, 2), dep(V2, 2), None), **inputs))
    assert scaling.status and scaling.status.state == "Promoted"
    assert scaling.share is None and scaling.keep_canary == 2
    full = cn.decide(cn.Inputs(world=cn.World(dep(V2, 4), dep(V2, 2), None), **inputs))
    assert full.keep_canary is None


def test_fixed_canary_cleared_abort_gets_a_new_deadline() -> None:
    fixed = Canary.model_validate({"model": {"uri": V2}, "trafficPercent": 25})
    prev = CanaryStatus(model_uri=V2, state="Aborted", start_time="2026-12-01T10:00:00Z")
    out = decide(prev, fixed, canary_dep=dep(V2, 0))
    assert out.status and out.status.state == "Progressing"
    assert out.status.start_time == "2026-12-01T12:00:00Z"
