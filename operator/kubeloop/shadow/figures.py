"""The counters a stable's pods export about their shadow, one pod's parsed from its
``/metrics`` text and summed over pods: pure, no network.

The names here are the contract between the model server (serving/mirror.py writes
them) and the operator (controllers/modeldeployment_shadow.py reads them). All are
labelled with the served ``model``; a classifier's labelled pairs also with
``champion`` and ``shadow``, each ``right`` or ``wrong``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from prometheus_client.parser import text_string_to_metric_families

from kubeloop.canary.figures import MAX_TEXT_BYTES, FiguresInvalid, Sample, parse_sample

PREFIX = "kubeloop_model_shadow_"
MIRRORED = PREFIX + "mirrored"
DROPPED = PREFIX + "dropped"
ERRORS = PREFIX + "errors"
DURATION = PREFIX + "request_duration_seconds"
COMPARED = PREFIX + "compared"
AGREED = PREFIX + "agreed"
ABS_DIFFERENCE = PREFIX + "absolute_difference"
LABELLED = PREFIX + "labelled"
UNMATCHED = PREFIX + "labels_unmatched"
CHAMPION_ABS_ERROR = PREFIX + "champion_absolute_error"
SHADOW_ABS_ERROR = PREFIX + "shadow_absolute_error"
ERROR_DIFFERENCE_SQUARED = PREFIX + "error_difference_squared"
RIGHT, WRONG = "right", "wrong"

_COUNTERS = {
    MIRRORED + "_total": "mirrored",
    DROPPED + "_total": "dropped",
    ERRORS + "_total": "errors",
    COMPARED + "_total": "compared",
    AGREED + "_total": "agreed",
    ABS_DIFFERENCE + "_total": "abs_difference",
    UNMATCHED + "_total": "unmatched",
    CHAMPION_ABS_ERROR + "_total": "champion_abs_error",
    SHADOW_ABS_ERROR + "_total": "shadow_abs_error",
    ERROR_DIFFERENCE_SQUARED + "_total": "difference_squared",
}
_LABELLED_OUTCOMES = {
    (RIGHT, RIGHT): "both_right",
    (RIGHT, WRONG): "champion_only_right",
    (WRONG, RIGHT): "shadow_only_right",
    (WRONG, WRONG): "both_wrong",
}


@dataclass(frozen=True)
class ShadowSample:
    """One pod's (or the pods' summed) counters about its shadow."""

    mirrored: float = 0.0
    dropped: float = 0.0
    errors: float = 0.0
    compared: float = 0.0
    agreed: float = 0.0
    abs_difference: float = 0.0
    unmatched: float = 0.0
    # labelled pairs: classifiers by outcome; regressors count in `labelled` only
    labelled: float = 0.0
    both_right: float = 0.0
    champion_only_right: float = 0.0
    shadow_only_right: float = 0.0
    both_wrong: float = 0.0
    champion_abs_error: float = 0.0
    shadow_abs_error: float = 0.0
    difference_squared: float = 0.0
    classifier: bool = False
    buckets: tuple[tuple[float, float], ...] = ()
    """The shadow's latency histogram, as the champion's pods measured it."""
    champion: Sample = field(default_factory=Sample)
    """The champion's own requests, errors and latency."""


def parse_shadow(text: str, model: str) -> ShadowSample:
    """One pod's shadow counters for ``model``; :class:`FiguresInvalid` when unusable."""
    if len(text) > MAX_TEXT_BYTES:
        raise FiguresInvalid(f"metrics text larger than {MAX_TEXT_BYTES} bytes")
    values: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for name, labels, value in _samples(text, model):
        if name in _COUNTERS:
            values[_COUNTERS[name]] = values.get(_COUNTERS[name], 0.0) + value
        elif name == LABELLED + "_total":
            values["labelled"] = values.get("labelled", 0.0) + value
            outcome = _LABELLED_OUTCOMES.get((labels.get("champion", ""), labels.get("shadow", "")))
            if outcome is not None:
                values[outcome] = values.get(outcome, 0.0) + value
        elif name == DURATION + "_bucket":
            le = labels.get("le", "")
            bound = math.inf if le in ("+Inf", "Inf") else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
    return ShadowSample(
        **values,
        classifier="agreed" in values,  # a classifier's server exports it, even at 0
        buckets=tuple(sorted(buckets.items())),
        champion=parse_sample(text, model),
    )


def _samples(text: str, model: str) -> Iterable[tuple[str, dict[str, str], float]]:
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as err:  # the parser's errors are undocumented
        raise FiguresInvalid(f"malformed metrics text: {err!r}") from err
    for family in families:
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            value = float(sample.value)
            if not math.isfinite(value) or value < 0:
                raise FiguresInvalid(f"{sample.name}{sample.labels}: {value} is not a count")
            yield sample.name, dict(sample.labels), value


def total(samples: Sequence[ShadowSample]) -> ShadowSample:
    """The pods' counters added up (histograms bucket by bucket)."""
    if not samples:
        return ShadowSample()
    sums = {
        f.name: sum(getattr(s, f.name) for s in samples)
        for f in fields(ShadowSample)
        if f.type in ("float", float)
    }
    champion = Sample(
        requests=sum(s.champion.requests for s in samples),
        errors=sum(s.champion.errors for s in samples),
        buckets=_sum_buckets([s.champion.buckets for s in samples]),
    )
    return ShadowSample(
        **sums,
        classifier=any(s.classifier for s in samples),
        buckets=_sum_buckets([s.buckets for s in samples]),
        champion=champion,
    )


def _sum_buckets(
    histograms: Sequence[tuple[tuple[float, float], ...]],
) -> tuple[tuple[float, float], ...]:
    edges: dict[float, float] = {}
    for histogram in histograms:
        for le, n in histogram:
            edges[le] = edges.get(le, 0.0) + n
    return tuple(sorted(edges.items()))
