"""A track's figures over a window, from its model servers' ``/metrics`` text.

The model server exports, labelled with the served ``model``,

* ``kubeloop_model_requests_total{status}``: inference requests answered, by HTTP status;
* ``kubeloop_model_request_duration_seconds``: a histogram of their durations;
* ``kubeloop_model_prediction_total{class}``: predictions per class (classifiers only).

One scrape of one pod is a :class:`Sample` of cumulative counters; :func:`delta` turns
two scrapes of the same pod into the window between them, and :func:`combine` sums the
windows of a track's pods into :class:`Figures`. Pure: nothing here reads the network.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from kubeloop.drift.stats import jensenshannon

REQUESTS_SAMPLE = "kubeloop_model_requests_total"
BUCKET_SAMPLE = "kubeloop_model_request_duration_seconds_bucket"
PREDICTION_SAMPLE = "kubeloop_model_prediction_total"
MAX_TEXT_BYTES = 1 << 20
MAX_CLASSES = 1000
P99 = 0.99

Buckets = tuple[tuple[float, float], ...]
K = TypeVar("K", str, float)


class FiguresInvalid(Exception):
    """The metrics text is unusable: malformed, too large, or not counters."""


@dataclass(frozen=True)
class Sample:
    """One pod's cumulative counters for one model (or their increase over a window)."""

    requests: float = 0.0
    """Inference requests answered, whatever the status."""
    errors: float = 0.0
    """Those answered with a server error (status 500 or above)."""
    buckets: Buckets = ()
    """Duration histogram as (upper bound, cumulative count), sorted, +Inf as math.inf."""
    predictions: Mapping[str, float] = field(default_factory=dict)
    """Predictions per class label; read-only."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "buckets", tuple((float(le), float(n)) for le, n in self.buckets))
        object.__setattr__(self, "predictions", MappingProxyType(dict(self.predictions)))


@dataclass(frozen=True)
class Figures:
    """One track (canary or stable) over one window, summed over its pods."""

    requests: float
    errors: float
    p99_seconds: float | None
    """None when the window has no request or no histogram."""
    predictions: Mapping[str, float]
    pods: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "predictions", MappingProxyType(dict(self.predictions)))

    @property
    def error_percent(self) -> float | None:
        """Server errors in percent of requests; None without requests."""
        if self.requests == 0:
            return None
        return 100.0 * self.errors / self.requests


# --- parsing one scrape ------------------------------------------------------------------


@dataclass
class _Tally:
    """One model's series while the text is read, keyed by their distinguishing label."""

    statuses: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)
    predictions: dict[str, float] = field(default_factory=dict)


def parse_sample(text: str, model: str | None = None) -> Sample:
    """One pod's counters for ``model`` from its ``/metrics`` text (Prometheus format).

    ``model`` picks the ``model`` label; None accepts text with at most one model. Absent
    series count as zero (a fresh server has no request counters yet). Anything unusable
    raises :class:`FiguresInvalid`, and nothing else.
    """
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise FiguresInvalid(f"metrics text larger than {MAX_TEXT_BYTES} bytes")
    tallies: dict[str, _Tally] = {}
    for name, labels, value in _relevant_samples(text):
        tally = tallies.setdefault(labels.get("model", ""), _Tally())
        _add(tally, name, labels, value)
    chosen = _choose_model(set(tallies), model)
    return _sample(tallies.get(chosen, _Tally()))


def _relevant_samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    try:
        # The parser's errors are undocumented (ValueError, IndexError, ...).
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except Exception as err:
        raise FiguresInvalid(f"malformed metrics text: {err!r}") from err
    for sample in samples:
        if sample.name not in (REQUESTS_SAMPLE, BUCKET_SAMPLE, PREDICTION_SAMPLE):
            continue
        value = float(sample.value)
        if not math.isfinite(value) or value < 0:
            raise FiguresInvalid(f"{sample.name}{sample.labels}: {value} is not a count")
        yield sample.name, dict(sample.labels), value


def _label(name: str, labels: Mapping[str, str], key: str) -> str:
    if key not in labels:
        raise FiguresInvalid(f"{name}{dict(labels)} has no {key!r} label")
    return labels[key]


def _add(tally: _Tally, name: str, labels: Mapping[str, str], value: float) -> None:
    if name == REQUESTS_SAMPLE:
        _put(tally.statuses, _label(name, labels, "status"), value, name)
    elif name == PREDICTION_SAMPLE:
        _put(tally.predictions, _label(name, labels, "class"), value, name)
    else:
        _put(tally.buckets, _upper_bound(_label(name, labels, "le")), value, name)


def _put(table: dict[K, float], key: K, value: float, name: str) -> None:
    if key in table:
        raise FiguresInvalid(f"{name}: duplicate series for {key!r}")
    table[key] = value


def _upper_bound(le: str) -> float:
    try:
        bound = float(le)
    except ValueError as err:
        raise FiguresInvalid(f"bucket bound le={le!r} is not a number") from err
    if math.isnan(bound):
        raise FiguresInvalid("bucket bound le='NaN'")
    return bound


def _choose_model(models: set[str], model: str | None) -> str:
    if model is not None:
        return model
    if len(models) > 1:
        raise FiguresInvalid(f"metrics for several models {sorted(models)}; name one")
    return next(iter(models), "")


def _is_server_error(status: str) -> bool:
    try:
        code = int(status)
    except ValueError as err:
        raise FiguresInvalid(f"status label {status!r} is not an HTTP status") from err
    return code >= 500


def _sample(tally: _Tally) -> Sample:
    if len(tally.predictions) > MAX_CLASSES:
        raise FiguresInvalid(f"{len(tally.predictions)} classes; at most {MAX_CLASSES}")
    buckets = tuple(sorted(tally.buckets.items()))
    if buckets and buckets[-1][0] != math.inf:
        raise FiguresInvalid("the duration histogram has no +Inf bucket")
    if any(later < earlier for (_, earlier), (_, later) in itertools.pairwise(buckets)):
        raise FiguresInvalid("the duration histogram's cumulative counts decrease")
    return Sample(
        requests=sum(tally.statuses.values()),
        errors=sum(n for status, n in tally.statuses.items() if _is_server_error(status)),
        buckets=buckets,
        predictions=tally.predictions,
    )


# --- windows and tracks ------------------------------------------------------------------


def _edges(buckets: Buckets) -> tuple[float, ...]:
    return tuple(le for le, _ in buckets)


def _was_reset(current: Sample, baseline: Sample) -> bool:
    if current.requests < baseline.requests or current.errors < baseline.errors:
        return True
    if baseline.buckets:
        if _edges(current.buckets) != _edges(baseline.buckets):
            return True
        if any(c < b for (_, c), (_, b) in zip(current.buckets, baseline.buckets, strict=True)):
            return True
    return any(current.predictions.get(k, 0.0) < n for k, n in baseline.predictions.items())


def delta(current: Sample, baseline: Sample | None) -> Sample:
    """The counters' increase since ``baseline``, an earlier scrape of the same pod.

    Without a baseline, or when any counter went down (the server restarted, or its
    histogram's edges changed), the current counters are the whole window.
    """
    if baseline is None or _was_reset(current, baseline):
        return current
    buckets = current.buckets
    if baseline.buckets:
        pairs = zip(current.buckets, baseline.buckets, strict=True)
        buckets = tuple((le, c - b) for (le, c), (_, b) in pairs)
    return Sample(
        requests=current.requests - baseline.requests,
        errors=current.errors - baseline.errors,
        buckets=buckets,
        predictions={
            k: n - baseline.predictions.get(k, 0.0) for k, n in current.predictions.items()
        },
    )


def _sum_buckets(samples: Sequence[Sample]) -> Buckets:
    histograms = [s.buckets for s in samples if s.buckets]
    if not histograms:
        return ()
    edges = _edges(histograms[0])
    if any(_edges(h) != edges for h in histograms[1:]):
        raise FiguresInvalid("the pods' duration histograms have different bucket edges")
    return tuple((le, sum(h[i][1] for h in histograms)) for i, le in enumerate(edges))


def combine(samples: Sequence[Sample]) -> Figures:
    """Sum one track's per-pod windows.

    Histograms must share their bucket edges (:class:`FiguresInvalid` otherwise); a pod
    without a histogram adds its requests but nothing to the latency.
    """
    requests = sum(s.requests for s in samples)
    predictions: dict[str, float] = {}
    for s in samples:
        for label, n in s.predictions.items():
            predictions[label] = predictions.get(label, 0.0) + n
    return Figures(
        requests=requests,
        errors=sum(s.errors for s in samples),
        p99_seconds=quantile(P99, _sum_buckets(samples)) if requests > 0 else None,
        predictions=predictions,
        pods=len(samples),
    )


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as Prometheus' ``histogram_quantile``.

    Linear interpolation inside the bucket where the rank falls, the first bucket
    starting at 0; a rank in the +Inf bucket gives the highest finite bound. None with
    no buckets, a zero count, no +Inf bucket, or no finite bucket.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    ordered = sorted((float(le), float(n)) for le, n in buckets)
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return None
    counts = _monotonic([n for _, n in ordered])
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = next((i for i, n in enumerate(counts[:-1]) if n >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return ordered[-2][0]
    end = ordered[b][0]
    if b == 0 and end <= 0:
        return end
    start, below = (ordered[b - 1][0], counts[b - 1]) if b > 0 else (0.0, 0.0)
    inside = counts[b] - below
    if inside <= 0:
        return start
    return start + (end - start) * (rank - below) / inside


def _monotonic(counts: list[float]) -> list[float]:
    """Counts forced non-decreasing, as Prometheus does for summed histograms."""
    result: list[float] = []
    for n in counts:
        result.append(max(n, result[-1]) if result else n)
    return result


def divergence(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two class count tables.

    Classes missing on one side count zero there; None when either side counts nothing.
    """
    labels = sorted(set(a) | set(b))
    left = [a.get(label, 0.0) for label in labels]
    right = [b.get(label, 0.0) for label in labels]
    if sum(left) <= 0 or sum(right) <= 0:
        return None
    return min(1.0, float(jensenshannon([left], [right])[0]))
