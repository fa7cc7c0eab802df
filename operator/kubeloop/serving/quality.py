"""The served model's quality on ``/metrics``: late labels counted per model version,
the estimated correctness of what this server answered, and its predictions per model
version (prediction drift).

Feedback (``POST /v2/models/{name}/feedback``, docs/serving.md) carries, per record, the
label, the prediction it is the label for and the model version that answered, so that
any replica counts it: nothing is kept per request. Per version, a classifier's labels
are a confusion matrix over this model's classes; a regressor's are the count and the
sums of errors (prediction - label), squared errors and absolute errors. A batch is
checked whole before anything is counted: one bad record refuses it all (400).

Memory is bounded whatever clients send: at most ``MAX_VERSIONS`` versions are kept
(this server's own always; the least recently counted other one gives way, its counts
lost on this pod), a request names at most ``MAX_BATCH_VERSIONS`` versions and
``MAX_RECORDS`` records, and a version is at most ``MAX_VERSION_CHARS`` characters.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kubeloop.modeldir import LoadedModel
from kubeloop.serving.protocol import bad

MAX_VERSIONS = 16
MAX_BATCH_VERSIONS = 8
MAX_RECORDS = 10_000
MAX_VERSION_CHARS = 128


class Quality(Collector):
    """One served model's quality counters; mutated on the event loop only."""

    def __init__(
        self, model_name: str, version: str, model: LoadedModel, *, monitoring: bool = True
    ) -> None:
        """``monitoring`` off: labels only, no estimation and no prediction histogram."""
        self.model_name, self.version = model_name, version
        self.classes = model.classes
        self.class_labels = model.class_labels
        self._lookup: dict[str, int] = {}
        if model.classes is not None:
            # The class value (what `predict` answers) or its name; the value wins.
            self._lookup = {label: i for i, label in enumerate(model.class_labels)}
            self._lookup.update({_key(c): i for i, c in enumerate(model.classes.tolist())})
        # JSON true/false is a class only of a model whose classes are booleans (what its
        # answers hold then); elsewhere it is refused, never read as 1 or 0.
        self._bool_classes = model.classes is not None and model.classes.dtype == np.bool_
        profile = model.profile if monitoring else None
        self.calibration = (
            profile.calibration
            if profile is not None and model.classes is not None and model.has_proba
            else None
        )
        self.estimated_correct = 0.0
        self.estimated_answers = 0
        # A regressor's predicted values on the profile's prediction bins.
        reference = profile.predictions if profile is not None else None
        self.value_edges: np.ndarray | None = None
        if model.classes is None and reference is not None and reference.kind == "numeric":
            self.value_edges = np.asarray(reference.edges, dtype=np.float64)
            self.value_labels = reference.bin_labels()
            self.value_counts = np.zeros(reference.bins, dtype=np.int64)
            self.value_sum = 0.0
        # version -> confusion matrix (label, prediction) or [count, sum, sum sq, sum abs]
        self.labelled: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def estimating(self) -> bool:
        """Whether served answers need their probabilities (to estimate correctness)."""
        return self.calibration is not None

    # -- served answers ---------------------------------------------------------------

    def observe(self, predictions: np.ndarray, proba: np.ndarray | None) -> None:
        if self.calibration is not None and proba is not None:
            top = proba.max(axis=1)
            self.estimated_correct += float(self.calibration.expected(top).sum())
            self.estimated_answers += len(top)
        if self.value_edges is not None:
            values = predictions.astype(np.float64, copy=False)
            finite = np.isfinite(values)
            if not finite.all():
                values = values[finite]
            bins = np.searchsorted(self.value_edges, values, side="left")
            self.value_counts += np.bincount(bins, minlength=len(self.value_counts))
            self.value_sum += float(values.sum())

    # -- feedback ---------------------------------------------------------------------

    def feedback(self, payload: Any) -> int:
        """Count a feedback request's records, all or none; the number counted."""
        return self.count(self.check(payload))

    def check(self, payload: Any) -> list[tuple[str, float, float]]:
        """A feedback request's records, each (version, label, prediction) with a class
        as its index; a 400 for the first bad one."""
        if not isinstance(payload, dict):
            raise bad("the feedback body must be a JSON object")
        records = payload.get("records")
        if not isinstance(records, list) or not records:
            raise bad("'records' must be a non-empty list")
        if len(records) > MAX_RECORDS:
            raise bad(f"at most {MAX_RECORDS} records a request, got {len(records)}")
        default = payload.get("model_version")
        if default is not None:
            _check_version(default, "'model_version'")
        checked = [self._record(r, i, default) for i, r in enumerate(records)]
        versions = {version for version, _, _ in checked}
        if len(versions) > MAX_BATCH_VERSIONS:
            raise bad(f"at most {MAX_BATCH_VERSIONS} model versions a request, got {len(versions)}")
        return checked

    def count(self, checked: list[tuple[str, float, float]]) -> int:
        """Count records :meth:`check` passed (nothing is counted before all passed)."""
        for version, label, prediction in checked:
            table = self._table(version)
            if self.classes is not None:
                table[int(label), int(prediction)] += 1
            else:
                error = prediction - label
                table += (1.0, error, error * error, abs(error))
        return len(checked)

    def _record(self, record: Any, index: int, default: str | None) -> tuple[str, float, float]:
        where = f"records[{index}]"
        if not isinstance(record, dict):
            raise bad(f"{where} must be an object")
        version = record.get("model_version", default)
        if version is None:
            raise bad(f"{where}: 'model_version' is missing (the answer's model_version)")
        _check_version(version, f"{where}: 'model_version'")
        if "label" not in record or "prediction" not in record:
            raise bad(f"{where}: needs 'label' and 'prediction'")
        if self.classes is not None:
            return (
                version,
                self._class(record["label"], where, "label"),
                self._class(record["prediction"], where, "prediction"),
            )
        return (
            version,
            _number(record["label"], where, "label"),
            _number(record["prediction"], where, "prediction"),
        )

    def _class(self, value: Any, where: str, what: str) -> int:
        index = self._lookup.get(_key(value)) if isinstance(value, str | int | float) else None
        if index is None or (isinstance(value, bool) and not self._bool_classes):
            raise bad(
                f"{where}: {what} {value!r} is not one of the model's classes: "
                + ", ".join(self.class_labels)
            )
        return index

    def _table(self, version: str) -> np.ndarray:
        table = self.labelled.get(version)
        if table is not None:
            self.labelled.move_to_end(version)
            return table
        if len(self.labelled) >= MAX_VERSIONS:
            oldest = next(v for v in self.labelled if v != self.version)
            del self.labelled[oldest]
        if self.classes is not None:
            k = len(self.classes)
            table = np.zeros((k, k), dtype=np.int64)
        else:
            table = np.zeros(4, dtype=np.float64)
        self.labelled[version] = table
        return table

    # -- /metrics ---------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        name, labels = self.model_name, ["model", "version"]
        if self.calibration is not None:
            correct = CounterMetricFamily(
                "kubeloop_model_estimated_correct",
                "Sum over served answers of their calibrated probability of being right.",
                labels=labels,
            )
            correct.add_metric([name, self.version], self.estimated_correct)
            answers = CounterMetricFamily(
                "kubeloop_model_estimated_answers",
                "Served answers counted in kubeloop_model_estimated_correct.",
                labels=labels,
            )
            answers.add_metric([name, self.version], self.estimated_answers)
            yield correct
            yield answers
        if self.value_edges is not None:
            cumulative = np.cumsum(self.value_counts).tolist()
            histogram = HistogramMetricFamily(
                "kubeloop_model_prediction_value",
                "Predicted values served, on the reference profile's prediction bins.",
                labels=labels,
            )
            histogram.add_metric(
                [name, self.version],
                buckets=list(zip(self.value_labels, cumulative, strict=True)),
                sum_value=self.value_sum,
            )
            yield histogram
        if self.classes is not None:
            yield from self._confusion()
        else:
            yield from self._errors()

    def _confusion(self) -> Iterator[Metric]:
        confusion = CounterMetricFamily(
            "kubeloop_model_feedback_confusion",
            "Labelled answers per model version, true label and prediction (non-zero only).",
            labels=["model", "version", "label", "prediction"],
        )
        for version, table in self.labelled.items():
            for label, prediction in zip(*np.nonzero(table), strict=True):
                confusion.add_metric(
                    [
                        self.model_name,
                        version,
                        self.class_labels[label],
                        self.class_labels[prediction],
                    ],
                    int(table[label, prediction]),
                )
        yield confusion

    def _errors(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        count = CounterMetricFamily(
            "kubeloop_model_feedback", "Labelled answers per model version.", labels=labels
        )
        signed = GaugeMetricFamily(
            "kubeloop_model_feedback_error_sum",
            "Sum of errors (prediction - label) of labelled answers.",
            labels=labels,
        )
        squared = CounterMetricFamily(
            "kubeloop_model_feedback_squared_error",
            "Sum of squared errors of labelled answers.",
            labels=labels,
        )
        absolute = CounterMetricFamily(
            "kubeloop_model_feedback_absolute_error",
            "Sum of absolute errors of labelled answers.",
            labels=labels,
        )
        for version, (n, total, sq, ab) in self.labelled.items():
            key = [self.model_name, version]
            count.add_metric(key, n)
            signed.add_metric(key, total)
            squared.add_metric(key, sq)
            absolute.add_metric(key, ab)
        yield from (count, signed, squared, absolute)


def _key(value: Any) -> str:
    """A class as text: 2, 2.0 and "2" alike."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any, where: str, what: str) -> float:
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer beyond any float stays NaN
            number = float(value)
    if not math.isfinite(number):
        raise bad(f"{where}: {what} must be a finite number, got {value!r}"[:200])
    return number


def _check_version(version: Any, where: str) -> None:
    if not isinstance(version, str) or not version or len(version) > MAX_VERSION_CHARS:
        raise bad(f"{where} must be a non-empty string of at most {MAX_VERSION_CHARS} characters")
    if not version.isprintable():
        raise bad(f"{where} must be printable")
