"""`kubeloop evaluate`: metrics equal scikit-learn's, the gate's decision table, the
data errors, and the command end to end on models trained by examples/train/train.py."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeClassifier

from kubeloop.cli import main as kubeloop
from kubeloop.evaluation import EvaluationError
from kubeloop.evaluation.command import (
    TERMINATION_MESSAGE_LIMIT,
    error_message,
    evaluate,
    termination_message,
)
from kubeloop.evaluation.data import read_table, resolve_label_column, select
from kubeloop.evaluation.gate import decide
from kubeloop.evaluation.metrics import METRICS, direction, score
from kubeloop.modeldir import (
    METADATA_FILE,
    MODEL_FILE,
    LoadedModel,
    ModelMetadata,
    TensorSpec,
    load_model,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "train"))
from make_data import write_iris_csv  # noqa: E402  (example scripts, not a package)

from train import main as train_main  # noqa: E402

# Class values 0, 1, 2 named out of alphabetical order: column order and label order
# differ, which is what log_loss's and roc_auc_score's labels= must get right.
NAMES = ["virginica", "setosa", "versicolor"]


def metadata(features: list[str], classes: list[str], **extra: Any) -> ModelMetadata:
    return ModelMetadata(
        name="m",
        version="1",
        framework="scikit-learn",
        inputs=[TensorSpec(name=f, datatype="FP64", shape=[-1]) for f in features],
        outputs=[],
        classes=classes,
        created="2024-01-01T00:00:00+00:00",
        **extra,
    )


def write_model(
    path: Path, estimator: Any, features: list[str], classes: list[str], **extra: Any
) -> Path:
    """A model directory as train.py writes one: model.joblib, model.json, manifest."""
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, path / MODEL_FILE)
    (path / METADATA_FILE).write_text(metadata(features, classes, **extra).model_dump_json())
    write_manifest(path)
    return path


def loaded(tmp_path: Path, estimator: Any, features: list[str], classes: list[str]) -> LoadedModel:
    return load_model(write_model(tmp_path / "model", estimator, features, classes))


@pytest.fixture()
def three_classes(tmp_path: Path) -> tuple[LoadedModel, np.ndarray, np.ndarray]:
    """A noisy 3-class logistic regression and 60 rows to score it on."""
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 2)) + y[:, None] * 0.8
    model = loaded(tmp_path, LogisticRegression().fit(x, y), ["a", "b"], NAMES)
    test_y = np.tile([0, 1, 2], 20)
    test_x = rng.normal(size=(60, 2)) + test_y[:, None] * 0.8
    return model, test_x, test_y


def names(indices: np.ndarray) -> np.ndarray:
    return np.asarray(NAMES)[indices]


# --- metrics ------------------------------------------------------------------------


def test_multiclass_metrics_equal_scikit_learn(three_classes: Any) -> None:
    model, x, y = three_classes
    predicted = model.estimator.predict(x)
    proba = model.estimator.predict_proba(x)
    labels = names(y)
    assert score(model, "accuracy", x, labels) == skm.accuracy_score(y, predicted)
    assert score(model, "f1", x, labels) == pytest.approx(
        skm.f1_score(y, predicted, average="macro")
    )
    assert score(model, "log_loss", x, labels) == pytest.approx(skm.log_loss(y, proba))
    assert score(model, "roc_auc", x, labels) == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr")
    )
    # The metric sees something to tell apart: not a perfect model.
    assert 0.4 < score(model, "accuracy", x, labels) < 1.0


def test_a_class_missing_from_the_data_shifts_no_column(three_classes: Any) -> None:
    model, x, y = three_classes
    keep = y != 1  # no "setosa" rows
    x, y = x[keep], y[keep]
    predicted = model.estimator.predict(x)
    proba = model.estimator.predict_proba(x)
    labels = names(y)
    assert set(labels) == {"virginica", "versicolor"}
    assert score(model, "accuracy", x, labels) == skm.accuracy_score(y, predicted)
    assert score(model, "f1", x, labels) == pytest.approx(
        skm.f1_score(y, predicted, average="macro")
    )
    assert score(model, "log_loss", x, labels) == pytest.approx(
        skm.log_loss(y, proba, labels=[0, 1, 2])
    )
    # One-vs-rest over the classes that occur (ROC AUC is undefined for the others).
    expected = np.mean([skm.roc_auc_score(y == c, proba[:, c]) for c in (0, 2)])
    assert score(model, "roc_auc", x, labels) == pytest.approx(expected)


def test_binary_roc_auc_scores_the_positive_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 50)
    x = rng.normal(size=(100, 1)) + y[:, None]
    # Class 1, the positive one, is "no": it sorts first, so sorting must not flip it.
    model = loaded(tmp_path, LogisticRegression().fit(x, y), ["a"], ["yes", "no"])
    labels = np.asarray(["yes", "no"])[y]
    proba = model.estimator.predict_proba(x)
    auc = score(model, "roc_auc", x, labels)
    assert auc == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert auc > 0.6
    assert score(model, "log_loss", x, labels) == pytest.approx(skm.log_loss(y, proba))


def test_roc_auc_needs_two_classes_in_the_data(three_classes: Any) -> None:
    model, x, y = three_classes
    with pytest.raises(EvaluationError, match="roc_auc needs at least two classes"):
        score(model, "roc_auc", x[y == 0], names(y[y == 0]))


def test_regression_metrics_equal_scikit_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 2))
    y = x @ [2.0, -1.0] + rng.normal(scale=0.5, size=80)
    model = loaded(tmp_path, LinearRegression().fit(x[:40], y[:40]), ["a", "b"], [])
    predicted = model.estimator.predict(x[40:])
    truth = y[40:]
    assert score(model, "rmse", x[40:], truth) == pytest.approx(
        math.sqrt(skm.mean_squared_error(truth, predicted))
    )
    assert score(model, "mae", x[40:], truth) == pytest.approx(
        skm.mean_absolute_error(truth, predicted)
    )
    assert score(model, "r2", x[40:], truth) == pytest.approx(skm.r2_score(truth, predicted))


def test_directions() -> None:
    assert {name: direction(name) for name in METRICS} == {
        "accuracy": "higher",
        "f1": "higher",
        "roc_auc": "higher",
        "r2": "higher",
        "log_loss": "lower",
        "rmse": "lower",
        "mae": "lower",
    }
    with pytest.raises(EvaluationError, match="unknown metric 'auc': use one of accuracy"):
        direction("auc")


def test_metrics_refuse_the_wrong_kind_of_model(tmp_path: Path, three_classes: Any) -> None:
    classifier, x, y = three_classes
    with pytest.raises(EvaluationError, match="rmse is a regression metric, but the model is a"):
        score(classifier, "rmse", x, names(y))
    regressor = loaded(tmp_path / "r", LinearRegression().fit(x, y), ["a", "b"], [])
    with pytest.raises(EvaluationError, match="accuracy is a classification metric"):
        score(regressor, "accuracy", x, y.astype(float))
    no_proba = loaded(tmp_path / "c", RidgeClassifier().fit(x, y), ["a", "b"], NAMES)
    with pytest.raises(
        EvaluationError,
        match="log_loss needs class probabilities, but RidgeClassifier has no predict_proba",
    ):
        score(no_proba, "log_loss", x, names(y))
    assert score(no_proba, "accuracy", x, names(y)) > 0.3


# --- gate ---------------------------------------------------------------------------

NAN = float("nan")


@pytest.mark.parametrize(
    (
        "metric",
        "champion",
        "challenger",
        "min_improvement",
        "floor",
        "passed",
        "reason",
        "improvement",
    ),
    [
        # higher is better
        ("accuracy", 0.8, 0.9, 0.0, None, True, "Improved", 0.1),
        ("accuracy", 0.9, 0.8, 0.0, None, False, "NotBetter", -0.1),
        ("accuracy", 0.9, 0.9, 0.0, None, True, "Improved", 0.0),  # equal: at least as good
        ("accuracy", 0.9, 0.9, 0.01, None, False, "NotBetter", 0.0),
        ("accuracy", 0.2, 0.3, 0.1, None, True, "Improved", 0.1),  # 0.3-0.2 < 0.1 in floats
        ("accuracy", 0.8, 0.85, 0.1, None, False, "NotBetter", 0.05),
        ("accuracy", 0.9, 0.89, -0.02, None, True, "Improved", -0.01),  # tolerated regression
        ("accuracy", 0.5, 0.85, 0.0, 0.9, False, "BelowFloor", 0.35),
        ("accuracy", 0.5, 0.9, 0.0, 0.9, True, "Improved", 0.4),  # reaching the floor is enough
        ("accuracy", None, 0.7, 0.0, None, True, "NoChampion", None),
        ("accuracy", None, 0.7, 0.5, 0.6, True, "NoChampion", None),
        ("accuracy", None, 0.5, 0.0, 0.6, False, "BelowFloor", None),
        # lower is better: improvement is champion - challenger, the floor a ceiling
        ("log_loss", 0.5, 0.4, 0.0, None, True, "Improved", 0.1),
        ("log_loss", 0.4, 0.5, 0.0, None, False, "NotBetter", -0.1),
        ("rmse", 2.0, 1.5, 0.5, None, True, "Improved", 0.5),
        ("rmse", 2.0, 1.6, 0.5, None, False, "NotBetter", 0.4),
        ("mae", 1.0, 1.0, 0.0, None, True, "Improved", 0.0),
        ("log_loss", None, 0.6, 0.0, 0.5, False, "BelowFloor", None),
        ("log_loss", None, 0.4, 0.0, 0.5, True, "NoChampion", None),
        ("log_loss", 0.9, 0.6, 0.0, 0.5, False, "BelowFloor", 0.3),
        ("r2", 0.5, 0.6, 0.0, 0.55, True, "Improved", 0.1),
        # NaN never passes
        ("accuracy", None, NAN, 0.0, None, False, "NotBetter", None),
        ("accuracy", 0.9, NAN, 0.0, None, False, "NotBetter", None),
        ("accuracy", NAN, 0.9, 0.0, None, False, "NotBetter", None),
        ("rmse", None, NAN, 0.0, 10.0, False, "NotBetter", None),
        ("r2", NAN, NAN, -1.0, None, False, "NotBetter", None),
    ],
)
def test_gate_decision_table(
    metric: str,
    champion: float | None,
    challenger: float,
    min_improvement: float,
    floor: float | None,
    passed: bool,
    reason: str,
    improvement: float | None,
) -> None:
    verdict = decide(metric, champion, challenger, min_improvement, floor)
    assert (verdict.passed, verdict.reason) == (passed, reason), verdict.message
    if improvement is None:
        assert verdict.improvement is None
    else:
        assert verdict.improvement == pytest.approx(improvement)
    assert f"{challenger:.6g}" in verdict.message
    if champion is not None:
        assert f"{champion:.6g}" in verdict.message
    if reason == "BelowFloor":
        assert f"{floor:.6g}" in verdict.message


def test_gate_refuses_nonsense_settings() -> None:
    with pytest.raises(EvaluationError, match="unknown metric"):
        decide("precision", 0.5, 0.6)
    with pytest.raises(EvaluationError, match="min improvement must be a finite number"):
        decide("accuracy", 0.5, 0.6, min_improvement=NAN)
    with pytest.raises(EvaluationError, match="floor must be a finite number"):
        decide("accuracy", 0.5, 0.6, floor=math.inf)


# --- data ---------------------------------------------------------------------------

IRIS_HEADER = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),species"
IRIS_FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture()
def iris_model(tmp_path: Path) -> LoadedModel:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 10)
    x = rng.normal(size=(30, 4)) + y[:, None]
    return loaded(tmp_path, LogisticRegression().fit(x, y), IRIS_FEATURES, IRIS_CLASSES)


def csv_file(tmp_path: Path, *lines: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_a_csv_matching_columns_by_snake_case(tmp_path: Path, iris_model: Any) -> None:
    path = csv_file(tmp_path, IRIS_HEADER, "5.1,3.5,1.4,0.2,setosa", "6.3,3.3,6.0,2.5,virginica")
    table = read_table(path.as_uri())  # file:// works as well as a path
    data = select(table, iris_model, resolve_label_column(table, "species", []))
    assert data.rows == 2
    assert data.feature_columns == IRIS_HEADER.split(",")[:4]
    np.testing.assert_array_equal(data.features[1], [6.3, 3.3, 6.0, 2.5])
    assert data.labels.tolist() == ["setosa", "virginica"]


def test_a_label_column_of_class_values_reads_as_the_class_labels(
    tmp_path: Path, iris_model: Any
) -> None:
    """The estimator's own classes_ (0, 1, 2), as text or as a number, stand for the
    labels model.json gives them; a column of labels is read as before."""
    rows = ["5.1,3.5,1.4,0.2,{}", "6.3,3.3,6.0,2.5,{}", "5.9,3.0,4.2,1.5,{}"]
    for values in (["0", "2", "1"], [" 0", "2.0", "1e0"], ["setosa", "virginica", "versicolor"]):
        lines = [row.format(value) for row, value in zip(rows, values, strict=True)]
        table = read_table(str(csv_file(tmp_path, IRIS_HEADER, *lines)))
        data = select(table, iris_model, "species")
        assert data.labels.tolist() == ["setosa", "virginica", "versicolor"], values


def test_a_label_column_of_class_values_scores_as_the_labels(
    tmp_path: Path, three_classes: Any
) -> None:
    """Every classification metric is the same on the class values 0, 1, 2 as on the
    names model.json gives them (NAMES, out of alphabetical order)."""
    model, x, y = three_classes
    header = "a,b,label"
    by_name = [f"{a},{b},{NAMES[c]}" for (a, b), c in zip(x.tolist(), y.tolist(), strict=True)]
    by_value = [f"{a},{b},{c}" for (a, b), c in zip(x.tolist(), y.tolist(), strict=True)]
    named = select(read_table(str(csv_file(tmp_path, header, *by_name))), model, "label")
    raw = select(read_table(str(csv_file(tmp_path, header, *by_value))), model, "label")
    np.testing.assert_array_equal(raw.labels, names(y))
    for metric in ("accuracy", "f1", "log_loss", "roc_auc"):
        expected = score(model, metric, named.features, named.labels)
        assert score(model, metric, raw.features, raw.labels) == expected, metric


def test_a_parquet_label_column_of_class_values(tmp_path: Path, iris_model: Any) -> None:
    """Parquet's integers and floats are class values too."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {name: [1.0, 2.0, 3.0] for name in IRIS_FEATURES}
    for species in ([2, 0, 1], [2.0, 0.0, 1.0]):
        pq.write_table(pa.table({**columns, "species": species}), tmp_path / "data.parquet")
        data = select(read_table(str(tmp_path / "data.parquet")), iris_model, "species")
        assert data.labels.tolist() == ["virginica", "setosa", "versicolor"], species
    pq.write_table(pa.table({**columns, "species": [2, 0, 5]}), tmp_path / "data.parquet")
    with pytest.raises(EvaluationError, match=r"row 3: '5' is not one of the model's classes"):
        select(read_table(str(tmp_path / "data.parquet")), iris_model, "species")


def test_the_label_column_can_come_from_model_json(tmp_path: Path) -> None:
    model = load_model(
        write_model(
            tmp_path / "m",
            LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]),
            ["x"],
            [],
            label_column="target",
        )
    )
    table = read_table(str(csv_file(tmp_path, "x,target", "1,2.5", "2,4")))
    data = select(table, model, resolve_label_column(table, None, ["target"]))
    assert data.labels.tolist() == [2.5, 4.0]
    assert data.labels.dtype == np.float64
    result = evaluate(None, str(tmp_path / "m"), str(tmp_path / "data.csv"), "mae", None, 0, None)
    assert result["challenger"] == pytest.approx(0.25)  # predicts 2 and 4


@pytest.mark.parametrize(
    ("lines", "label", "message"),
    [
        ([IRIS_HEADER], "species", r"data.csv: no rows"),
        (
            ["sepal length (cm),species", "1,setosa"],
            "species",
            r"data.csv: no column for the model's feature 'sepal_width_cm'.*the columns are "
            r"'sepal length \(cm\)', 'species'",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,0.2,setosa"],
            "label",
            r"data.csv: no label column 'label'; the columns are 'sepal length \(cm\)'",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,0.2,setosa"],
            None,
            r"data.csv: which column is the label\? Give --label-column or label_column in "
            r"model.json; the columns are 'sepal length \(cm\)'.*'species'",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,0.2,setosa", "5.1,3.5,1.4,0.2,daisy"],
            "species",
            r"data.csv: label column 'species', line 3: 'daisy' is not one of the model's "
            r"classes \(setosa, versicolor, virginica\) nor one of the estimator's class "
            r"values \(0, 1, 2\); unknown labels: 'daisy'$",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,0.2,0", "5.1,3.5,1.4,0.2,3", "5.1,3.5,1.4,0.2,1.5"],
            "species",
            r"data.csv: label column 'species', line 3: '3' is not one of the model's "
            r"classes \(setosa, versicolor, virginica\) nor one of the estimator's class "
            r"values \(0, 1, 2\); unknown labels: '1.5', '3'$",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,0.2,setosa", "5.1,3.5,1.4,0.2,2"],
            "species",
            r"data.csv: label column 'species' mixes the model's classes \(setosa, "
            r"versicolor, virginica\) and the estimator's class values \(0, 1, 2\): line 3: "
            r"'2' is a class value, line 2: 'setosa' a class label",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,0.2,setosa", "5.1,wide,1.4,0.2,setosa"],
            "species",
            r"data.csv: feature column 'sepal width \(cm\)', line 3: 'wide' is not a number",
        ),
        (
            [IRIS_HEADER, "5.1,,1.4,0.2,setosa"],
            "species",
            r"data.csv: column 'sepal width \(cm\)', line 2: '' is missing or NaN: the model "
            r"does not accept missing values",
        ),
        (
            [IRIS_HEADER, "5.1,nan,1.4,0.2,setosa"],
            "species",
            r"data.csv: column 'sepal width \(cm\)', line 2: 'nan' is missing or NaN",
        ),
        (
            [IRIS_HEADER, "5.1,3.5,1.4,setosa"],
            "species",
            r"data.csv: line 2: 4 cells, the header has 5",
        ),
        (["a,a", "1,2"], "species", r"data.csv: column names must be unique"),
    ],
)
def test_data_errors_name_the_file_and_column(
    tmp_path: Path, iris_model: Any, lines: list[str], label: str | None, message: str
) -> None:
    path = csv_file(tmp_path, *lines)
    with pytest.raises(EvaluationError, match=message):
        table = read_table(str(path))
        select(table, iris_model, resolve_label_column(table, label, [None]))


def test_regression_labels_must_be_numbers(tmp_path: Path) -> None:
    model = load_model(
        write_model(tmp_path / "m", LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), ["x"], [])
    )
    table = read_table(str(csv_file(tmp_path, "x,y", "1,2", "2,big")))
    with pytest.raises(EvaluationError, match=r"data.csv: label column 'y', line 3: 'big' is not"):
        select(table, model, "y")
    table = read_table(str(csv_file(tmp_path, "x,y", "1,2", "2,")))
    with pytest.raises(EvaluationError, match=r"'y', line 3: '' is missing or NaN: every row"):
        select(table, model, "y")
    table = read_table(str(csv_file(tmp_path, "x,y", "inf,2")))
    with pytest.raises(EvaluationError, match=r"'x', line 2: 'inf' is infinite"):
        select(table, model, "y")


def test_missing_features_reach_a_model_that_accepts_them(tmp_path: Path) -> None:
    x = np.asarray([[0.0], [1.0], [np.nan], [3.0]] * 5)
    y = np.asarray([0, 1, 1, 1] * 5)
    model = loaded(tmp_path, HistGradientBoostingClassifier().fit(x, y), ["x"], ["a", "b"])
    assert model.allow_nan
    data = select(read_table(str(csv_file(tmp_path, "x,y", "1,b", ",b"))), model, "y")
    assert np.isnan(data.features[1, 0])
    assert score(model, "accuracy", data.features, data.labels) == 1.0


def test_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EvaluationError, match=r"missing.csv: no such file"):
        read_table(str(tmp_path / "missing.csv"))
    with pytest.raises(EvaluationError, match=r"unsupported file type '.json'"):
        read_table(str(tmp_path / "data.json"))
    with pytest.raises(EvaluationError, match=r"unsupported scheme 's3'"):
        read_table("s3://bucket/data.csv")
    parquet = tmp_path / "data.parquet"
    parquet.write_bytes(b"PAR1")
    # As if pyarrow were not installed (it may be): importing it fails.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(EvaluationError, match=r"data.parquet: reading Parquet needs pyarrow"):
        read_table(str(parquet))


def test_reads_parquet_with_pyarrow(tmp_path: Path, iris_model: Any) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {name: [1.0, 2.0] for name in IRIS_FEATURES}
    pq.write_table(
        pa.table({**columns, "species": ["setosa", "virginica"]}), tmp_path / "data.parquet"
    )
    table = read_table(str(tmp_path / "data.parquet"))
    data = select(table, iris_model, "species")
    assert data.labels.tolist() == ["setosa", "virginica"]
    np.testing.assert_array_equal(data.features[1], [2.0] * 4)


class FakeColumn:
    def __init__(self, values: list[Any]) -> None:
        self.values = values

    def to_pylist(self) -> list[Any]:
        return self.values


class FakeArrowTable:
    """The slice of pyarrow.Table that data.py reads: names, rows, columns by index."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.column_names = list(columns)
        self.num_rows = len(next(iter(columns.values())))
        self._columns = list(columns.values())

    def column(self, i: int) -> FakeColumn:
        return FakeColumn(self._columns[i])


def test_parquet_columns_go_through_the_same_checks(
    tmp_path: Path, iris_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pyarrow installed too: a stand-in module returns the table."""
    columns: dict[str, list[Any]] = {name: [1.0, 2.0] for name in IRIS_FEATURES}
    columns["species"] = ["setosa", "virginica"]
    fake = types.ModuleType("pyarrow.parquet")
    fake.read_table = lambda path: FakeArrowTable(columns)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", fake)
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    data = select(read_table(str(path)), iris_model, "species")
    assert data.labels.tolist() == ["setosa", "virginica"]
    columns["petal_width_cm"] = [1.0, None]  # a null
    with pytest.raises(EvaluationError, match=r"'petal_width_cm', row 2: None is missing or NaN"):
        select(read_table(str(path)), iris_model, "species")


# --- the command, end to end --------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two models from examples/train/train.py: one fitted on iris, one on iris shifted by
    two standard deviations (worse on plain iris), and the plain iris CSV."""
    root = tmp_path_factory.mktemp("evaluate")
    with pytest.MonkeyPatch.context() as env:
        # In this process: no progress server, no final message outside the tmp dir,
        # and none of a TrainingJob's settings from the environment.
        env.setenv("KUBELOOP_PROGRESS_PORT", "0")
        env.setenv("KUBELOOP_TERMINATION_LOG", str(root / "train-termination-log"))
        env.delenv("KUBELOOP_DATASET_URI", raising=False)
        try:
            for name, shift in (("good", "0"), ("shifted", "2")):
                args = ["--output", str(root / name), "--n-estimators", "10", "--shift", shift]
                assert train_main(args) == 0
        finally:
            progress = sys.modules.get("kubeloop.train")
            if progress is not None:
                progress.reset()
    write_iris_csv(root / "iris.csv")
    return {"good": root / "good", "shifted": root / "shifted", "data": root / "iris.csv"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = kubeloop(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def common(trained: dict[str, Path], metric: str = "accuracy") -> list[str]:
    return ["--data", str(trained["data"]), "--metric", metric, "--label-column", "species"]


@pytest.mark.parametrize("metric", ["accuracy", "f1", "log_loss", "roc_auc"])
def test_the_better_model_passes(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], metric: str
) -> None:
    log = tmp_path / "termination-log"
    code, out, _ = run(
        capsys,
        "--champion",
        str(trained["shifted"]),
        "--challenger",
        trained["good"].as_uri(),
        *common(trained, metric),
        "--json",
        "--termination-log",
        str(log),
    )
    assert code == 0
    result = json.loads(out)
    assert result["verdict"] == "Passed" and result["passed"] is True
    assert result["reason"] == "Improved"
    assert result["metric"] == metric and result["rows"] == 150
    assert isinstance(result["champion"], float) and isinstance(result["challenger"], float)
    assert result["improvement"] > 0
    assert set(result) == {
        "metric",
        "direction",
        "champion",
        "challenger",
        "improvement",
        "minImprovement",
        "floor",
        "passed",
        "verdict",
        "reason",
        "message",
        "rows",
    }
    written = log.read_bytes()
    assert len(written) <= TERMINATION_MESSAGE_LIMIT
    assert json.loads(written) == result


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_the_command_scores_class_values_as_the_named_labels(
    trained: dict[str, Path], tmp_path: Path, metric: str
) -> None:
    """The iris CSV with the estimator's classes_ (0, 1, 2) in the species column in
    place of the names train.py writes into model.json: the same scores."""
    header, *rows = trained["data"].read_text().splitlines()
    value = {name: str(i) for i, name in enumerate(IRIS_CLASSES)}
    as_values = [row.rpartition(",")[0] + "," + value[row.rpartition(",")[2]] for row in rows]
    raw = csv_file(tmp_path, header, *as_values, name="iris-values.csv")
    args = (str(trained["shifted"]), str(trained["good"]))
    named_result = evaluate(*args, str(trained["data"]), metric, "species", 0, None)
    raw_result = evaluate(*args, str(raw), metric, "species", 0, None)
    assert raw_result == named_result


def test_the_worse_model_is_rejected(
    trained: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", str(log))  # the default for the flag
    code, out, _ = run(
        capsys,
        "--champion",
        str(trained["good"]),
        "--challenger",
        str(trained["shifted"]),
        *common(trained, "log_loss"),
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert (result["verdict"], result["reason"], result["direction"]) == (
        "Rejected",
        "NotBetter",
        "lower",
    )
    assert result["challenger"] > result["champion"]
    assert result["improvement"] < 0
    assert json.loads(log.read_text())["verdict"] == "Rejected"


def test_without_a_champion_only_the_floor_counts(
    trained: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "--challenger", str(trained["good"]), *common(trained), "--floor", "0.9"
    )
    assert code == 0
    assert "NoChampion" in out and "Passed" in out and "challenger" in out
    assert not out.lstrip().startswith("{")  # a table for people, not JSON
    code, out, _ = run(
        capsys,
        "--challenger",
        str(trained["shifted"]),
        *common(trained),
        "--floor",
        "0.9",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert (result["reason"], result["champion"], result["floor"]) == ("BelowFloor", None, 0.9)


def test_a_missing_data_file_exits_2_with_the_error(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    code, out, err = run(
        capsys,
        "--challenger",
        str(trained["good"]),
        "--data",
        str(tmp_path / "nope.csv"),
        "--metric",
        "accuracy",
        "--json",
        "--termination-log",
        str(log),
    )
    assert code == 2 and out == ""
    assert err.startswith("kubeloop evaluate: ") and "nope.csv: no such file" in err
    assert "nope.csv: no such file" in json.loads(log.read_text())["error"]


def test_a_tampered_model_is_refused_naming_its_side(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "champion"
    copy.mkdir()
    for f in trained["good"].iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "model.json").write_text((copy / "model.json").read_text().replace("iris", "sirs"))
    code, _, err = run(
        capsys, "--champion", str(copy), "--challenger", str(trained["good"]), *common(trained)
    )
    assert code == 2
    assert "champion model: " in err and "does not match manifest.json" in err
    code, _, err = run(capsys, "--challenger", str(tmp_path / "none"), *common(trained))
    assert code == 2 and "challenger model: " in err and "no such directory" in err


def test_termination_messages_fit_in_4096_bytes() -> None:
    result = {"metric": "accuracy", "challenger": 0.9, "message": "x" * 5000, "passed": True}
    short = json.loads(termination_message(result))
    assert "message" not in short and short["challenger"] == 0.9
    assert json.loads(termination_message({**result, "message": "fine"}))["message"] == "fine"
    for error in ("e" * 10_000, 'é\n"' * 3000):
        text = error_message(error)
        assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
        assert json.loads(text)["error"].endswith("...")
    assert json.loads(error_message("short")) == {"error": "short"}


def test_a_model_over_http_is_fetched_and_checked(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A challenger at an http:// URI (as a TrainingJob may write to object storage) is
    fetched against its manifest and scored like a local one; a file that does not
    match the manifest is an error naming the side, never a score."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    shutil.copytree(trained["good"], served / "good")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/good"
    try:
        code, out, _ = run(
            capsys, "--champion", str(trained["shifted"]), "--challenger", url,
            *common(trained), "--json",
        )
        assert code == 0 and json.loads(out)["passed"] is True
        local = run(
            capsys, "--champion", str(trained["shifted"]), "--challenger",
            str(trained["good"]), *common(trained), "--json",
        )
        assert json.loads(out)["challenger"] == json.loads(local[1])["challenger"]
        (served / "good" / "model.joblib").write_bytes(b"not the model")
        code, _, err = run(
            capsys, "--champion", str(trained["shifted"]), "--challenger", url,
            *common(trained), "--json",
        )
        assert code == 2 and "challenger model" in err
    finally:
        server.shutdown()
