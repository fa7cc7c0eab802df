"""The model server's quality counters: late labels through `POST
/v2/models/{name}/feedback` counted per model version (against scikit-learn's metrics on
the same rows), refused whole when one record is bad, bounded whatever clients send; the
estimated correctness and the predictions per version of what it served."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import confusion_matrix, mean_absolute_error, mean_squared_error
from sklearn.tree import DecisionTreeClassifier

from kubeloop.drift.calibration import with_model
from kubeloop.drift.profile import build_profile, load_profile
from kubeloop.modeldir import LoadedModel, ModelMetadata, TensorSpec, Writer, load_model
from kubeloop.serving import quality
from kubeloop.serving.dataplane import DataPlane, _argmax_classes, _argmax_predicts

# The module's model fixtures (the iris classifier from examples/train/train.py).
from tests.unit.test_serving import (  # noqa: F401
    TIMEOUT,
    infer,
    matrix,
    metric_samples,
    model,
    model_dir,
    running,
)

IRIS = load_iris()
IRIS_LABELS = [str(n) for n in IRIS.target_names]


def feedback(url: str, body: Any, name: str = "iris") -> requests.Response:
    return requests.post(f"{url}/v2/models/{name}/feedback", json=body, timeout=TIMEOUT)


def quality_samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        key: value
        for key, value in metric_samples(url).items()
        if key[0].startswith(("kubeloop_model_feedback", "kubeloop_model_estimated"))
    }


def confusion_from(samples: dict[Any, float], labels: list[str], version: str) -> np.ndarray:
    out = np.zeros((len(labels), len(labels)))
    for (name, key), value in samples.items():
        found = dict(key)
        if name == "kubeloop_model_feedback_confusion_total" and found["version"] == version:
            out[labels.index(found["label"]), labels.index(found["prediction"])] += value
    return out


@pytest.fixture
def iris_url(model: LoadedModel) -> Iterator[str]:  # noqa: F811
    plane = DataPlane(model.metadata, max_batch_size=1)
    plane.set_model(model)
    with running(plane) as url:
        yield url


def test_confusion_counts_match_scikit_learn(iris_url: str, model: LoadedModel) -> None:  # noqa: F811
    rows = IRIS.data[::3]
    answer = infer(iris_url, matrix(rows.tolist())).json()
    version = answer["model_version"]
    predicted = answer["outputs"][0]["data"]
    truth = IRIS.target[::3]
    # Labels as class names, predictions as the answer gave them (class values).
    records = [
        {"label": model.class_labels[t], "prediction": p}
        for t, p in zip(truth.tolist(), predicted, strict=True)
    ]
    half = len(records) // 2
    assert feedback(iris_url, {"model_version": version, "records": records[:half]}).json() == {
        "model_name": "iris",
        "counted": half,
    }
    # A record may name its version itself (here the same one).
    tail = [dict(r, model_version=version) for r in records[half:]]
    assert feedback(iris_url, {"records": tail}).status_code == 200
    got = confusion_from(quality_samples(iris_url), model.class_labels, version)
    np.testing.assert_array_equal(got, confusion_matrix(truth, predicted, labels=[0, 1, 2]))


@pytest.mark.parametrize(
    ("records", "words"),
    [
        ([{"label": "daisy", "prediction": 0}], "label 'daisy' is not one of the model's classes"),
        ([{"label": 0, "prediction": 7}], "prediction 7 is not one of"),
        ([{"label": True, "prediction": 0}], "label True is not one of"),
        ([{"label": 0}], "needs 'label' and 'prediction'"),
        (["setosa"], "records[1] must be an object"),
    ],
)
def test_one_bad_record_refuses_the_whole_batch(
    iris_url: str, records: list[Any], words: str
) -> None:
    good = {"label": "setosa", "prediction": 0}
    before = quality_samples(iris_url)
    answer = feedback(iris_url, {"model_version": "v1", "records": [good, *records, good]})
    assert answer.status_code == 400
    assert words in answer.json()["error"]
    assert quality_samples(iris_url) == before  # nothing half-counted


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"records": [{"label": 0, "prediction": 0}]}, "'model_version' is missing"),
        ({"model_version": "", "records": [{"label": 0, "prediction": 0}]}, "non-empty string"),
        ({"model_version": "v" * 200, "records": [{"label": 0, "prediction": 0}]}, "at most 128"),
        ({"model_version": "v1", "records": []}, "'records' must be a non-empty list"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_feedback_bodies_are_refused(iris_url: str, body: Any, words: str) -> None:
    answer = feedback(iris_url, body)
    assert answer.status_code == 400 and words in answer.json()["error"], answer.text
    assert not [k for k in quality_samples(iris_url) if k[0].startswith("kubeloop_model_feedback")]


def test_feedback_for_another_model_is_not_found(iris_url: str) -> None:
    answer = feedback(iris_url, {"model_version": "v1", "records": []}, name="roses")
    assert answer.status_code == 404


def test_memory_stays_bounded_whatever_versions_arrive(iris_url: str, model: LoadedModel) -> None:  # noqa: F811
    own = infer(iris_url, matrix([[5.1, 3.5, 1.4, 0.2]])).json()["model_version"]
    record = {"label": "setosa", "prediction": 0}
    assert feedback(iris_url, {"model_version": own, "records": [record]}).status_code == 200
    for start in range(0, 100, quality.MAX_BATCH_VERSIONS):
        records = [
            dict(record, model_version=f"v{i}")
            for i in range(start, start + quality.MAX_BATCH_VERSIONS)
        ]
        assert feedback(iris_url, {"records": records}).status_code == 200
    too_many = [dict(record, model_version=f"w{i}") for i in range(quality.MAX_BATCH_VERSIONS + 1)]
    assert feedback(iris_url, {"records": too_many}).status_code == 400
    versions = {
        dict(key)["version"]
        for (name, key) in quality_samples(iris_url)
        if name == "kubeloop_model_feedback_confusion_total"
    }
    assert len(versions) == quality.MAX_VERSIONS
    assert own in versions  # this server's own version is never the one that gives way
    # The 15 most recently counted others stay (v89..v103); the older ones gave way.
    assert {f"v{i}" for i in range(89, 104)} <= versions and "v88" not in versions
    # Counted again, the oldest of them is the most recent: the next new version takes
    # the place of the least recently counted one (v90), not of the first one made.
    assert feedback(iris_url, {"records": [dict(record, model_version="v89")]}).ok
    assert feedback(iris_url, {"records": [dict(record, model_version="x1")]}).ok
    versions = {
        dict(key)["version"]
        for (name, key) in quality_samples(iris_url)
        if name == "kubeloop_model_feedback_confusion_total"
    }
    assert {"v89", "x1", own} <= versions and "v90" not in versions, sorted(versions)


def test_estimated_correctness_sums_the_calibration(iris_url: str, model: LoadedModel) -> None:  # noqa: F811
    assert model.profile is not None and model.profile.calibration is not None
    rows = IRIS.data[1::4]
    version = infer(iris_url, matrix(rows.tolist())).json()["model_version"]
    samples = metric_samples(iris_url)
    key = frozenset({("model", "iris"), ("version", version)})
    top = model.estimator.predict_proba(rows).max(axis=1)
    expected = model.profile.calibration.expected(top).sum()
    assert samples[("kubeloop_model_estimated_answers_total", key)] == len(rows)
    assert samples[("kubeloop_model_estimated_correct_total", key)] == pytest.approx(expected)


# -- a regressor ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    data = load_diabetes()
    x, y = data.data[:300], data.target[:300]
    estimator = LinearRegression().fit(x, y)
    names = [f"f{i}" for i in range(x.shape[1])]
    out = tmp_path_factory.mktemp("regressor")
    with Writer(out) as writer:
        writer.estimator(estimator)
        profile = build_profile({n: x[:, i] for i, n in enumerate(names)})
        writer.profile(with_model(profile, estimator, data.data[300:]))
        writer.metadata(
            ModelMetadata(
                name="diabetes",
                version="r1",
                framework="scikit-learn",
                inputs=[TensorSpec(name=n, datatype="FP64", shape=[-1]) for n in names],
                outputs=[TensorSpec(name="predict", datatype="FP64", shape=[-1])],
                created=datetime.now(UTC).isoformat(),
            )
        )
    return load_model(out)


def test_regression_sums_match_scikit_learn(regressor: LoadedModel) -> None:
    data = load_diabetes()
    rows, truth = data.data[300:360], data.target[300:360]
    plane = DataPlane(regressor.metadata, max_batch_size=1)
    plane.set_model(regressor)
    with running(plane) as url:
        body = {
            "inputs": [
                {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
            ]
        }
        answer = infer(url, body, model="diabetes").json()
        predicted = np.array(answer["outputs"][0]["data"])
        records = [
            {"label": t, "prediction": p} for t, p in zip(truth.tolist(), predicted, strict=True)
        ]
        assert feedback(url, {"model_version": "r1", "records": records}, "diabetes").ok
        bad = feedback(
            url, {"model_version": "r1", "records": [{"label": "x", "prediction": 1}]}, "diabetes"
        )
        assert bad.status_code == 400 and "finite number" in bad.json()["error"]
        samples = metric_samples(url)
    key = frozenset({("model", "diabetes"), ("version", "r1")})
    n = samples[("kubeloop_model_feedback_total", key)]
    assert n == len(truth)
    assert samples[("kubeloop_model_feedback_error_sum", key)] == pytest.approx(
        (predicted - truth).sum()
    )
    mse = samples[("kubeloop_model_feedback_squared_error_total", key)] / n
    mae = samples[("kubeloop_model_feedback_absolute_error_total", key)] / n
    assert mse == pytest.approx(mean_squared_error(truth, predicted))
    assert mae == pytest.approx(mean_absolute_error(truth, predicted))
    # The predicted values on the profile's prediction bins (prediction drift).
    reference = regressor.profile.predictions if regressor.profile else None
    assert reference is not None and reference.kind == "numeric"
    counts = np.bincount(reference.assign(predicted), minlength=reference.bins)
    for le, cumulative in zip(reference.bin_labels(), np.cumsum(counts), strict=True):
        bucket = frozenset({*key, ("le", le)})
        assert samples[("kubeloop_model_prediction_value_bucket", bucket)] == cumulative


def test_kubeloop_profile_with_a_model_and_labels(
    tmp_path: Path,
    model: LoadedModel,  # noqa: F811
    model_dir: Path,  # noqa: F811
) -> None:
    from tests.unit.test_drift_cli import run

    data = tmp_path / "holdout.csv"
    with data.open("w") as out:
        out.write(",".join([*model.feature_names, "species"]) + "\n")
        for row, target in zip(IRIS.data, IRIS.target, strict=True):
            out.write(",".join([*map(str, row), IRIS.target_names[target]]) + "\n")
    output = tmp_path / "profile.json"
    assert run("profile", data, "--model", model_dir, "--label", "species", "-o", output) == 0
    profile = load_profile(output)
    assert profile.names == model.feature_names  # the label is no feature
    predicted = model.estimator.predict(IRIS.data)
    assert profile.predictions is not None and profile.calibration is not None
    assert profile.predictions.counts == [*np.bincount(predicted, minlength=3).tolist(), 0]
    assert profile.calibration.accuracy == pytest.approx((predicted == IRIS.target).mean())
    # Labels that are not the model's classes are refused.
    data.write_text(data.read_text().replace("setosa", "daisy"))
    assert run("profile", data, "--model", model_dir, "--label", "species", "-o", output) == 2


def test_the_feedback_examples_of_the_docs_are_counted(iris_url: str) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    (body,) = re.findall(r"```json feedback\n(\{.*?\})\n```", doc, re.S)
    (curl,) = re.findall(r"/v2/models/iris/feedback .*?-d '(\{.*?\})'\n```", doc, re.S)
    assert feedback(iris_url, json.loads(body)).json()["counted"] == 3
    assert feedback(iris_url, json.loads(curl)).json()["counted"] == 1
    samples = quality_samples(iris_url)
    assert confusion_from(samples, IRIS_LABELS, "dabe4fcd1fa3").sum() == 3
    assert confusion_from(samples, IRIS_LABELS, "0c1e22a90b41").sum() == 1


def test_without_monitoring_labels_count_and_nothing_is_estimated(model: LoadedModel) -> None:  # noqa: F811
    plane = DataPlane(model.metadata, monitoring=False, max_batch_size=1)
    plane.set_model(model)
    with running(plane) as url:
        body = dict(matrix([[5.1, 3.5, 1.4, 0.2]]), parameters={"probabilities": True})
        version = infer(url, body).json()["model_version"]
        assert feedback(
            url, {"model_version": version, "records": [{"label": 0, "prediction": 0}]}
        ).ok
        names = {name for name, _ in quality_samples(url)}
    assert names == {"kubeloop_model_feedback_confusion_total"}


ESTIMATORS = {
    "forest": lambda: RandomForestClassifier(n_estimators=4, random_state=0),
    "tree": lambda: DecisionTreeClassifier(max_depth=3, random_state=0),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=5, random_state=0),
    "hist-boosting": lambda: HistGradientBoostingClassifier(max_iter=5),
    "logistic": lambda: LogisticRegression(),
}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_the_class_taken_from_the_probabilities_is_what_predict_answers(
    kind: str, classes: int
) -> None:
    """With estimation on, a batch's probabilities give its classes (one model call,
    not two): exactly predict's answers, its ties included (few trees tie often)."""
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(3000, 4)).round(1)  # coarse values: tied leaves and scores
    y = (x[:, 0] + rng.normal(size=3000) > 0).astype(int) + (classes == 3) * (x[:, 1] > 0.5)
    estimator = ESTIMATORS[kind]().fit(x[:1000], y[:1000])
    assert _argmax_predicts(estimator)
    loaded = LoadedModel(
        metadata=None,  # type: ignore[arg-type]
        profile=None,
        estimator=estimator,
        allow_nan=False,
        classes=estimator.classes_,
        class_labels=[str(c) for c in estimator.classes_],
    )
    got = _argmax_classes(loaded, x, estimator.predict_proba(x))
    np.testing.assert_array_equal(got, estimator.predict(x))
    assert got.dtype == estimator.predict(x).dtype


def test_a_tie_is_left_to_predict() -> None:
    # Balanced classes and no learning: every raw score is 0, every probability 0.5;
    # gradient boosting answers class 1 there (raw >= 0), the argmax would say 0.
    x = np.arange(20.0).reshape(10, 2)
    estimator = GradientBoostingClassifier(n_estimators=1, learning_rate=0.0).fit(x, [0, 1] * 5)
    proba = estimator.predict_proba(x)
    assert (proba == 0.5).all() and (estimator.predict(x) == 1).all()
    loaded = LoadedModel(
        metadata=None,  # type: ignore[arg-type]
        profile=None,
        estimator=estimator,
        allow_nan=False,
        classes=estimator.classes_,
        class_labels=["0", "1"],
    )
    np.testing.assert_array_equal(_argmax_classes(loaded, x, proba), [1] * 10)


# -- a classifier whose classes are booleans ----------------------------------------------


def test_a_boolean_classifier_takes_json_true_and_false_as_its_classes(
    tmp_path: Path,
) -> None:
    """Its answers hold JSON true/false, so the labels a client sends back are those: both
    counted as the classes they are, while 1 and 0 are refused (never read as True)."""
    x, y = IRIS.data, IRIS.target == 0
    names = [f"f{i}" for i in range(x.shape[1])]
    with Writer(tmp_path) as writer:
        writer.estimator(LogisticRegression(max_iter=500).fit(x, y))
        writer.profile(build_profile({n: x[:, i] for i, n in enumerate(names)}))
        writer.metadata(
            ModelMetadata(
                name="setosa",
                version="b1",
                framework="scikit-learn",
                inputs=[TensorSpec(name=n, datatype="FP64", shape=[-1]) for n in names],
                outputs=[TensorSpec(name="predict", datatype="BOOL", shape=[-1])],
                created=datetime.now(UTC).isoformat(),
            )
        )
    loaded = load_model(tmp_path)
    plane = DataPlane(loaded.metadata, max_batch_size=1)
    plane.set_model(loaded)
    rows, truth = x[::5], y[::5]
    with running(plane) as url:
        answer = infer(url, matrix(rows.tolist()), model="setosa").json()
        predicted = answer["outputs"][0]["data"]
        assert {type(p) for p in predicted} == {bool}
        records = [
            {"label": t, "prediction": p} for t, p in zip(truth.tolist(), predicted, strict=True)
        ]
        sent = feedback(url, {"model_version": "b1", "records": records}, "setosa")
        assert sent.status_code == 200, sent.text
        refused = feedback(
            url, {"model_version": "b1", "records": [{"label": 1, "prediction": True}]}, "setosa"
        )
        assert refused.status_code == 400
        assert "label 1 is not one of the model's classes" in refused.json()["error"]
        samples = quality_samples(url)
    got = confusion_from(samples, loaded.class_labels, "b1")
    np.testing.assert_array_equal(
        got, confusion_matrix(truth, np.array(predicted), labels=[False, True])
    )
