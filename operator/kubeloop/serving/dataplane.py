"""The model server's data plane: one served model, its version, metadata and readiness,
prediction (batched or alone) and the counters on ``/metrics``; no transport.

The REST front end (:mod:`kubeloop.serving.rest`) and the gRPC front end
(:mod:`kubeloop.serving.grpc`) only translate: each asks the data plane which
model a request names (:meth:`DataPlane.model_for`: the same 404s and 503s), has
:func:`~kubeloop.serving.protocol.parse_infer_request` check it (the same 400s), predicts
with :meth:`DataPlane.predict` and answers the data plane's metadata, so the two answer
alike. Every metric is mutated on the event
loop only, so none needs a lock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from kubeloop import __version__
from kubeloop.drift.profile import Profile
from kubeloop.modeldir import LoadedModel, ModelMetadata
from kubeloop.serving.batcher import Batcher
from kubeloop.serving.labelled_rows import DEFAULT_CAPACITY, LabelledRows
from kubeloop.serving.livestats import LiveStats
from kubeloop.serving.mirror import Mirror
from kubeloop.serving.protocol import PREDICT, PREDICT_PROBA, InferRequest, RequestError
from kubeloop.serving.quality import Quality

log = logging.getLogger("kubeloop.serving")

# Batches up to this many rows are predicted on the event loop: measured with wrk, that
# answers 3-7% more requests a second than a worker-thread hop at 1 and 64 rows. Larger
# batches go to a thread so that health probes still get answers (the GIL switches
# every 5 ms) while a long predict runs.
INLINE_MAX_ROWS = 256
# Adaptive batching: requests waiting together are predicted as one, up to this many rows.
DEFAULT_MAX_BATCH_SIZE = 64
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
INTERNAL_ERROR = "internal error while predicting; see server log"
SERVER_METADATA: dict[str, Any] = {
    "name": "kubeloop",
    "version": __version__,
    "extensions": ["binary_tensor_data"],
}


class DataPlane:
    """One served model; ready once :meth:`set_model` ran."""

    def __init__(
        self,
        metadata: ModelMetadata,
        *,
        name: str | None = None,
        monitoring: bool = True,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_wait: float = 0.0,
        shadow_url: str | None = None,
        shadow_percent: int = 100,
        labelled_rows: int = DEFAULT_CAPACITY,
    ) -> None:
        """``labelled_rows``: how many feedback records with inputs to keep (0: none)."""
        self.name = name or metadata.name
        self.metadata = metadata
        self.version = metadata.version
        self.monitoring = monitoring
        self.model: LoadedModel | None = None
        self.stats: LiveStats | None = None
        self.quality: Quality | None = None
        self.labelled_rows_capacity = labelled_rows
        self.labelled: LabelledRows | None = None
        # Probabilities on every batch (the estimated correctness needs them), and
        # whether the served class is their argmax, as the estimator's predict says.
        self._always_proba = self._argmax_predicts = False
        self.batcher: Batcher | None = None
        self.shadow_url, self.shadow_percent = shadow_url, shadow_percent
        self.mirror: Mirror | None = None
        self._id_prefix, self._ids = uuid.uuid4().hex, itertools.count(1)
        self.max_batch_size, self.max_batch_wait = max_batch_size, max_batch_wait
        self.server_metadata = SERVER_METADATA
        self.model_metadata: dict[str, Any] = {
            "name": self.name,
            "versions": [metadata.version],
            "platform": metadata.framework,
            "inputs": [spec.model_dump() for spec in metadata.inputs],
            "outputs": [spec.model_dump() for spec in metadata.outputs],
        }
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "kubeloop_model_requests",
            "Inference requests answered, by HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        # Label lookups take a lock and a dict probe; the children never change.
        self._requests_by_status: dict[int, Any] = {}
        self._duration = Histogram(
            "kubeloop_model_request_duration_seconds",
            "Time to answer an inference request.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        ).labels(self.name)

    def set_model(self, model: LoadedModel) -> None:
        self.stats = LiveStats(self.name, model, monitoring=self.monitoring)
        self.registry.register(self.stats)
        self.quality = Quality(self.name, self.version, model, monitoring=self.monitoring)
        self.registry.register(self.quality)
        self.labelled = LabelledRows(
            model.feature_names,
            model.class_labels if model.classes is not None else None,
            capacity=self.labelled_rows_capacity,
            allow_nan=model.allow_nan,
        )
        self._always_proba = self.quality.estimating
        self._argmax_predicts = _argmax_predicts(model.estimator)
        if self.shadow_url:
            self.mirror = Mirror(
                self.registry, self.name, self.shadow_url, self.shadow_percent, model
            )
        if self.max_batch_size > 1:
            self.batcher = Batcher(
                self._predict_current,
                self._observe,
                max_batch_size=self.max_batch_size,
                max_wait=self.max_batch_wait,
                inline_rows=INLINE_MAX_ROWS,
            )
        self.model = model

    @property
    def ready(self) -> bool:
        return self.model is not None

    # -- which model a request names ------------------------------------------------

    def check(self, name: str, version: str | None) -> None:
        """Refuse (404) a model name or version this server does not serve; no version
        (None or empty, as gRPC sends it) means the one there is."""
        if name != self.name:
            raise RequestError(404, f"model {name!r} not found: this server serves {self.name!r}")
        if version and version != self.version:
            raise RequestError(
                404, f"model {name!r} has no version {version!r}: it serves {self.version!r}"
            )

    def loaded(self) -> LoadedModel:
        model = self.model
        if model is None or self.stats is None:
            raise RequestError(503, f"model {self.name!r} is still loading")
        return model

    def model_for(self, name: str, version: str | None) -> LoadedModel:
        """The model an inference request names, once loaded (404, 503 otherwise)."""
        self.check(name, version)
        return self.loaded()

    def profile(self, name: str, version: str | None) -> Profile:
        """The reference profile the model was trained on (404 without one)."""
        self.check(name, version)
        profile = self.model.profile if self.model is not None else None
        if profile is None:
            raise RequestError(404, f"model {self.name!r} has no reference profile")
        return profile

    # -- prediction -----------------------------------------------------------------

    def request_id(self, parsed: InferRequest) -> str | None:
        """The id an answer carries: the client's, or one of ours when a shadow answers
        a copy (its answer is paired with ours by it, and a late label names it)."""
        if parsed.request_id is None and self.mirror is not None:
            # Unique across pods and restarts (a random prefix per process), and cheap.
            return f"{self._id_prefix}-{next(self._ids)}"
        return parsed.request_id

    async def predict(
        self, parsed: InferRequest, request_id: str | None = None
    ) -> dict[str, np.ndarray]:
        """The model's outputs for a validated request: batched with others, or alone;
        then a sampled copy to the shadow, if there is one."""
        self.loaded()
        proba = PREDICT_PROBA in parsed.outputs
        if self.batcher is not None:
            results = await self.batcher.submit(parsed.rows, proba)
        elif len(parsed.rows) <= INLINE_MAX_ROWS:
            results = self._predict_current(parsed.rows, proba)
            self._observe(parsed.rows, results)
        else:
            results = await asyncio.to_thread(self._predict_current, parsed.rows, proba)
            self._observe(parsed.rows, results)
        if self.mirror is not None and request_id is not None:
            self.mirror.offer(request_id, parsed.rows, results[PREDICT])
        return results

    def _predict_current(self, rows: np.ndarray, proba: bool) -> dict[str, np.ndarray]:
        model = self.model
        assert model is not None  # a batch exists only once a model is set
        if not (proba or self._always_proba):
            return {PREDICT: model.predict(rows)}
        probabilities = model.predict_proba(rows)
        if self._argmax_predicts:
            predicted = _argmax_classes(model, rows, probabilities)
        else:
            predicted = model.predict(rows)
        return {PREDICT: predicted, PREDICT_PROBA: probabilities}

    def _observe(self, rows: np.ndarray, results: dict[str, np.ndarray]) -> None:
        assert self.stats is not None and self.quality is not None
        self.stats.observe(rows, results[PREDICT])
        self.quality.observe(results[PREDICT], results.get(PREDICT_PROBA))

    def feedback(self, name: str, payload: Any) -> int:
        """Count a feedback request's labels (all or none: 400); how many."""
        self.check(name, None)
        self.loaded()
        assert self.quality is not None
        labels = []
        if self.mirror is not None and isinstance(payload, dict):
            records = payload.get("records")
            labels = self.mirror.check_labels(records if isinstance(records, list) else [])
        rows = self._labelled_inputs(payload)
        checked = self.quality.check(payload)
        counted = self.quality.count(checked)
        if rows:
            assert self.labelled is not None
            kept = [(row, label) for row, (_, label, _) in zip(rows, checked, strict=True)]
            self.labelled.add(
                [row for row, _ in kept if row is not None],
                [label for row, label in kept if row is not None],
            )
        for request_id, row, label in labels:
            assert self.mirror is not None
            self.mirror.label(request_id, row, label)
        return counted

    def _labelled_inputs(self, payload: Any) -> list[np.ndarray | None]:
        """Each record's inputs (None where it has none), all checked before anything
        is counted; empty when no record has any."""
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list) or self.labelled is None:
            return []
        labelled = self.labelled
        rows = [
            labelled.parse(r, f"records[{i}]") if isinstance(r, dict) else None
            for i, r in enumerate(records)
        ]
        return rows if any(r is not None for r in rows) else []

    def labelled_rows(self, name: str) -> dict[str, Any]:
        """The labelled rows this process keeps (feedback records with inputs)."""
        self.check(name, None)
        self.loaded()
        assert self.labelled is not None
        return self.labelled.snapshot()

    async def close(self) -> None:
        """Stop sending copies to the shadow."""
        if self.mirror is not None:
            await self.mirror.close()

    def internal_error(self, front_end: str) -> RequestError:
        """The answer to a failure the request did not cause, logged with its traceback
        (call from an ``except`` block)."""
        log.exception("Failed to answer a %s inference request for model %s", front_end, self.name)
        return RequestError(500, INTERNAL_ERROR)

    # -- metrics --------------------------------------------------------------------

    def count(self, status: int, started: float) -> None:
        """One inference request answered (REST or gRPC, by its HTTP-like status)."""
        self._duration.observe(time.perf_counter() - started)
        counter = self._requests_by_status.get(status)
        if counter is None:
            counter = self._requests.labels(self.name, str(status))
            self._requests_by_status[status] = counter
        counter.inc()

    def metrics_text(self) -> bytes:
        """This process's metrics in the Prometheus text format."""
        return generate_latest(self.registry)


def _argmax_predicts(estimator: Any) -> bool:
    """Whether ``estimator.predict`` is, in scikit-learn's own code, the class of highest
    score, of which ``predict_proba`` is a non-decreasing function row by row (argmax of
    the probabilities for forests and trees; of the raw scores, which softmax or the
    logistic function turn into them, for gradient boosting and logistic regression).
    Then the probabilities give the class, but where two tie (rounding can make equal
    probabilities of scores that differ): :func:`_argmax_classes`."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    exact = (
        ExtraTreesClassifier,
        RandomForestClassifier,
        DecisionTreeClassifier,
        ExtraTreeClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        LogisticRegression,
    )
    return type(estimator) in exact and getattr(estimator, "n_outputs_", 1) == 1


def _argmax_classes(model: LoadedModel, rows: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """``model.predict(rows)`` from its probabilities: the most probable class; rows whose
    two highest probabilities tie are left to ``predict`` itself (its own tie rule)."""
    assert model.classes is not None
    predicted = model.classes.take(proba.argmax(axis=1))
    if proba.shape[1] > 1:
        top = np.partition(proba, -2, axis=1)
        ties = top[:, -1] == top[:, -2]
        if ties.any():
            predicted[ties] = model.predict(rows[ties])
    return predicted
