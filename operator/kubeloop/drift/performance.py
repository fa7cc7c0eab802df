"""The served model's quality over a window, from the model server's ``/metrics``: pure
functions, no I/O (the controller scrapes; see docs/serving.md for the counters).

One scrape of one pod gives :class:`QualityCounts` (:func:`parse_quality`), counters
since that pod started, per model version; :func:`add` sums pods, :func:`between` takes
a window's increase from two sums, and :func:`window_quality` turns a window into the
realised metric with its label count, the estimated accuracy and the prediction drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from kubeloop.drift import stats
from kubeloop.drift.profile import FeatureProfile
from kubeloop.drift.sources import SourceInvalid, _categorical_row, _numeric_row

CONFUSION = "kubeloop_model_feedback_confusion_total"
LABELLED = "kubeloop_model_feedback_total"
ERROR_SUM = "kubeloop_model_feedback_error_sum"
SQUARED = "kubeloop_model_feedback_squared_error_total"
ABSOLUTE = "kubeloop_model_feedback_absolute_error_total"
ESTIMATED_CORRECT = "kubeloop_model_estimated_correct_total"
ESTIMATED_ANSWERS = "kubeloop_model_estimated_answers_total"
PREDICTED_CLASS = "kubeloop_model_prediction_total"
PREDICTED_VALUE = "kubeloop_model_prediction_value_bucket"
REGRESSION = (LABELLED, ERROR_SUM, SQUARED, ABSOLUTE)
# Label that keys each family's series within a version.
KEYS = {
    CONFUSION: ("label", "prediction"),
    PREDICTED_CLASS: ("class",),
    PREDICTED_VALUE: ("le",),
}


@dataclass
class QualityCounts:
    """Counters per model version: ``series[version][sample name][key] = value``, the key
    the series' distinguishing labels (label and prediction, class, le) or ()."""

    series: dict[str, dict[str, dict[tuple[str, ...], float]]] = field(default_factory=dict)

    def get(self, version: str, name: str) -> dict[tuple[str, ...], float]:
        return self.series.get(version, {}).get(name, {})

    @property
    def versions(self) -> list[str]:
        return sorted(self.series)


def parse_quality(text: str, model: str | None = None) -> QualityCounts:
    """The quality counters of one scrape, of ``model`` (None: whichever there is)."""
    out = QualityCounts()
    wanted = {CONFUSION, ESTIMATED_CORRECT, ESTIMATED_ANSWERS, PREDICTED_CLASS, PREDICTED_VALUE}
    wanted |= set(REGRESSION)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name not in wanted:
                    continue
                labels = sample.labels
                if model is not None and labels.get("model") != model:
                    continue
                if "version" not in labels:
                    raise SourceInvalid(f"{sample.name}{labels} has no 'version' label")
                key = tuple(labels.get(k, "") for k in KEYS.get(sample.name, ()))
                value = float(sample.value)
                if not math.isfinite(value) or (value < 0 and sample.name != ERROR_SUM):
                    raise SourceInvalid(f"{sample.name}{labels}: {value} is not a count")
                table = out.series.setdefault(labels["version"], {}).setdefault(sample.name, {})
                table[key] = table.get(key, 0.0) + value
    except ValueError as err:
        raise SourceInvalid(f"malformed metrics text: {err}") from err
    return out


def served_versions(counts: QualityCounts) -> set[str]:
    """The versions that answered on the pods counted: a pod counts predictions and
    estimates only for its own answers, labels for any version's."""
    answered = (PREDICTED_CLASS, PREDICTED_VALUE, ESTIMATED_ANSWERS)
    return {
        v
        for v in counts.versions
        if any(value > 0 for name in answered for value in counts.get(v, name).values())
    }


def add(scrapes: Iterable[QualityCounts]) -> QualityCounts:
    """The sum of several pods' counters."""
    out = QualityCounts()
    for scrape in scrapes:
        for version, families in scrape.series.items():
            mine = out.series.setdefault(version, {})
            for name, table in families.items():
                total = mine.setdefault(name, {})
                for key, value in table.items():
                    total[key] = total.get(key, 0.0) + value
    return out


def between(start: QualityCounts, end: QualityCounts) -> QualityCounts:
    """What was counted between two scrapes. A family of a version whose count went down
    (a pod restarted) counts from zero: its end values are the window, which undercounts
    it, never overcounts (as :func:`kubeloop.drift.sources.window`)."""
    out = QualityCounts()
    for version, families in end.series.items():
        for name, table in families.items():
            before = start.get(version, name)
            # A signed sum may go down: whether its pod restarted, its count says.
            reset = _reset(start, end, version, LABELLED if name == ERROR_SUM else name)
            out.series.setdefault(version, {})[name] = {
                k: v if reset else v - before.get(k, 0.0) for k, v in table.items()
            }
    return out


def _reset(start: QualityCounts, end: QualityCounts, version: str, name: str) -> bool:
    before = start.get(version, name)
    return any(v < before.get(k, 0.0) for k, v in end.get(version, name).items())


@dataclass(frozen=True)
class WindowQuality:
    """One model version's quality over a window. ``labels``: the labelled answers the
    realised figures rest on (None figures when there were none)."""

    version: str
    labels: int
    accuracy: float | None = None
    f1: float | None = None
    """Macro-averaged F1 over the classes that occur among labels or predictions."""
    rmse: float | None = None
    mae: float | None = None
    bias: float | None = None
    """Mean error, prediction - label."""
    estimated_accuracy: float | None = None
    estimated_answers: int = 0
    prediction_drift: stats.FeatureDrift | None = None
    predictions: int = 0


def confusion_matrix(window: QualityCounts, version: str, classes: list[str]) -> np.ndarray:
    """Labelled answers as a (label, prediction) matrix over ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(classes), len(classes)))
    for (label, prediction), value in window.get(version, CONFUSION).items():
        if label not in index or prediction not in index:
            raise SourceInvalid(f"feedback for classes ({label}, {prediction}) not in {classes}")
        out[index[label], index[prediction]] += value
    return out


def classification_scores(confusion: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro F1 from a confusion matrix (scikit-learn's definitions)."""
    total = confusion.sum()
    hits = np.diag(confusion)
    true, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (true + predicted) > 0
    f1 = np.divide(2 * hits, true + predicted, out=np.zeros_like(hits), where=present)
    return float(hits.sum() / total), float(f1[present].mean())


def window_quality(
    window: QualityCounts,
    version: str,
    reference: FeatureProfile | None = None,
    method: stats.Method = "psi",
    threshold: float | None = None,
) -> WindowQuality:
    """A version's realised, estimated and prediction-drift figures over ``window``
    (from :func:`between`). ``reference``: the profile's ``predictions``."""
    figures: dict[str, object] = {}
    confusion = window.get(version, CONFUSION)
    labels = round(sum(confusion.values()))
    if labels and reference is not None and reference.kind == "categorical":
        matrix = confusion_matrix(window, version, reference.categories)
        figures["accuracy"], figures["f1"] = classification_scores(matrix)
    elif labels:
        matrix = confusion_matrix(window, version, sorted({c for k in confusion for c in k}))
        figures["accuracy"], figures["f1"] = classification_scores(matrix)
    n = window.get(version, LABELLED).get((), 0.0)
    if n > 0:
        labels = round(n)
        figures["rmse"] = math.sqrt(max(window.get(version, SQUARED).get((), 0.0), 0.0) / n)
        figures["mae"] = window.get(version, ABSOLUTE).get((), 0.0) / n
        figures["bias"] = window.get(version, ERROR_SUM).get((), 0.0) / n
    answers = window.get(version, ESTIMATED_ANSWERS).get((), 0.0)
    if answers > 0:
        correct = window.get(version, ESTIMATED_CORRECT).get((), 0.0)
        figures["estimated_accuracy"] = correct / answers
        figures["estimated_answers"] = round(answers)
    if reference is not None:
        current = prediction_counts(window, version, reference)
        figures["predictions"] = round(current.sum())
        if current.sum() > 0:
            ref = np.asarray(reference.counts, dtype=np.float64)[None, :]
            positions = np.asarray(reference.positions())[None, :]
            figures["prediction_drift"] = stats.binned_drift(
                ref, current[None, :], method, threshold, positions
            )[0]
    return WindowQuality(version=version, labels=labels, **figures)  # type: ignore[arg-type]


def prediction_counts(window: QualityCounts, version: str, reference: FeatureProfile) -> np.ndarray:
    """The version's served predictions on the reference's prediction bins."""
    if reference.kind == "categorical":
        classes = {k[0]: v for k, v in window.get(version, PREDICTED_CLASS).items()}
        return _categorical_row(reference, classes)
    buckets = {k[0]: v for k, v in window.get(version, PREDICTED_VALUE).items()}
    if not buckets:
        return np.zeros(reference.bins)
    return _numeric_row(reference, buckets)
