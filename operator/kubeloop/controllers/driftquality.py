"""What a DriftMonitor with `spec.performance` judges, pure: the quality figure of a
window (realised from labels, or estimated from calibrated confidence), its verdict
against the threshold, and the rule of what acts (:func:`acts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubeloop.api.driftmonitor import Performance, PerformanceStatus
from kubeloop.drift import performance as perf

PERFORMANCE_DEGRADED = "PerformanceDegraded"
PREDICTION_DRIFT = "PredictionDrift"
INPUT_DRIFT = "InputDrift"
QUALITY_DROPPED = "QualityDropped"
QUALITY_HELD = "QualityHeld"
TOO_FEW_LABELS = "TooFewLabels"
NO_ESTIMATE = "NoEstimate"
BASELINE_MISSING = "BaselineMissing"
QUALITY_CONDITIONS = frozenset({PERFORMANCE_DEGRADED, PREDICTION_DRIFT, INPUT_DRIFT})
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


@dataclass(frozen=True)
class QualityVerdict:
    status: PerformanceStatus
    degraded: bool | None  # None: not judged (the reason says why)
    reason: str
    message: str


def acts(performance_configured: bool, input_drifted: bool, degraded: bool | None) -> bool:
    """The rule of what acts: with performance configured a quality drop only (input
    drift is reported, never acted on); without it, input drift as before."""
    if performance_configured:
        return degraded is True
    return input_drifted


def judge_quality(
    spec: Performance, window: perf.WindowQuality | None, baseline: float | None
) -> QualityVerdict:
    """The window's figure (realised with enough labels, else estimated where the source
    allows) against the threshold (minimum, maximum or maxDrop from ``baseline``)."""
    metric = spec.metric
    realised = getattr(window, metric) if window is not None else None
    labels = window.labels if window is not None else 0
    estimated = window.estimated_accuracy if window is not None else None
    status = PerformanceStatus(
        metric=metric,
        version=window.version if window is not None else None,
        realised=None if realised is None else round(realised, 6),
        labels=labels,
        estimated=None if estimated is None else round(estimated, 6),
        baseline=baseline,
    )
    enough = realised is not None and labels >= spec.min_labels
    figure: float | None
    if spec.source == "labels" or (spec.source == "both" and (enough or metric != "accuracy")):
        if not enough:
            why = f"{labels} labels in the window, need {spec.min_labels} for realised {metric}"
            return QualityVerdict(status, None, TOO_FEW_LABELS, why)
        figure, what = realised, f"realised {metric} over {labels} labels"
    else:
        if estimated is None:
            why = (
                f"no estimated accuracy in the window ({labels} labels, need "
                f"{spec.min_labels}): the profile has no calibration or nothing was served"
            )
            return QualityVerdict(status, None, NO_ESTIMATE, why)
        figure, what = estimated, f"estimated accuracy ({labels} labels, need {spec.min_labels})"
    assert figure is not None
    status.judged = round(figure, 6)
    lower = metric in LOWER_IS_BETTER
    if spec.max_drop is not None:
        if baseline is None:
            why = f"{what} {figure:.4f}: maxDrop needs a baseline and the reference has none"
            return QualityVerdict(status, None, BASELINE_MISSING, why)
        bar = baseline + spec.max_drop if lower else baseline - spec.max_drop
        rule = f"baseline {baseline:.4f} {'+' if lower else '-'} maxDrop {spec.max_drop}"
    elif spec.minimum is not None:
        bar, rule = spec.minimum, f"minimum {spec.minimum}"
    else:
        assert spec.maximum is not None
        bar, rule = spec.maximum, f"maximum {spec.maximum}"
    degraded = figure > bar if lower else figure < bar
    status.degraded = degraded
    word = "above" if lower else "below"
    if degraded:
        return QualityVerdict(
            status, True, QUALITY_DROPPED, f"{what} {figure:.4f} is {word} {bar:.4f} ({rule})"
        )
    return QualityVerdict(
        status, False, QUALITY_HELD, f"{what} {figure:.4f} is not {word} {bar:.4f} ({rule})"
    )


def busiest_version(
    window: perf.QualityCounts, served: frozenset[str] = frozenset()
) -> str | None:
    """The version the loop is about: of those the watched model's pods answered with
    (``served``; during a rollout the old model's pods answer too, with another), the
    one that served most in the window; any version's when none is known."""

    def volume(version: str) -> float:
        return sum(sum(t.values()) for t in window.series.get(version, {}).values())

    candidates = [v for v in window.versions if v in served] or window.versions
    return max(candidates, key=volume, default=None)


def encode(counts: perf.QualityCounts) -> dict[str, dict[str, dict[str, float]]]:
    """Counters as JSON for the status (keys of series as JSON lists)."""
    return {
        v: {n: {json.dumps(list(k)): x for k, x in t.items()} for n, t in fams.items()}
        for v, fams in counts.series.items()
    }


def decode(data: dict[str, dict[str, dict[str, float]]]) -> perf.QualityCounts:
    return perf.QualityCounts(
        {
            v: {n: {tuple(json.loads(k)): x for k, x in t.items()} for n, t in fams.items()}
            for v, fams in data.items()
        }
    )
