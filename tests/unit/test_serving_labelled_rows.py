"""The labelled rows a model server keeps for a retrain's evaluation on live labels:
feedback records that carry their inputs, in a ring bounded whatever clients send, read
back through `GET /v2/models/{name}/feedback/rows` (JSON or CSV), merged across worker
processes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from kubeloop.modeldir import LoadedModel
from kubeloop.serving import labelled_rows
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.labelled_rows import LabelledRows
from tests.unit.test_serving import TIMEOUT, model, model_dir, running  # noqa: F401
from tests.unit.test_serving_quality import feedback, quality_samples

FEATURES = ["a", "b"]


def test_the_ring_keeps_the_newest_rows_and_counts_what_it_evicts() -> None:
    ring = LabelledRows(FEATURES, ["no", "yes"], capacity=3)
    for i in range(5):
        ring.add([np.array([i, -i], dtype=float)], [i % 2], now=float(i))
    snap = ring.snapshot()
    assert (snap["rows"], snap["capacity"], snap["evicted"]) == (3, 3, 2)
    assert snap["inputs"] == [[2.0, -2.0], [3.0, -3.0], [4.0, -4.0]]
    assert snap["labels"] == ["no", "yes", "no"]
    assert snap["times"] == [2.0, 3.0, 4.0]


def test_the_ring_is_bounded_in_bytes_whatever_the_features() -> None:
    wide = LabelledRows([f"f{i}" for i in range(100_000)], None, capacity=10_000)
    assert wide.capacity * (100_000 + 2) * 8 <= labelled_rows.MAX_BYTES
    assert wide._inputs.nbytes <= labelled_rows.MAX_BYTES
    off = LabelledRows(FEATURES, None, capacity=0)
    off.add([np.zeros(2)], [1.0])
    assert (off.snapshot()["rows"], off.evicted) == (0, 1)


def test_workers_rows_merge_into_the_newest_of_all() -> None:
    one, two = LabelledRows(FEATURES, None, capacity=2), LabelledRows(FEATURES, None, capacity=2)
    one.add([np.array([1.0, 1.0]), np.array([3.0, 3.0])], [1.0, 3.0], now=0.0)
    one.add([np.array([5.0, 5.0])], [5.0], now=5.0)  # evicts the row of time 0 (1.0)
    two.add([np.array([2.0, 2.0])], [2.0], now=2.0)
    merged = labelled_rows.merge([one.snapshot(), two.snapshot()], 2)
    assert merged["labels"] == [2.0, 5.0]
    assert merged["rows"] == 2 and merged["evicted"] == 1 + 1


@pytest.fixture
def iris_url(model: LoadedModel) -> Iterator[str]:  # noqa: F811
    plane = DataPlane(model.metadata, max_batch_size=1, labelled_rows=4)
    plane.set_model(model)
    with running(plane) as url:
        yield url


def rows(url: str, **params: str) -> requests.Response:
    return requests.get(f"{url}/v2/models/iris/feedback/rows", params=params, timeout=TIMEOUT)


def test_feedback_with_inputs_is_kept_and_read_back(iris_url: str, model: LoadedModel) -> None:  # noqa: F811
    names = model.feature_names
    by_name = dict(zip(names, [6.3, 2.9, 5.6, 1.8], strict=True))
    records = [
        {"label": "setosa", "prediction": 0, "inputs": [5.1, 3.5, 1.4, 0.2]},
        {"label": 2, "prediction": 1, "inputs": by_name},
        {"label": "versicolor", "prediction": 1},  # no inputs: counted, not kept
    ]
    assert feedback(iris_url, {"model_version": "v1", "records": records}).status_code == 200
    got = rows(iris_url).json()
    assert got["features"] == names
    assert got["inputs"] == [[5.1, 3.5, 1.4, 0.2], [6.3, 2.9, 5.6, 1.8]]
    assert got["labels"] == ["setosa", model.class_labels[2]]
    assert (got["rows"], got["capacity"], got["evicted"]) == (2, 4, 0)
    table = list(csv.reader(io.StringIO(rows(iris_url, format="csv").text)))
    assert table[0] == [*names, "label"]
    assert table[1] == ["5.1", "3.5", "1.4", "0.2", "setosa"]

    # Bounded: 4 rows, the oldest evicted and counted.
    more = [{"label": "setosa", "prediction": 0, "inputs": [float(i), 0, 0, 0]} for i in range(3)]
    assert feedback(iris_url, {"model_version": "v1", "records": more}).status_code == 200
    got = rows(iris_url).json()
    assert (got["rows"], got["evicted"]) == (4, 1)
    assert [r[0] for r in got["inputs"]] == [6.3, 0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ([1.0, 2.0], "'inputs' holds 2 values, the model has 4 features"),
        ({"x": 1.0}, "'inputs' must name exactly the model's features"),
        ([1.0, 2.0, "three", 4.0], "must be a finite number, got 'three'"),
        ([1.0, 2.0, float("inf"), 4.0], "must be a finite number"),
        ("1,2,3,4", "'inputs' must be a list or an object"),
    ],
)
def test_bad_inputs_refuse_the_request_whole(iris_url: str, inputs: object, words: str) -> None:
    before = quality_samples(iris_url)
    good = {"label": "setosa", "prediction": 0, "inputs": [5.1, 3.5, 1.4, 0.2]}
    bad = {"label": 0, "prediction": 0, "inputs": inputs}
    body = {"model_version": "v1", "records": [good, bad]}
    if isinstance(inputs, list) and float("inf") in inputs:
        # JSON has no infinity: a number too large for a float reads as one.
        text = '{"model_version": "v1", "records": [{"label": 0, "prediction": 0, '
        text += '"inputs": [1, 2, 1e999, 4]}]}'
        answer = requests.post(
            f"{iris_url}/v2/models/iris/feedback", data=text, timeout=TIMEOUT,
            headers={"Content-Type": "application/json"},
        )
    else:
        answer = feedback(iris_url, body)
    assert answer.status_code == 400
    assert words in answer.json()["error"]
    assert quality_samples(iris_url) == before  # nothing counted
    assert rows(iris_url).json()["rows"] == 0  # nothing kept
