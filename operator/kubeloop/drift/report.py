"""Drift reports: every feature of a profile scored against current counts, one verdict.

The DriftMonitor and the offline ``kubeloop drift`` command share :func:`compare`, so a
report computed on a laptop and one in the monitor's status agree on the same counts.

``ks`` and ``wasserstein`` need ordered bins; a categorical feature has none, so under
those methods it is tested with ``chi2`` at chi2's default threshold instead, and its row
says so.

Testing many features at once, a p-value method flags some unchanged feature in most
checks by chance. By default (``correction="bh"``) the p-values of all the features tested
with one (ks, chi2, and chi2 standing in for ks on categories) are adjusted together by
Benjamini-Hochberg, and a feature drifts when its *adjusted* p-value is below its
threshold: the false discovery rate across features is held at the threshold.
``correction="none"`` judges each p-value alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from kubeloop.drift import stats
from kubeloop.drift.profile import Profile, counts_for
from kubeloop.drift.stats import FeatureDrift, InsufficientData, Method

CATEGORICAL_FALLBACK: Method = "chi2"


@dataclass(frozen=True)
class FeatureResult:
    name: str
    kind: Literal["numeric", "categorical"]
    method: Method
    score: float
    p_value: float | None
    threshold: float
    drifted: bool
    samples: float
    adjusted_p_value: float | None = None
    """The Benjamini-Hochberg adjusted p-value the verdict rests on (correction "bh")."""


@dataclass(frozen=True)
class DriftReport:
    """Per-feature results and the overall verdict.

    The data set counts as drifted when at least one feature drifted and the drifted
    share reaches ``drift_share`` (0: any feature, Evidently's preset uses 0.5).
    """

    method: Method
    threshold: float
    drift_share: float
    reference_rows: int
    features: list[FeatureResult]
    correction: stats.Correction = "none"
    """The correction applied: "bh" when p-values were adjusted, else "none" (asked
    for, or no feature was scored with a p-value)."""

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) and self.share >= self.drift_share

    @property
    def samples(self) -> float:
        """The smallest per-feature count: what ``minSamples`` should be checked against."""
        return min((f.samples for f in self.features), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "driftShare": self.drift_share,
            "drifted": self.drifted,
            "share": self.share,
            "referenceRows": self.reference_rows,
            "samples": self.samples,
            "correction": self.correction,
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "method": f.method,
                    "score": f.score,
                    "pValue": f.p_value,
                    "adjustedPValue": f.adjusted_p_value,
                    "threshold": f.threshold,
                    "drifted": f.drifted,
                    "samples": f.samples,
                }
                for f in self.features
            ],
        }

    def to_json(self) -> str:
        # allow_nan=False: a NaN would be invalid JSON; the statistics never produce one.
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    def to_text(self) -> str:
        adjusted = self.correction == "bh"
        header = (
            "feature",
            "kind",
            "method",
            "score",
            "p-value",
            *(["p-adjusted"] if adjusted else []),
            "threshold",
            "drift",
        )
        rows = [
            (
                f.name,
                f.kind,
                f.method,
                f"{f.score:.4g}",
                _p(f.p_value),
                *([_p(f.adjusted_p_value)] if adjusted else []),
                f"{f.threshold:g}",
                "DRIFT" if f.drifted else "ok",
            )
            for f in self.features
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]
        ]
        drifted = self.drifted_features
        verdict = "DRIFT DETECTED" if self.drifted else "no drift"
        rule = (
            "any drifted feature counts"
            if self.drift_share == 0
            else f"the data set drifts from {self.drift_share:.0%} of features"
        )
        summary = (
            f"{verdict}: {len(drifted)} of {len(self.features)} features drifted"
            f" ({self.share:.0%}; {rule})"
        )
        if drifted:
            summary += ": " + ", ".join(drifted)
        notes = []
        if adjusted:
            tested = sum(f.p_value is not None for f in self.features)
            notes.append(
                f"p-values adjusted across {tested} tests (Benjamini-Hochberg, false "
                "discovery rate below the threshold)"
            )
        # The verdict stays the last line, for scripts that read it.
        return "\n".join([*lines, "", *notes, summary])


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _rows(
    profile: Profile, method: Method, threshold: float | None
) -> dict[tuple[Method, float | None], list[int]]:
    """Feature rows grouped by the (method, threshold) that scores them."""
    groups: dict[tuple[Method, float | None], list[int]] = {}
    for row, feature in enumerate(profile.features):
        fallback = feature.kind == "categorical" and method in stats.ORDERED_METHODS
        key = (CATEGORICAL_FALLBACK, None) if fallback else (method, threshold)
        groups.setdefault(key, []).append(row)
    return groups


def _assemble(
    profile: Profile,
    method: Method,
    threshold: float | None,
    drift_share: float,
    samples: np.ndarray,
    score_group: Callable[[Method, float | None, list[int]], list[FeatureDrift]],
    correction: stats.Correction,
) -> DriftReport:
    if not 0.0 <= drift_share <= 1.0:
        raise ValueError(f"drift share must be within [0, 1], got {drift_share}")
    if correction not in stats.CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {stats.CORRECTIONS}")
    results: dict[int, FeatureDrift] = {}
    for (group_method, group_threshold), rows in _rows(profile, method, threshold).items():
        results.update(zip(rows, score_group(group_method, group_threshold, rows), strict=True))
    tested = {row: r.p_value for row, r in sorted(results.items()) if r.p_value is not None}
    applied: stats.Correction = "bh" if correction == "bh" and tested else "none"
    adjusted: dict[int, float] = {}
    if applied == "bh":
        # One family: every feature tested with a p-value, whichever test scored it.
        values = stats.benjamini_hochberg(tested.values()).tolist()
        adjusted = dict(zip(tested, values, strict=True))
        for row, p in adjusted.items():
            results[row] = replace(results[row], drifted=p < results[row].threshold)
    features = [
        FeatureResult(
            name=f.name,
            kind=f.kind,
            samples=float(samples[row]),
            adjusted_p_value=adjusted.get(row),
            **asdict(results[row]),
        )
        for row, f in enumerate(profile.features)
    ]
    return DriftReport(
        method=method,
        threshold=stats.DEFAULT_THRESHOLDS[method] if threshold is None else threshold,
        drift_share=drift_share,
        reference_rows=profile.rows,
        features=features,
        correction=applied,
    )


def _check_samples(profile: Profile, samples: np.ndarray, side: str = "current") -> None:
    # Checked here, not left to stats, so that the error names features, not rows.
    empty = np.flatnonzero(samples == 0)
    if empty.size:
        names = [profile.features[i].name for i in empty]
        raise InsufficientData(empty.tolist(), side, names)


def compare(
    profile: Profile,
    current: np.ndarray,
    method: Method = "psi",
    threshold: float | None = None,
    drift_share: float = 0.0,
    correction: stats.Correction = "bh",
) -> DriftReport:
    """Score the current counts (shaped like ``profile.reference_counts()``) per feature.

    ``threshold`` None takes the method's default; ``correction`` as in this module's
    docstring. Raises ``InsufficientData`` naming
    the features that have no current observations, ``ValueError`` on malformed counts.
    """
    method = stats.check_method(method)
    counts = np.asarray(current, dtype=np.float64)
    reference = profile.reference_counts()
    if counts.shape != reference.shape:
        raise ValueError(f"current counts {counts.shape} do not fit the profile {reference.shape}")
    samples = counts.sum(axis=1)
    _check_samples(profile, reference.sum(axis=1), "reference")
    _check_samples(profile, samples)
    positions = profile.positions()

    def score(
        group_method: Method, group_threshold: float | None, rows: list[int]
    ) -> list[FeatureDrift]:
        return stats.binned_drift(
            reference[rows], counts[rows], group_method, group_threshold, positions[rows]
        )

    return _assemble(profile, method, threshold, drift_share, samples, score, correction)


def compare_raw(
    profile: Profile,
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    method: Method,
    threshold: float | None = None,
    drift_share: float = 0.0,
    correction: stats.Correction = "bh",
) -> DriftReport:
    """Like :func:`compare`, but ``ks`` and ``wasserstein`` use the raw samples.

    For the offline tool when both data sets are at hand: the exact two-sample KS
    statistic instead of its value at bin edges. The other methods, and categorical
    features, are binned on ``profile`` (which should be built from ``reference``).
    """
    method = stats.check_method(method)
    binned = counts_for(profile, current)
    samples = binned.sum(axis=1)
    reference_counts = profile.reference_counts()
    _check_samples(profile, reference_counts.sum(axis=1), "reference")
    _check_samples(profile, samples)
    names = profile.names

    def score(
        group_method: Method, group_threshold: float | None, rows: list[int]
    ) -> list[FeatureDrift]:
        if group_method not in stats.ORDERED_METHODS:
            return stats.binned_drift(
                reference_counts[rows], binned[rows], group_method, group_threshold
            )
        ref = [np.asarray(reference[names[r]], dtype=np.float64) for r in rows]
        cur = [np.asarray(current[names[r]], dtype=np.float64) for r in rows]
        if group_method == "ks":
            return stats.verdicts("ks", *stats.ks_raw(ref, cur), group_threshold)
        return stats.verdicts("wasserstein", stats.wasserstein_raw(ref, cur), None, group_threshold)

    return _assemble(profile, method, threshold, drift_share, samples, score, correction)
