"""The canary verdict: a decision table over the rules, then the messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kubeloop.api.modeldeployment import CanaryAnalysis
from kubeloop.canary.figures import Figures
from kubeloop.canary.judge import FAIL, HOLD, PASS, Verdict, judge


def figures(
    requests: float = 400,
    errors: float = 0,
    p99_ms: float | None = 12.0,
    predictions: Mapping[str, float] | None = None,
) -> Figures:
    return Figures(
        requests=requests,
        errors=errors,
        p99_seconds=None if p99_ms is None else p99_ms / 1000,
        predictions=predictions or {},
        pods=2,
    )


def analysis(**fields: Any) -> CanaryAnalysis:
    """minRequests 50 and maxErrorPercent 1 (the defaults), nothing else checked."""
    return CanaryAnalysis.model_validate(fields)


STABLE = figures(p99_ms=20.0, predictions={"cat": 60, "dog": 40})
LATENCY = {"maxLatencyP99Ms": 100}
RATIO = {"maxLatencyP99Ratio": 1.5}
DIVERGENCE = {"maxPredictionDivergence": 0.2}
CATS = {"cat": 60, "dog": 40}

TABLE: list[tuple[str, dict[str, Any], Figures | None, Figures | None, str, str]] = [
    # 1. no canary metrics
    ("unreadable canary", {}, None, STABLE, HOLD, "NoMetrics"),
    ("unreadable canary and stable", {}, None, None, HOLD, "NoMetrics"),
    # 2. too few requests
    ("one request short", {}, figures(requests=49), STABLE, HOLD, "TooFewRequests"),
    ("no requests", {}, figures(requests=0, p99_ms=None), None, HOLD, "TooFewRequests"),
    ("too few beats errors", {}, figures(requests=40, errors=40), None, HOLD, "TooFewRequests"),
    ("exactly min requests", {}, figures(requests=50), None, PASS, "Passed"),
    ("min requests raised", {"minRequests": 500}, figures(), None, HOLD, "TooFewRequests"),
    # 3. error rate
    ("errors above 1%", {}, figures(errors=5), None, FAIL, "ErrorRate"),
    ("errors at 1%", {}, figures(errors=4), None, PASS, "Passed"),
    ("errors not checked", {"maxErrorPercent": None}, figures(errors=200), None, PASS, "Passed"),
    ("errors bound 50%", {"maxErrorPercent": 50}, figures(errors=200), None, PASS, "Passed"),
    ("errors beat latency", LATENCY, figures(errors=5, p99_ms=230), None, FAIL, "ErrorRate"),
    # 4. absolute latency
    ("p99 above bound", LATENCY, figures(p99_ms=230), None, FAIL, "Latency"),
    ("p99 at bound", LATENCY, figures(p99_ms=100), None, PASS, "Passed"),
    ("p99 just above", LATENCY, figures(p99_ms=100.001), None, FAIL, "Latency"),
    ("no canary histogram", LATENCY, figures(p99_ms=None), STABLE, HOLD, "NoMetrics"),
    ("latency not checked", {}, figures(p99_ms=5000), None, PASS, "Passed"),
    ("no histogram unchecked", {}, figures(p99_ms=None), None, PASS, "Passed"),
    ("latency beats ratio", {**LATENCY, **RATIO}, figures(p99_ms=230), None, FAIL, "Latency"),
    # 5. latency relative to the stable
    ("p99 above ratio", RATIO, figures(p99_ms=31), STABLE, FAIL, "RelativeLatency"),
    ("p99 at ratio", RATIO, figures(p99_ms=30), STABLE, PASS, "Passed"),
    ("ratio, no stable", RATIO, figures(), None, HOLD, "NoStableFigures"),
    (
        "ratio, idle stable",
        RATIO,
        figures(),
        figures(requests=0, p99_ms=None),
        HOLD,
        "NoStableFigures",
    ),
    (
        "ratio, stable without requests",
        RATIO,
        figures(),
        figures(requests=0, p99_ms=20),
        HOLD,
        "NoStableFigures",
    ),
    ("ratio, stable has no p99", RATIO, figures(), figures(p99_ms=None), HOLD, "NoStableFigures"),
    ("ratio, canary has no p99", RATIO, figures(p99_ms=None), STABLE, HOLD, "NoMetrics"),
    (
        "ratio hold beats divergence",
        {**RATIO, **DIVERGENCE},
        figures(predictions={"eel": 1}),
        None,
        HOLD,
        "NoStableFigures",
    ),
    # 6. prediction divergence
    (
        "disjoint predictions",
        DIVERGENCE,
        figures(predictions={"eel": 400}),
        STABLE,
        FAIL,
        "PredictionDivergence",
    ),
    (
        "same proportions",
        DIVERGENCE,
        figures(predictions={"cat": 240, "dog": 160}),
        STABLE,
        PASS,
        "Passed",
    ),
    (
        "divergence at bound 1",
        {"maxPredictionDivergence": 1},
        figures(predictions={"eel": 400}),
        STABLE,
        PASS,
        "Passed",
    ),
    (
        "divergence just above",
        {"maxPredictionDivergence": 0.99},
        figures(predictions={"eel": 400}),
        STABLE,
        FAIL,
        "PredictionDivergence",
    ),
    ("divergence, no stable", DIVERGENCE, figures(predictions=CATS), None, HOLD, "NoStableFigures"),
    (
        "divergence, stable predicts nothing",
        DIVERGENCE,
        figures(predictions=CATS),
        figures(predictions={"cat": 0}),
        HOLD,
        "NoStableFigures",
    ),
    ("divergence, canary predicts nothing", DIVERGENCE, figures(), STABLE, HOLD, "NoMetrics"),
    ("divergence not checked", {}, figures(predictions={"eel": 400}), STABLE, PASS, "Passed"),
    # 7. everything checked and within bounds
    (
        "all within bounds",
        {"maxErrorPercent": 1, **LATENCY, **RATIO, **DIVERGENCE},
        figures(errors=4, p99_ms=30, predictions={"cat": 250, "dog": 150}),
        STABLE,
        PASS,
        "Passed",
    ),
]


@pytest.mark.parametrize(
    ("fields", "canary", "stable", "decision", "reason"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decision_table(
    fields: dict[str, Any],
    canary: Figures | None,
    stable: Figures | None,
    decision: str,
    reason: str,
) -> None:
    verdict = judge(analysis(**fields), canary, stable)
    assert (verdict.decision, verdict.reason) == (decision, reason), verdict.message
    assert verdict.message


def test_the_error_rate_message() -> None:
    verdict = judge(analysis(), figures(errors=50), None)
    assert verdict == Verdict(FAIL, "ErrorRate", "error rate 12.5% > 1% over 400 requests")


def test_the_error_rate_message_rounds_to_three_decimals() -> None:
    verdict = judge(analysis(maxErrorPercent=0.25), figures(requests=300, errors=1), None)
    assert verdict.message == "error rate 0.333% > 0.25% over 300 requests"


def test_the_too_few_requests_message() -> None:
    verdict = judge(analysis(), figures(requests=37), None)
    assert verdict.message == "37 of 50 requests in the window"


def test_the_latency_messages() -> None:
    absolute = judge(analysis(**LATENCY), figures(p99_ms=230), None)
    assert absolute.message == "p99 latency 230 ms > 100 ms over 400 requests"
    relative = judge(analysis(**RATIO), figures(p99_ms=230), STABLE)
    assert relative.message == "p99 latency 230 ms > 1.5 x the stable's 20 ms"


def test_the_divergence_message() -> None:
    verdict = judge(analysis(**DIVERGENCE), figures(predictions={"eel": 400}), STABLE)
    assert verdict.message == "prediction divergence 1 > 0.2 (Jensen-Shannon) over 400 requests"


def test_the_pass_message_says_what_was_measured() -> None:
    assert judge(analysis(), figures(), figures(p99_ms=11)).message == (
        "error rate 0% over 400 requests, p99 12 ms (stable 11 ms)"
    )
    assert judge(analysis(), figures(p99_ms=None), None).message == (
        "error rate 0% over 400 requests"
    )
    assert judge(analysis(), figures(predictions=CATS), STABLE).message == (
        "error rate 0% over 400 requests, p99 12 ms (stable 20 ms), prediction divergence 0"
    )
