"""A canary's judgement as its status records it: the verdict, the window and each
track's figures, rounded for reading."""

from __future__ import annotations

import datetime as dt

from kubeloop.api.modeldeployment import CanaryJudgement, TrackFigures
from kubeloop.canary.figures import Figures
from kubeloop.canary.measure import Measured
from kubeloop.controllers.common import rfc3339


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _track(figures: Figures | None) -> TrackFigures | None:
    if figures is None:
        return None
    percent = figures.error_percent
    return TrackFigures(
        requests=int(figures.requests),
        error_percent=None if percent is None else round(percent, 3),
        latency_p99_ms=_ms(figures.p99_seconds),
        pods=figures.pods,
    )


def judgement(measured: Measured, now: dt.datetime) -> CanaryJudgement:
    return CanaryJudgement(
        time=rfc3339(now),
        decision=measured.verdict.decision,
        window_seconds=round(measured.window_seconds, 1),
        canary=_track(measured.canary),
        stable=_track(measured.stable),
        prediction_divergence=(
            None if measured.divergence is None else round(measured.divergence, 4)
        ),
        message=measured.verdict.message,
    )
