"""The judgement of one drift check, pure: from the counts scraped and the previous
status, the new status, its conditions, the Events to send and whether to retrain. The
I/O around it (scraping, reference profiles, writing status) is in driftmonitor.py."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from kubeloop import conditions as c
from kubeloop.api.common import duration_seconds
from kubeloop.api.driftmonitor import (
    DriftMonitorSpec,
    DriftMonitorStatus,
    FeatureScore,
    Window,
)
from kubeloop.controllers import driftquality as dq
from kubeloop.controllers import retrain
from kubeloop.controllers.common import rfc3339
from kubeloop.drift import performance as perf
from kubeloop.drift import report, sources, stats
from kubeloop.drift.profile import Profile, bins_hash


@dataclass
class Scrape:
    """Cumulative (metrics) or windowed (prometheus) per-bin counts."""

    counts: np.ndarray
    cumulative: bool
    quality: perf.QualityCounts | None = None
    versions: frozenset[str] = frozenset()
    """The versions the watched model's pods answered with (empty: unknown)."""
    other_pods: int = 0
    """Pods of another model read for their quality counters only."""


def retrain_note(
    spec: DriftMonitorSpec, status: DriftMonitorStatus, now: dt.datetime
) -> str | None:
    """Why a drifted verdict starts no retrain now (cooldown, one running, evaluating,
    or none configured), as a message suffix; None when it may start one."""
    retraining = spec.on_drift.retrain
    cooldown = duration_seconds(retraining.cooldown) if retraining is not None else 0.0
    return retrain.retrain_blocked(spec, status, now, cooldown)


def reference_hash(profile: Profile) -> str:
    """Identifies the bins: a new model brings new edges, and a new window."""
    return bins_hash(profile)


def _as_counts(window: Window | None, profile: Profile) -> np.ndarray | None:
    if window is None or window.reference != reference_hash(profile):
        return None
    out = np.zeros((len(profile.features), profile.max_bins))
    for row, feature in enumerate(profile.features):
        values = window.counts.get(feature.name)
        if values is None or len(values) != feature.bins:
            return None
        out[row, : feature.bins] = values
    return out


def _window_from(
    counts: np.ndarray, profile: Profile, now: str, quality: perf.QualityCounts | None = None
) -> Window:
    return Window(
        quality=dq.encode(quality) if quality is not None else {},
        time=now,
        reference=reference_hash(profile),
        counts={
            f.name: [float(v) for v in counts[row, : f.bins]]
            for row, f in enumerate(profile.features)
        },
    )


def collecting(status: DriftMonitorStatus, spec: DriftMonitorSpec, why: str) -> list[c.Cond]:
    message = f"collecting: {why}, need {spec.min_samples}"
    status.phase = c.COLLECTING
    status.message = message
    return [
        c.Cond(c.READY, True, c.COLLECTING, message),
        c.Cond(c.SOURCE_READY, True, c.RECONCILED, why),
    ]


def reference_pending(status: DriftMonitorStatus, why: str) -> list[c.Cond]:
    """The reference is on its way (the model's pods are starting): a wait, not Stalled."""
    status.phase = c.PENDING
    status.message = why
    return [
        c.Cond(c.READY, False, c.REFERENCE_PENDING, why),
        c.Cond(c.SOURCE_READY, False, c.REFERENCE_PENDING, why),
        c.Cond(c.RECONCILING, True, c.REFERENCE_PENDING, why),
    ]


def broken(
    status: DriftMonitorStatus, reason: str, message: str, stalled: bool = False
) -> list[c.Cond]:
    status.phase = c.DEGRADED
    status.message = message
    conds = [
        c.Cond(c.READY, False, reason, message),
        c.Cond(c.SOURCE_READY, False, reason, message),
    ]
    if stalled:
        conds.append(c.Cond(c.STALLED, True, reason, message))
    return conds


def verdict_stands(
    status: DriftMonitorStatus, spec: DriftMonitorSpec, samples: int, now: dt.datetime
) -> list[c.Cond]:
    """The window after a verdict has too few samples so far: the last verdict stands
    (its phase, scores and sample count), and the message says how far the next window
    is, and what a retrain is doing. Going back to Collecting would flap the phase, and
    send an Event, at every interval of light traffic. A standing verdict starts no
    retrain: only a judged window does."""
    drifted = next((cd for cd in status.conditions if cd.type == c.DRIFTED), None)
    judged = drifted.message if drifted is not None else ""
    if status.drifted:
        judged += retrain_note(spec, status, now) or ""
    progress = f"next window: {samples} of {spec.min_samples} samples so far"
    status.phase = "Drifted" if status.drifted else "Healthy"
    status.message = f"{judged}; {progress}" if judged else progress
    reason = c.DRIFT_DETECTED if status.drifted else c.NO_DRIFT
    return [
        c.Cond(c.READY, True, c.RECONCILED, "checks running"),
        c.Cond(c.SOURCE_READY, True, c.RECONCILED, progress),
        c.Cond(c.DRIFTED, bool(status.drifted), reason, drifted.message if drifted else ""),
        *(  # the quality verdict stands with it
            c.Cond(
                cd.type,
                None if cd.status == "Unknown" else cd.status == "True",
                cd.reason,
                cd.message,
            )
            for cd in status.conditions
            if cd.type in dq.QUALITY_CONDITIONS and spec.performance is not None
        ),
    ]


def _forget_verdict(status: DriftMonitorStatus) -> None:
    status.drifted, status.score, status.features, status.correction = None, None, [], None


@dataclass
class Verdict:
    """The outcome of one check: conditions, per-feature gauges, and whether to retrain."""

    conds: list[c.Cond]
    scores: list[tuple[str, str, float]] = field(default_factory=list)
    wants_retrain: bool = False


def target_missing(
    status: DriftMonitorStatus, spec: DriftMonitorSpec, namespace: str
) -> list[c.Cond]:
    message = f"ModelDeployment {namespace}/{spec.model_deployment} does not exist"
    status.phase, status.message = "Pending", message
    return [
        c.Cond(c.READY, False, c.TARGET_NOT_FOUND, message),
        c.Cond(c.RECONCILING, True, c.TARGET_NOT_FOUND, message),
    ]


def judge(
    spec: DriftMonitorSpec,
    status: DriftMonitorStatus,
    profile: Profile,
    scrape: Scrape,
    now: dt.datetime,
    events: list[tuple[str, str, str]],
    spec_changed: bool = False,
) -> Verdict:
    """Pure: from the scraped counts and the previous window, the new status (updated in
    place), its conditions and Events. A verdict judged under an earlier spec (another
    method or threshold) does not stand for the new one."""
    stamp = rfc3339(now)
    if scrape.cumulative:
        baseline = _as_counts(status.window, profile)
        if baseline is None:
            if status.window is not None:
                # A new reference (a new model): the old verdict no longer applies.
                if status.drifted:
                    events.append(
                        (
                            "Normal",
                            c.DRIFT_RESET,
                            "the reference changed (a new model); the drift verdict is reset "
                            "and a new window starts",
                        )
                    )
                _forget_verdict(status)
            status.window = _window_from(scrape.counts, profile, stamp, scrape.quality)
            status.samples = 0
            return Verdict(collecting(status, spec, "baseline taken"))
        window = sources.window(baseline, scrape.counts)
    else:
        window = scrape.counts
    samples = int(window.sum(axis=1).min()) if len(window) else 0
    if samples < spec.min_samples:
        if status.drifted is not None and not spec_changed:
            return Verdict(verdict_stands(status, spec, samples, now))
        _forget_verdict(status)
        status.samples = samples
        return Verdict(collecting(status, spec, f"{samples} samples so far"))
    status.samples = samples

    try:
        # compare() scores categorical features with chi2 where the method needs
        # ordered bins (ks, wasserstein).
        checked = report.compare(
            profile, window, spec.method, spec.threshold, correction=spec.correction
        )
    except stats.InsufficientData as err:
        if err.side == "current":
            return Verdict(collecting(status, spec, str(err)))
        return Verdict(broken(status, c.REFERENCE_INVALID, str(err), stalled=True))
    except ValueError as err:
        return Verdict(broken(status, c.REFERENCE_INVALID, str(err), stalled=True))
    verdicts = checked.features
    quality_window: perf.QualityCounts | None = scrape.quality
    if scrape.cumulative:
        if scrape.quality is not None and status.window is not None:
            quality_window = perf.between(dq.decode(status.window.quality), scrape.quality)
        status.window = _window_from(scrape.counts, profile, stamp, scrape.quality)  # next
    status.features = [
        FeatureScore(
            name=f.name,
            score=round(v.score, 6),
            p_value=None if v.p_value is None else round(v.p_value, 6),
            adjusted_p_value=None if v.adjusted_p_value is None else round(v.adjusted_p_value, 6),
            drifted=v.drifted,
        )
        for f, v in zip(profile.features, verdicts, strict=True)
    ]
    status.correction = checked.correction
    tested = sum(v.p_value is not None for v in verdicts)
    corrected = (
        f", p-values Benjamini-Hochberg adjusted across {tested} features"
        if checked.correction == "bh"
        else ""
    )
    drifted_names = [f.name for f in status.features if f.drifted]
    status.score = max((f.score for f in status.features), default=0.0)
    was = status.drifted
    status.drifted = bool(drifted_names)
    scores: list[tuple[str, str, float]] = [
        (f.name, str(v.method), v.score) for f, v in zip(profile.features, verdicts, strict=True)
    ]
    wants_retrain = False

    quality_conds: list[c.Cond] = []
    degraded: bool | None = None
    if spec.performance is not None:
        degraded, quality_conds = _judge_quality(
            spec, status, profile, quality_window, scrape.versions, events
        )
    if status.drifted:
        message = (
            f"{spec.method} drift in {len(drifted_names)} of {len(status.features)} "
            f"features ({', '.join(drifted_names)}) over {samples} samples{corrected}"
        )
        if not was:
            events.append(("Warning", c.DRIFT_DETECTED, message))
        drifted_cond = c.Cond(c.DRIFTED, True, c.DRIFT_DETECTED, message)
    else:
        message = f"no {spec.method} drift over {samples} samples{corrected}"
        if was:
            events.append(("Normal", c.NO_DRIFT, message))
        drifted_cond = c.Cond(c.DRIFTED, False, c.NO_DRIFT, message)
    if spec.performance is not None:
        input_cond = c.Cond(dq.INPUT_DRIFT, bool(status.drifted), drifted_cond.reason, message)
        quality_conds.append(input_cond)
        message = f"{quality_conds[0].message}; input: {message} (reported only)"
    if dq.acts(spec.performance is not None, bool(status.drifted), degraded):
        blocked = retrain_note(spec, status, now)
        wants_retrain = blocked is None
        message += blocked or ""
    status.phase = "Drifted" if status.drifted else "Healthy"
    status.message = message
    return Verdict(
        [
            c.Cond(c.READY, True, c.RECONCILED, "checks running"),
            c.Cond(c.SOURCE_READY, True, c.RECONCILED, _read(samples, scrape.other_pods)),
            drifted_cond,
            *quality_conds,
        ],
        scores,
        wants_retrain,
    )


def _read(samples: int, other_pods: int) -> str:
    if not other_pods:
        return f"{samples} samples read"
    return (
        f"{samples} samples read from the current model's pods; {other_pods} pods of another "
        "model (a rollout, a canary) counted for their own versions' labels only"
    )


def _judge_quality(
    spec: DriftMonitorSpec,
    status: DriftMonitorStatus,
    profile: Profile,
    window: perf.QualityCounts | None,
    served: frozenset[str],
    events: list[tuple[str, str, str]],
) -> tuple[bool | None, list[c.Cond]]:
    """The quality verdict of a window, with its conditions (PerformanceDegraded,
    PredictionDrift) and an Event on each change of their reasons."""
    performance = spec.performance
    assert performance is not None
    version = dq.busiest_version(window, served) if window is not None else None
    figures = None
    if window is not None and version is not None:
        figures = perf.window_quality(
            window, version, profile.predictions, spec.method, spec.threshold
        )
    calibration = profile.calibration
    baseline = calibration.accuracy if calibration and performance.metric == "accuracy" else None
    verdict = dq.judge_quality(performance, figures, baseline)
    status.performance = verdict.status
    conds = [c.Cond(dq.PERFORMANCE_DEGRADED, verdict.degraded, verdict.reason, verdict.message)]
    drift = figures.prediction_drift if figures is not None else None
    status.prediction_drift = None if drift is None else round(drift.score, 6)
    if figures is not None and drift is not None:
        reason = "PredictionsDrifted" if drift.drifted else "PredictionsStable"
        message = (
            f"{spec.method} {drift.score:.4f} on the predictions of version {version} "
            f"over {figures.predictions} answers"
        )
        conds.append(c.Cond(dq.PREDICTION_DRIFT, drift.drifted, reason, message))
    previous = {cd.type: cd.reason for cd in status.conditions}
    for cond in conds:
        if previous.get(cond.type) != cond.reason:
            kind = "Warning" if cond.status else "Normal"
            events.append((kind, cond.reason, f"{cond.type}: {cond.message}"))
    return verdict.degraded, conds
