"""The verdict on one canary window: pass, hold (measure longer) or fail.

Pure. The rules, in order; the first that applies decides:

1. No canary figures (its metrics could not be read): hold, ``NoMetrics``.
2. Fewer than ``minRequests`` canary requests: hold, ``TooFewRequests``.
3. Server error rate above ``maxErrorPercent``: fail, ``ErrorRate``.
4. With ``maxLatencyP99Ms``: no canary histogram holds (``NoMetrics``); a p99 above the
   bound fails (``Latency``).
5. With ``maxLatencyP99Ratio``: no canary histogram holds (``NoMetrics``), no stable
   requests or histogram holds (``NoStableFigures``); a canary p99 above the ratio times
   the stable's fails (``RelativeLatency``).
6. With ``maxPredictionDivergence``: no canary prediction counts holds (``NoMetrics``),
   none from the stable holds (``NoStableFigures``); a Jensen-Shannon distance above the
   bound fails (``PredictionDivergence``).
7. Otherwise: pass, ``Passed``.

A figure equal to its bound passes; comparisons forgive floating-point noise (a
relative 1e-9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kubeloop.api.modeldeployment import CanaryAnalysis
from kubeloop.canary.figures import Figures, divergence

PASS, HOLD, FAIL = "Pass", "Hold", "Fail"
REL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Verdict:
    """The decision on one window; ``reason`` is one CamelCase word for a condition."""

    decision: str
    reason: str
    message: str


def judge(analysis: CanaryAnalysis, canary: Figures | None, stable: Figures | None) -> Verdict:
    """Judge the canary's figures (and the stable's, for relative checks); see the rules."""
    if canary is None:
        return Verdict(HOLD, "NoMetrics", "the canary's metrics could not be read")
    if canary.requests < analysis.min_requests:
        return Verdict(
            HOLD,
            "TooFewRequests",
            f"{_number(canary.requests)} of {analysis.min_requests} requests in the window",
        )
    return (
        _error_rate(analysis, canary)
        or _latency(analysis, canary)
        or _relative_latency(analysis, canary, stable)
        or _prediction_divergence(analysis, canary, stable)
        or Verdict(PASS, "Passed", _summary(canary, stable))
    )


def _error_rate(analysis: CanaryAnalysis, canary: Figures) -> Verdict | None:
    bound = analysis.max_error_percent
    percent = canary.error_percent
    if bound is None or percent is None or not _exceeds(percent, bound):
        return None
    return Verdict(
        FAIL,
        "ErrorRate",
        f"error rate {_number(percent)}% > {_number(bound)}% over {_requests(canary)}",
    )


def _latency(analysis: CanaryAnalysis, canary: Figures) -> Verdict | None:
    bound = analysis.max_latency_p99_ms
    if bound is None:
        return None
    if canary.p99_seconds is None:
        return Verdict(HOLD, "NoMetrics", "no latency histogram from the canary")
    p99 = _ms(canary.p99_seconds)
    if not _exceeds(p99, bound):
        return None
    return Verdict(
        FAIL,
        "Latency",
        f"p99 latency {_number(p99)} ms > {_number(bound)} ms over {_requests(canary)}",
    )


def _relative_latency(
    analysis: CanaryAnalysis, canary: Figures, stable: Figures | None
) -> Verdict | None:
    ratio = analysis.max_latency_p99_ratio
    if ratio is None:
        return None
    if canary.p99_seconds is None:
        return Verdict(HOLD, "NoMetrics", "no latency histogram from the canary")
    if stable is None or stable.requests == 0 or stable.p99_seconds is None:
        return Verdict(
            HOLD, "NoStableFigures", "no latency figures from the stable over the window"
        )
    if not _exceeds(canary.p99_seconds, ratio * stable.p99_seconds):
        return None
    return Verdict(
        FAIL,
        "RelativeLatency",
        f"p99 latency {_number(_ms(canary.p99_seconds))} ms > {_number(ratio)} x the "
        f"stable's {_number(_ms(stable.p99_seconds))} ms",
    )


def _prediction_divergence(
    analysis: CanaryAnalysis, canary: Figures, stable: Figures | None
) -> Verdict | None:
    bound = analysis.max_prediction_divergence
    if bound is None:
        return None
    if not _counts_any(canary):
        return Verdict(HOLD, "NoMetrics", "no prediction counts from the canary")
    if stable is None or not _counts_any(stable):
        return Verdict(
            HOLD, "NoStableFigures", "no prediction counts from the stable over the window"
        )
    distance = divergence(canary.predictions, stable.predictions)
    if distance is None or not _exceeds(distance, bound):
        return None
    return Verdict(
        FAIL,
        "PredictionDivergence",
        f"prediction divergence {_number(distance)} > {_number(bound)} (Jensen-Shannon) "
        f"over {_requests(canary)}",
    )


def _summary(canary: Figures, stable: Figures | None) -> str:
    parts = [f"error rate {_number(canary.error_percent or 0.0)}% over {_requests(canary)}"]
    if canary.p99_seconds is not None:
        latency = f"p99 {_number(_ms(canary.p99_seconds))} ms"
        if stable is not None and stable.p99_seconds is not None:
            latency += f" (stable {_number(_ms(stable.p99_seconds))} ms)"
        parts.append(latency)
    if stable is not None:
        distance = divergence(canary.predictions, stable.predictions)
        if distance is not None:
            parts.append(f"prediction divergence {_number(distance)}")
    return ", ".join(parts)


def _counts_any(figures: Figures) -> bool:
    return sum(figures.predictions.values()) > 0


def _exceeds(value: float, bound: float) -> bool:
    return value > bound and not math.isclose(value, bound, rel_tol=REL_TOLERANCE)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _requests(figures: Figures) -> str:
    return f"{_number(figures.requests)} requests"


def _number(x: float) -> str:
    """Compact: 1 not 1.0, three decimals (three significant digits below 1)."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return f"{x:g}"
    decimals = min(12, max(3, 2 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}".rstrip("0").rstrip(".")
