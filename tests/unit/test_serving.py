"""The model server over real HTTP on 127.0.0.1, serving a model trained by the example
training script."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kubeloop.drift.profile import FeatureProfile, Profile
from kubeloop.modeldir import (
    MODEL_FILE,
    LoadedModel,
    ModelLoadError,
    load_model,
    read_metadata,
)
from kubeloop.serving.dataplane import INLINE_MAX_ROWS, DataPlane
from kubeloop.serving.livestats import BIN_CHUNK_ROWS, LiveStats
from kubeloop.serving.rest import MAX_BODY_BYTES, base_url, start
from tests.kubetest import wait_for

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train" / "train.py"
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
TIMEOUT = 10


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "operator"), env.get("PYTHONPATH")) if p
    )
    return env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    subprocess.run(
        [sys.executable, str(TRAIN), "--output", str(out), "--n-estimators", "20"],
        check=True,
        env=subprocess_env(),
        capture_output=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir)


@contextmanager
def running(server: DataPlane) -> Iterator[str]:
    """Serve on an ephemeral port from an event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(server, "127.0.0.1", 0), loop).result(TIMEOUT)
    try:
        yield base_url(runner.addresses[0])
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()


@pytest.fixture
def server(model: LoadedModel) -> DataPlane:
    server = DataPlane(model.metadata)
    server.set_model(model)
    return server


@pytest.fixture
def url(server: DataPlane) -> Iterator[str]:
    with running(server) as base:
        yield base


def infer(url: str, body: Any, model: str = "iris") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{url}/v2/models/{model}/infer", data=data, timeout=TIMEOUT)


def matrix(rows: Sequence[Sequence[float]], datatype: str = "FP64") -> dict[str, Any]:
    return {
        "inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": datatype, "data": rows}]
    }


def metric_samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(f"{url}/metrics", timeout=TIMEOUT).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


# -- health and metadata --------------------------------------------------------------


def test_health_and_server_metadata(url: str) -> None:
    assert requests.get(f"{url}/v2/health/live", timeout=TIMEOUT).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=TIMEOUT).json() == {"ready": True}
    assert requests.get(f"{url}/v2/models/iris/ready", timeout=TIMEOUT).status_code == 200
    meta = requests.get(f"{url}/v2", timeout=TIMEOUT).json()
    assert meta["name"] == "kubeloop"
    assert meta["extensions"] == ["binary_tensor_data"]


def test_not_ready_until_the_model_is_set(model: LoadedModel) -> None:
    server = DataPlane(model.metadata)
    with running(server) as url:
        assert requests.get(f"{url}/v2/health/live", timeout=TIMEOUT).status_code == 200
        assert requests.get(f"{url}/v2/health/ready", timeout=TIMEOUT).status_code == 503
        assert requests.get(f"{url}/v2/models/iris/ready", timeout=TIMEOUT).status_code == 503
        response = infer(url, matrix(ROWS))
        assert response.status_code == 503
        assert "loading" in response.json()["error"]
        server.set_model(model)
        assert requests.get(f"{url}/v2/health/ready", timeout=TIMEOUT).status_code == 200
        assert infer(url, matrix(ROWS)).status_code == 200


def test_model_metadata(url: str, model: LoadedModel) -> None:
    version = model.metadata.version
    for path in ("/v2/models/iris", f"/v2/models/iris/versions/{version}"):
        meta = requests.get(url + path, timeout=TIMEOUT).json()
        assert meta["name"] == "iris"
        assert meta["versions"] == [version]
        assert meta["platform"] == "scikit-learn"
        assert [i["name"] for i in meta["inputs"]] == FEATURES
        assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
        assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]


def test_served_under_another_name(model: LoadedModel) -> None:
    server = DataPlane(model.metadata, name="flowers")
    server.set_model(model)
    with running(server) as url:
        assert requests.get(f"{url}/v2/models/flowers", timeout=TIMEOUT).json()["name"] == (
            "flowers"
        )
        assert infer(url, matrix(ROWS), model="flowers").json()["model_name"] == "flowers"
        assert infer(url, matrix(ROWS), model="iris").status_code == 404


def test_the_json_requests_of_the_docs_get_the_answers_the_docs_show(
    model: LoadedModel,
) -> None:
    """docs/serving.md's curl examples, sent as written to a server named as the
    ModelDeployment (`flowers`): the answers have the outputs and predictions shown."""
    doc = (REPO / "docs" / "serving.md").read_text()
    bodies = re.findall(r"/v2/models/(\w+)/infer -d '(\{.*?\})'\n```", doc, re.S)
    answers = [json.loads(a) for a in re.findall(r"```json\n(\{.*?\})\n```", doc, re.S)]
    assert len(bodies) == len(answers) == 2
    server = DataPlane(model.metadata, name="flowers")
    server.set_model(model)
    with running(server) as url:
        for (name, body), shown in zip(bodies, answers, strict=True):
            assert name == "flowers"
            got = infer(url, json.loads(body), model=name)
            assert got.status_code == 200, got.text
            answer = got.json()
            assert answer["model_name"] == shown["model_name"]
            assert [(o["name"], o["shape"]) for o in answer["outputs"]] == [
                (o["name"], o["shape"]) for o in shown["outputs"]
            ]
            assert answer["outputs"][0]["data"] == shown["outputs"][0]["data"]


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v2/models/nope", 404, "model 'nope' not found: this server serves 'iris'"),
        ("GET", "/v2/models/nope/ready", 404, "model 'nope' not found: this server serves 'iris'"),
        ("GET", "/v2/models/iris/versions/0", 404, "model 'iris' has no version '0'"),
        ("POST", "/v2/models/iris/versions/0/infer", 404, "model 'iris' has no version '0'"),
        ("GET", "/v2/nothing-here", 404, "Not Found"),
        ("GET", "/v2/models/iris/infer", 405, "Method Not Allowed"),
    ],
)
def test_unknown_paths_get_v2_errors(
    url: str, method: str, path: str, status: int, error: str
) -> None:
    response = requests.request(method, url + path, data=b"{}", timeout=TIMEOUT)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"].startswith(error)
    if "has no version" in error:  # and it says which version it serves
        assert response.json()["error"].startswith(error + ": it serves '")


# -- inference ------------------------------------------------------------------------


def test_infer_matrix_nested_and_flat(url: str, model: LoadedModel) -> None:
    expected = model.estimator.predict(np.array(ROWS)).tolist()
    assert len(set(expected)) == 3, "the rows were picked to cover every class"
    nested = infer(url, {**matrix(ROWS), "id": "req-1"})
    assert nested.status_code == 200
    body = nested.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == model.metadata.version
    assert body["id"] == "req-1"
    assert body["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [3], "data": expected}
    ]
    flat = matrix(ROWS)
    flat["inputs"][0]["data"] = [v for row in ROWS for v in row]
    assert infer(url, flat).json()["outputs"][0]["data"] == expected
    assert "id" not in infer(url, flat).json()


@pytest.mark.parametrize("column_shape", ["[N]", "[N, 1]"])
def test_infer_one_tensor_per_feature(url: str, model: LoadedModel, column_shape: str) -> None:
    columns = np.array(ROWS).T
    inputs = []
    for name, column in zip(reversed(FEATURES), reversed(columns), strict=True):
        shape = [len(ROWS)] if column_shape == "[N]" else [len(ROWS), 1]
        inputs.append({"name": name, "shape": shape, "datatype": "FP64", "data": column.tolist()})
    response = infer(url, {"inputs": inputs})
    assert response.status_code == 200, response.text
    expected = model.estimator.predict(np.array(ROWS)).tolist()
    assert response.json()["outputs"][0]["data"] == expected


@pytest.mark.parametrize("datatype", ["FP32", "INT64"])
def test_infer_other_datatypes(url: str, model: LoadedModel, datatype: str) -> None:
    rows = [[5, 3, 1, 0], [7, 3, 5, 2]]
    response = infer(url, matrix(rows, datatype))
    assert response.status_code == 200, response.text
    expected = model.estimator.predict(np.array(rows, dtype=np.float64)).tolist()
    assert response.json()["outputs"][0]["data"] == expected


def test_probabilities_by_parameter_or_by_output_name(url: str, model: LoadedModel) -> None:
    expected = model.estimator.predict_proba(np.array(ROWS))
    by_parameter = infer(url, {**matrix(ROWS), "parameters": {"probabilities": True}}).json()
    assert [o["name"] for o in by_parameter["outputs"]] == ["predict", "predict_proba"]
    proba = by_parameter["outputs"][1]
    assert proba["shape"] == [3, 3]
    assert proba["datatype"] == "FP64"
    np.testing.assert_allclose(np.reshape(proba["data"], (3, 3)), expected)
    by_name = infer(url, {**matrix(ROWS), "outputs": [{"name": "predict_proba"}]}).json()
    assert [o["name"] for o in by_name["outputs"]] == ["predict_proba"]
    np.testing.assert_allclose(np.reshape(by_name["outputs"][0]["data"], (3, 3)), expected)


def test_large_batch_goes_through_the_worker_thread(url: str, model: LoadedModel) -> None:
    rows = np.tile(np.array(ROWS), (INLINE_MAX_ROWS, 1))
    response = infer(url, matrix(rows.tolist()))
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == model.estimator.predict(rows).tolist()


def too_deep() -> bytes:
    return b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def with_input(**changes: Any) -> dict[str, Any]:
    body = matrix(ROWS[:2])
    body["inputs"][0].update(changes)
    return body


def per_feature(lengths: list[int]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "shape": [n], "datatype": "FP64", "data": [1.0] * n}
            for name, n in zip(FEATURES, lengths, strict=False)
        ]
    }


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("truncated JSON", b'{"inputs": [', "the request body is not valid JSON"),
    ("not UTF-8", b'{"inputs": "\xff"}', "the request body is not valid JSON"),
    ("deeply nested", too_deep(), "the request body is not valid JSON"),
    ("not an object", [1, 2], "the request body must be a JSON object"),
    ("no inputs", {"id": "x"}, "'inputs' must be a non-empty list of tensors"),
    ("empty inputs", {"inputs": []}, "'inputs' must be a non-empty list of tensors"),
    ("input not an object", {"inputs": [3]}, "inputs[0] must be an object"),
    ("no name", {"inputs": [{"shape": [1]}]}, "inputs[0]: 'name' must be a string"),
    ("bad datatype", with_input(datatype="BYTES"), "datatype 'BYTES' not supported"),
    ("bad shape", with_input(shape=[2, -4]), "'shape' must be a list of non-negative"),
    ("no data", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64"}]}, "'data'"),
    ("wrong width", with_input(shape=[2, 3], data=[1.0] * 6), "shape must be [N, 4]"),
    ("3-D", with_input(shape=[2, 2, 2], data=[1.0] * 8), "shape must be [N, 4]"),
    ("shape vs data", with_input(shape=[3, 4]), "shape [3, 4] needs 12 values, got 8"),
    ("ragged", with_input(data=[[1.0, 2.0], [3.0]]), "'data' is not a regular array"),
    ("strings", with_input(data=[["1.0"] * 4] * 2), "must hold only numbers for datatype"),
    ("booleans", with_input(data=[[True] * 4] * 2), "must hold only numbers"),
    ("nulls", with_input(data=[[None] * 4] * 2), "must hold only numbers"),
    ("floats as INT64", with_input(datatype="INT64"), "must hold only integers for datatype"),
    (
        "NaN",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, NaN]}]}',
        "this model does not accept NaN",
    ),
    (
        "Infinity",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", '
        b'"data": [1, 2, 3, Infinity]}]}',
        "inputs must be finite numbers",
    ),
    ("FP32 overflow", with_input(datatype="FP32", data=[[1e39] * 4] * 2), "finite"),
    ("empty batch", with_input(shape=[0, 4], data=[]), "the batch is empty"),
    ("id not a string", {**matrix(ROWS), "id": 7}, "'id' must be a string"),
    ("parameters not an object", {**matrix(ROWS), "parameters": []}, "'parameters'"),
    ("unknown output", {**matrix(ROWS), "outputs": [{"name": "x"}]}, "unknown output 'x'"),
    ("outputs not a list", {**matrix(ROWS), "outputs": {}}, "'outputs' must be"),
    ("missing feature", per_feature([2, 2, 2]), "missing inputs for features: petal_width"),
    ("uneven columns", per_feature([2, 2, 2, 3]), "the same number of rows"),
    (
        "2-D column",
        {
            "inputs": [
                {"name": f, "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}
                for f in FEATURES
            ]
        },
        "[N] or [N, 1]",
    ),
    (
        "two matrices",
        {"inputs": [matrix(ROWS)["inputs"][0], {**matrix(ROWS)["inputs"][0], "name": "b"}]},
        "expected one",
    ),
    ("duplicate names", {"inputs": [matrix(ROWS)["inputs"][0]] * 2}, "names must be unique"),
]


def test_bad_requests_get_400_and_the_server_stays_up(url: str) -> None:
    for case, body, error in BAD_REQUESTS:
        response = infer(url, body)
        assert response.status_code == 400, (case, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert set(response.json()) == {"error"}
        assert error in response.json()["error"], case
    assert infer(url, matrix(ROWS)).status_code == 200
    samples = metric_samples(url)
    assert sample(samples, "kubeloop_model_requests_total", model="iris", status="400") == len(
        BAD_REQUESTS
    )
    assert sample(samples, "kubeloop_model_requests_total", model="iris", status="200") == 1
    assert sample(samples, "kubeloop_model_request_duration_seconds_count", model="iris") == (
        len(BAD_REQUESTS) + 1
    )


def test_body_too_large_gets_413(url: str) -> None:
    response = infer(url, b" " * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert infer(url, matrix(ROWS)).status_code == 200


def test_unknown_model_is_counted_as_404(url: str) -> None:
    response = infer(url, matrix(ROWS), model="nope")
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' not found: this server serves 'iris'"}
    samples = metric_samples(url)
    assert sample(samples, "kubeloop_model_requests_total", model="iris", status="404") == 1


class Exploding:
    classes_ = np.array([0, 1, 2])

    def predict(self, rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def test_failing_predict_gets_500_is_logged_and_the_server_stays_up(
    model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    server = DataPlane(model.metadata)
    server.set_model(dataclasses.replace(model, estimator=Exploding()))
    with running(server) as url, caplog.at_level(logging.ERROR):
        for _ in range(2):
            response = infer(url, matrix(ROWS))
            assert response.status_code == 500
            assert "internal error" in response.json()["error"]
        assert requests.get(f"{url}/v2/health/live", timeout=TIMEOUT).status_code == 200
        samples = metric_samples(url)
    assert sample(samples, "kubeloop_model_requests_total", model="iris", status="500") == 2
    assert any("boom" in r.exc_text for r in caplog.records if r.exc_text)


# -- metrics --------------------------------------------------------------------------


def test_feature_histograms_count_exactly_on_the_profile_edges(
    url: str, model: LoadedModel
) -> None:
    assert model.profile is not None
    first = model.profile.feature(FEATURES[0])
    # One value exactly on an edge (le is inclusive), one below all, one above all.
    rows = np.array(ROWS * 2)
    rows[:3, 0] = [first.edges[2], first.edges[0] - 1.0, first.edges[-1] + 1.0]
    assert infer(url, matrix(rows.tolist())).status_code == 200
    assert infer(url, matrix(rows[:1].tolist())).status_code == 200
    seen = np.vstack([rows, rows[:1]])

    samples = metric_samples(url)
    # Each series says the version it counts for: during a rollout pods of two models,
    # each on its own reference's edges, are told apart by it (docs/quality.md).
    version = model.metadata.version
    for column, name in enumerate(FEATURES):
        feature = model.profile.feature(name)
        buckets = [
            sample(
                samples,
                "kubeloop_model_feature_bucket",
                model="iris",
                version=version,
                feature=name,
                le=le,
            )
            for le in feature.bin_labels()
        ]
        # What le means, computed without the server's binning.
        expected = [float((seen[:, column] <= e).sum()) for e in feature.edges] + [7.0]
        assert buckets == expected, name
        assert (
            sample(
                samples, "kubeloop_model_feature_count", model="iris", version=version, feature=name
            )
            == 7
        )
        assert sample(
            samples, "kubeloop_model_feature_sum", model="iris", version=version, feature=name
        ) == pytest.approx(seen[:, column].sum())
    assert [float(le) for le in first.bin_labels()[:-1]] == first.edges
    bucket_of_edge = sample(
        samples,
        "kubeloop_model_feature_bucket",
        model="iris",
        version=version,
        feature=FEATURES[0],
        le=first.bin_labels()[2],
    )
    assert bucket_of_edge - sample(
        samples,
        "kubeloop_model_feature_bucket",
        model="iris",
        version=version,
        feature=FEATURES[0],
        le=first.bin_labels()[1],
    ) == float(((seen[:, 0] > first.edges[1]) & (seen[:, 0] <= first.edges[2])).sum())

    predicted = model.estimator.predict(seen)
    assert model.class_labels == ["setosa", "versicolor", "virginica"]
    assert model.classes is not None
    for index, label in enumerate(model.class_labels):
        assert sample(
            samples,
            "kubeloop_model_prediction_total",
            model="iris",
            version=model.metadata.version,
            **{"class": label},
        ) == int((predicted == model.classes[index]).sum())


def test_no_monitoring_exports_no_feature_histograms(model: LoadedModel) -> None:
    server = DataPlane(model.metadata, monitoring=False)
    server.set_model(model)
    with running(server) as url:
        assert infer(url, matrix(ROWS)).status_code == 200
        text = requests.get(f"{url}/metrics", timeout=TIMEOUT).text
    assert "kubeloop_model_feature" not in text
    version = model.metadata.version
    assert (
        f'kubeloop_model_prediction_total{{class="setosa",model="iris",version="{version}"}} 1.0'
        in text
    )


def test_live_stats_bins_like_the_profile(model: LoadedModel) -> None:
    """The broadcast binning agrees with ``FeatureProfile.assign`` everywhere: on
    edges, between them, outside them, on NaN, across chunk boundaries."""
    assert model.profile is not None
    rng = np.random.default_rng(7)
    n = BIN_CHUNK_ROWS + 123
    rows = rng.normal(loc=4.0, scale=2.5, size=(n, 4))
    for column, name in enumerate(FEATURES):
        edges = model.profile.feature(name).edges
        rows[: len(edges), column] = edges
    rows[5, 1] = np.nan
    stats = LiveStats("iris", dataclasses.replace(model, allow_nan=True), monitoring=True)
    stats.observe(rows, model.estimator.predict(np.nan_to_num(rows)))
    for index, feature in enumerate(stats.numeric):
        start = stats.offsets[index]
        got = stats.bin_counts[start : start + feature.bins]
        expected = np.bincount(
            feature.assign(rows[:, index])[~np.isnan(rows[:, index])], minlength=feature.bins
        )
        np.testing.assert_array_equal(got, expected)
        assert stats.sums[index] == pytest.approx(np.nansum(rows[:, index]))


def test_categorical_features_count_per_category(model: LoadedModel) -> None:
    assert model.profile is not None
    colour = FeatureProfile(
        name=FEATURES[3], kind="categorical", categories=["0", "1.5", "2"], counts=[1, 1, 1, 0]
    )
    profile = Profile(
        rows=3, features=[*(f for f in model.profile.features if f.name != colour.name), colour]
    )
    stats = LiveStats("iris", dataclasses.replace(model, profile=profile), monitoring=True)
    rows = np.array([[5.0, 3.0, 1.0, v] for v in (0.0, 2.0, 2.0, 1.5, 7.0)])
    stats.observe(rows, model.estimator.predict(rows))
    family = next(f for f in stats.collect() if f.name == "kubeloop_model_feature_category")
    counts = {s.labels["category"]: s.value for s in family.samples}
    assert counts == {"0": 1, "1.5": 1, "2": 2, "__other__": 1}
    assert {s.labels["version"] for s in family.samples} == {model.metadata.version}
    assert [f.name for f in stats.numeric] == FEATURES[:3]


# -- loading --------------------------------------------------------------------------


def test_load_errors_name_the_file(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.json"):
        read_metadata(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"(?s)model\.json.*name.*Field required"):
        read_metadata(tmp_path)
    (tmp_path / "model.json").write_bytes((model_dir / "model.json").read_bytes())
    (tmp_path / MODEL_FILE).write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="cannot unpickle"):
        load_model(tmp_path)
    metadata = read_metadata(model_dir)
    fewer = metadata.model_copy(update={"inputs": metadata.inputs[:3]})
    with pytest.raises(ModelLoadError, match="takes 4 features"):
        load_model(model_dir, fewer)


# -- the command ----------------------------------------------------------------------


SERVE_SCRIPT = (
    "import argparse, sys\n"
    "from kubeloop.serving.cli import add_commands\n"
    "parser = argparse.ArgumentParser()\n"
    "add_commands(parser.add_subparsers(required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def test_serve_command_serves_until_sigterm(model_dir: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, "serve", "--model-dir", str(model_dir)],
        env=subprocess_env(KUBELOOP_HOST="127.0.0.1", KUBELOOP_PORT="0"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "Started listening on" not in line:
            assert time.monotonic() < deadline and process.poll() is None, line
            line = process.stderr.readline()
        url = json.loads(line)["message"].removeprefix("Started listening on ")

        def ready() -> bool:
            return requests.get(f"{url}/v2/health/ready", timeout=TIMEOUT).status_code == 200

        wait_for(ready, 60, "the server ready")
        assert infer(url, matrix(ROWS)).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_command_fails_on_a_bad_model_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, "serve", "--model-dir", str(tmp_path), "--port", "0"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "model.json" in result.stderr


def test_profile_route_serves_the_models_reference(url: str, model: LoadedModel) -> None:
    from kubeloop.drift.reference import ReferenceInvalid, profile_from_server

    assert model.profile is not None
    served = profile_from_server(url, "iris")
    assert served == model.profile
    assert [f.name for f in served.features] == FEATURES
    missing = requests.get(f"{url}/v2/models/other/profile", timeout=TIMEOUT)
    assert missing.status_code == 404
    with pytest.raises(ReferenceInvalid, match="HTTP 404"):
        profile_from_server(url, "other")
