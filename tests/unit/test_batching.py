"""Adaptive batching in the model server: concurrent requests are merged into fewer
`predict` calls, and every request still gets exactly its own answer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import requests

from kubeloop.modeldir import LoadedModel
from kubeloop.serving.dataplane import DataPlane
from tests.unit.test_serving import matrix, metric_samples, model, model_dir, running  # noqa: F401

RNG = np.random.default_rng(11)
BATCHES = [np.round(RNG.uniform(0.1, 7.9, (int(n), 4)), 1) for n in RNG.integers(1, 4, 48)]


@contextmanager
def serving(model: LoadedModel, **batching: Any) -> Iterator[tuple[DataPlane, str]]:  # noqa: F811
    server = DataPlane(model.metadata, **batching)
    server.set_model(model)
    with running(server) as url:
        yield server, url


def post(url: str, body: Any) -> requests.Response:
    return requests.post(f"{url}/v2/models/iris/infer", json=body, timeout=30)


def all_at_once(url: str, bodies: list[Any]) -> list[requests.Response]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: post(url, body), bodies))


def test_batched_answers_equal_unbatched_row_for_row(model: LoadedModel) -> None:  # noqa: F811
    with serving(model, max_batch_size=64, max_batch_wait=0.05) as (server, url):
        answers = all_at_once(url, [matrix(rows.tolist()) for rows in BATCHES])
    for rows, answer in zip(BATCHES, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == model.estimator.predict(rows).tolist()
    assert server.batcher is not None and server.batcher.batches < len(BATCHES) / 2


def test_batching_off_predicts_each_request(model: LoadedModel) -> None:  # noqa: F811
    with serving(model, max_batch_size=1) as (server, url):
        answers = all_at_once(url, [matrix(rows.tolist()) for rows in BATCHES[:8]])
    assert server.batcher is None and all(a.status_code == 200 for a in answers)


def test_a_bad_request_gets_its_400_and_the_others_their_200(
    model: LoadedModel,  # noqa: F811
) -> None:
    bad = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]}
    bodies = [bad if i % 4 == 0 else matrix(rows.tolist()) for i, rows in enumerate(BATCHES)]
    with serving(model, max_batch_size=64, max_batch_wait=0.05) as (server, url):
        answers = all_at_once(url, bodies)
    for i, (rows, answer) in enumerate(zip(BATCHES, answers, strict=True)):
        if i % 4 == 0:
            assert answer.status_code == 400 and "shape must be [N, 4]" in answer.json()["error"]
        else:
            assert answer.json()["outputs"][0]["data"] == model.estimator.predict(rows).tolist()
    assert server.batcher is not None and server.batcher.batches < len(BATCHES) / 2


class Picky:
    """Refuses rows whose first feature is above 7.5 (as a model may fail on inputs)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.classes_ = inner, inner.classes_

    def predict(self, rows: np.ndarray) -> Any:
        if (rows[:, 0] > 7.5).any():
            raise ValueError("cannot score")
        return self.inner.predict(rows)


def test_rows_the_model_cannot_score_fail_only_their_own_request(
    model: LoadedModel,  # noqa: F811
) -> None:
    picky = dataclasses.replace(model, estimator=Picky(model.estimator))
    failing = {i for i, rows in enumerate(BATCHES) if (rows[:, 0] > 7.5).any()}
    assert failing and len(failing) < len(BATCHES)
    with serving(picky, max_batch_size=64, max_batch_wait=0.05) as (_, url):
        answers = all_at_once(url, [matrix(rows.tolist()) for rows in BATCHES])
    for i, (rows, answer) in enumerate(zip(BATCHES, answers, strict=True)):
        if i in failing:
            assert answer.status_code == 500, answer.text
        else:
            assert answer.json()["outputs"][0]["data"] == model.estimator.predict(rows).tolist()


def test_max_wait_is_respected_and_a_full_batch_goes_at_once(
    model: LoadedModel,  # noqa: F811
) -> None:
    with serving(model, max_batch_size=64, max_batch_wait=0.3) as (_, url):
        started = time.monotonic()
        assert post(url, matrix(BATCHES[0].tolist())).status_code == 200
        alone = time.monotonic() - started
        full = np.tile(BATCHES[0][:1], (64, 1))
        started = time.monotonic()
        assert post(url, matrix(full.tolist())).status_code == 200
        at_once = time.monotonic() - started
    assert 0.3 <= alone < 3.0  # it waited for company, not longer than it may
    assert at_once < 0.3  # 64 rows fill a batch: no wait


def test_drift_histograms_count_every_row_of_every_batch(
    model: LoadedModel,  # noqa: F811
) -> None:
    with serving(model, max_batch_size=64, max_batch_wait=0.05) as (_, url):
        all_at_once(url, [matrix(rows.tolist()) for rows in BATCHES])
        samples = metric_samples(url)
    predicted = sum(
        v for (name, _), v in samples.items() if name == "kubeloop_model_prediction_total"
    )
    assert predicted == sum(len(rows) for rows in BATCHES)
