"""Live statistics of a served model, on `/metrics`: served inputs per feature on the
reference profile's bins, and predictions per class and model version (what a
DriftMonitor compares)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kubeloop.drift.profile import FeatureProfile
from kubeloop.modeldir import LoadedModel

# Rows binned per numpy pass; bounds the (rows x features x edges) temporary.
BIN_CHUNK_ROWS = 4096


def _category_labels(column: np.ndarray) -> list[str]:
    # Integer-coded categories arrive as floats after decoding ("2.0"); the profile
    # names them as written in the training data ("2").
    return [str(int(v)) if v.is_integer() else str(v) for v in column.tolist()]


class LiveStats(Collector):
    """Counts of served inputs on the reference profile's bins, and of predictions.

    Prometheus client histograms take one bucket layout per metric, but every feature
    has its own edges, so this collector keeps plain numpy counters and renders them
    at scrape time. Numeric features are binned all at once: a value's bin is the
    number of edges strictly below it (``FeatureProfile.assign``'s ``searchsorted``
    with ``side="left"``), computed as one broadcast comparison against the edges,
    padded with +inf to a common length, and counted with a single ``np.bincount``.
    """

    def __init__(self, model_name: str, model: LoadedModel, *, monitoring: bool) -> None:
        self.model_name = model_name
        self.version = model.metadata.version
        self.classes = model.classes
        self.class_labels = model.class_labels
        self.prediction_counts = np.zeros(len(model.class_labels), dtype=np.int64)
        self.may_have_nan = model.allow_nan

        profiled = {f.name: f for f in model.profile.features} if model.profile else {}
        numeric: list[tuple[int, FeatureProfile]] = []
        categorical: list[tuple[int, FeatureProfile]] = []
        for index, name in enumerate(model.feature_names):
            feature = profiled.get(name)
            if monitoring and feature is not None:
                (numeric if feature.kind == "numeric" else categorical).append((index, feature))
        self.numeric = [f for _, f in numeric]
        self.numeric_columns = np.array([i for i, _ in numeric], dtype=np.intp)
        width = max((len(f.edges) for f in self.numeric), default=0)
        self.edges = np.full((len(self.numeric), width), np.inf)
        for row, feature in enumerate(self.numeric):
            self.edges[row, : len(feature.edges)] = feature.edges
        bins = [f.bins for f in self.numeric]
        self.offsets = np.concatenate(([0], np.cumsum(bins)[:-1])).astype(np.intp)
        self.bin_counts = np.zeros(sum(bins), dtype=np.int64)
        self.sums = np.zeros(len(self.numeric), dtype=np.float64)
        self.categorical = categorical
        self.category_counts = [np.zeros(f.bins, dtype=np.int64) for _, f in categorical]

    def observe(self, rows: np.ndarray, predictions: np.ndarray) -> None:
        if self.classes is not None:
            indices = np.searchsorted(self.classes, predictions)
            self.prediction_counts += np.bincount(indices, minlength=len(self.classes))
        self.observe_inputs(rows)

    def observe_inputs(self, rows: np.ndarray) -> None:
        """Count input rows on the profile's bins (a batch run counts what it scores
        with this too: kubeloop/batch/drift.py)."""
        if len(self.numeric):
            for start in range(0, len(rows), BIN_CHUNK_ROWS):
                self._observe_numeric(rows[start : start + BIN_CHUNK_ROWS, self.numeric_columns])
        for (column, feature), counts in zip(self.categorical, self.category_counts, strict=True):
            indices = feature.assign(np.array(_category_labels(rows[:, column])))
            counts += np.bincount(indices, minlength=feature.bins)

    def _observe_numeric(self, values: np.ndarray) -> None:
        bins = (values[:, :, None] > self.edges).sum(axis=2) + self.offsets
        if self.may_have_nan:
            present = ~np.isnan(values)
            bins = bins[present]
            self.sums += np.where(present, values, 0.0).sum(axis=0)
        else:
            self.sums += values.sum(axis=0)
        self.bin_counts += np.bincount(bins.ravel(), minlength=len(self.bin_counts))

    def feature_counts(self) -> dict[str, list[int]]:
        """Per-bin counts per profiled feature, in the profile's bin order."""
        out: dict[str, list[int]] = {}
        for index, feature in enumerate(self.numeric):
            start = self.offsets[index]
            out[feature.name] = self.bin_counts[start : start + feature.bins].tolist()
        for (_, feature), counts in zip(self.categorical, self.category_counts, strict=True):
            out[feature.name] = counts.tolist()
        return out

    def collect(self) -> Iterator[Metric]:
        if self.numeric:
            histogram = HistogramMetricFamily(
                "kubeloop_model_feature",
                "Served input values per feature, on the reference profile's bin edges.",
                labels=["model", "version", "feature"],
            )
            for index, feature in enumerate(self.numeric):
                start = self.offsets[index]
                cumulative = np.cumsum(self.bin_counts[start : start + feature.bins])
                histogram.add_metric(
                    [self.model_name, self.version, feature.name],
                    buckets=list(zip(feature.bin_labels(), cumulative.tolist(), strict=True)),
                    sum_value=float(self.sums[index]),
                )
            yield histogram
        if self.categorical:
            categories = CounterMetricFamily(
                "kubeloop_model_feature_category",
                "Served input values per category of a categorical feature.",
                labels=["model", "version", "feature", "category"],
            )
            for (_, feature), counts in zip(self.categorical, self.category_counts, strict=True):
                for label, count in zip(feature.bin_labels(), counts.tolist(), strict=True):
                    categories.add_metric(
                        [self.model_name, self.version, feature.name, label], count
                    )
            yield categories
        if self.classes is not None:
            predictions = CounterMetricFamily(
                "kubeloop_model_prediction",
                "Predictions served per class.",
                labels=["model", "version", "class"],
            )
            for label, count in zip(
                self.class_labels, self.prediction_counts.tolist(), strict=True
            ):
                predictions.add_metric([self.model_name, self.version, label], count)
            yield predictions
