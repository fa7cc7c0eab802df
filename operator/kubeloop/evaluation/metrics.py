"""The metrics ``kubeloop evaluate`` can score a model with, and their directions.

Every score comes from scikit-learn's own function (:mod:`sklearn.metrics`); this module
only feeds it the right labels and columns:

* predictions are the estimator's class values (``classes_``, e.g. 0, 1, 2), mapped to
  the model's class labels (``model.json`` ``classes``, e.g. ``setosa``) so that they
  compare with the labels in the data (a label column that holds class values is mapped
  to the labels the same way when it is read, :mod:`kubeloop.evaluation.data`);
* probability matrices have one column per class of the model, in the model's class
  order, then permuted into the lexicographic order of the labels, because
  ``log_loss`` and ``roc_auc_score`` read the columns in sorted ``labels=`` order. The
  full ``labels=`` list is always passed, so a class absent from the data does not
  shift the columns.

scikit-learn is imported inside the functions that score: the metric table and its
directions (used by :mod:`kubeloop.evaluation.gate`) need none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from kubeloop.evaluation import EvaluationError

if TYPE_CHECKING:
    from kubeloop.modeldir import LoadedModel

Direction = Literal["higher", "lower"]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Metric:
    """A metric's name, which way is better, which models it applies to, and whether
    it reads class probabilities (``predict_proba``) instead of predictions."""

    name: str
    direction: Direction
    task: Task
    needs_proba: bool
    description: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "higher", "classification", False, "share of correct predictions"),
        Metric("f1", "higher", "classification", False, "F1 score, macro average over classes"),
        Metric("log_loss", "lower", "classification", True, "cross-entropy of the probabilities"),
        Metric("roc_auc", "higher", "classification", True, "ROC AUC (one-vs-rest macro)"),
        Metric("rmse", "lower", "regression", False, "root mean squared error"),
        Metric("mae", "lower", "regression", False, "mean absolute error"),
        Metric("r2", "higher", "regression", False, "coefficient of determination"),
    )
}


def get_metric(name: str) -> Metric:
    """The metric called ``name``; an :class:`EvaluationError` lists the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise EvaluationError(f"unknown metric {name!r}: use one of {', '.join(METRICS)}") from None


def direction(name: str) -> Direction:
    """``"higher"`` when a larger score is better, ``"lower"`` when a smaller one is."""
    return get_metric(name).direction


def check_applicable(metric: Metric, model: LoadedModel) -> None:
    """Refuse a classification metric on a regressor (and vice versa), and a metric
    that needs probabilities on a model without ``predict_proba``."""
    is_classifier = model.classes is not None
    if metric.task == "classification" and not is_classifier:
        raise EvaluationError(
            f"{metric.name} is a classification metric, but the model is a regressor "
            f"(no classes_): use one of {', '.join(_names('regression'))}"
        )
    if metric.task == "regression" and is_classifier:
        raise EvaluationError(
            f"{metric.name} is a regression metric, but the model is a classifier: "
            f"use one of {', '.join(_names('classification'))}"
        )
    if metric.needs_proba and not model.has_proba:
        estimator = type(model.estimator).__name__
        raise EvaluationError(
            f"{metric.name} needs class probabilities, but {estimator} has no "
            "predict_proba(): use accuracy or f1"
        )
    if is_classifier and len(set(model.class_labels)) != len(model.class_labels):
        raise EvaluationError(f"the model's class labels are not unique: {model.class_labels}")


def _names(task: Task) -> list[str]:
    return [m.name for m in METRICS.values() if m.task == task]


def score(model: LoadedModel, metric: str, features: np.ndarray, labels: np.ndarray) -> float:
    """Score ``model`` on ``features`` (rows x the model's features, in its order)
    against ``labels`` (class labels as strings for a classifier, floats for a
    regressor), with the scikit-learn function of ``metric``."""
    spec = get_metric(metric)
    check_applicable(spec, model)
    if spec.task == "regression":
        y_float = np.asarray(labels, dtype=np.float64)
        return _REGRESSION_METRICS[spec.name](y_float, _regress(model, features))
    y_true = np.asarray(labels, dtype=str)
    if not spec.needs_proba:
        return _LABEL_METRICS[spec.name](y_true, predicted_labels(model, features))
    proba, sorted_labels = probability_matrix(model, features)
    if spec.name == "log_loss":
        return log_loss(y_true, proba, sorted_labels)
    # Binary: the positive class is the second, classes_[1]; unused for more classes.
    return roc_auc(y_true, proba, sorted_labels, positive=model.class_labels[-1])


def _predict(model: LoadedModel, features: np.ndarray, proba: bool = False) -> np.ndarray:
    """The estimator's output; its own refusals (wrong shape, NaN) become clear errors."""
    try:
        return model.predict_proba(features) if proba else model.predict(features)
    except (ValueError, TypeError) as exc:
        what = "predict_proba()" if proba else "predict()"
        raise EvaluationError(f"{type(model.estimator).__name__}.{what} failed: {exc}") from exc


def _regress(model: LoadedModel, features: np.ndarray) -> np.ndarray:
    predictions = _predict(model, features)
    if predictions.ndim != 1:
        raise EvaluationError(
            f"the regressor predicts shape {predictions.shape[1:]} per row; only one "
            "target is supported"
        )
    return predictions.astype(np.float64)


def predicted_labels(model: LoadedModel, features: np.ndarray) -> np.ndarray:
    """The classifier's predictions as class labels: each predicted class value is
    looked up in ``model.classes`` and replaced by its entry in ``class_labels``."""
    assert model.classes is not None  # check_applicable: a classifier
    predictions = _predict(model, features)
    index = {value: i for i, value in enumerate(model.classes.tolist())}
    try:
        positions = [index[value] for value in predictions.tolist()]
    except (KeyError, TypeError) as exc:
        raise EvaluationError(
            f"the classifier predicted {exc}, which is not one of its classes "
            f"{model.classes.tolist()}"
        ) from None
    return np.asarray(model.class_labels, dtype=str)[positions]


def probability_matrix(model: LoadedModel, features: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``(probabilities, labels)``: one column per class of the model, ordered as the
    returned labels, which are the model's class labels sorted, the order
    scikit-learn's ``log_loss`` and ``roc_auc_score`` read ``labels=`` in."""
    proba = _predict(model, features, proba=True)
    n_classes = len(model.class_labels)
    if proba.ndim != 2 or proba.shape[1] != n_classes:
        raise EvaluationError(
            f"predict_proba() returned shape {proba.shape}, expected (rows, {n_classes}): "
            "one column per class"
        )
    order = sorted(range(n_classes), key=lambda i: model.class_labels[i])
    return proba[:, order], [model.class_labels[i] for i in order]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows whose predicted label is the true one."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


def f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 scores, over the classes that occur in the
    data or the predictions (scikit-learn's ``average="macro"``); a class that is
    never predicted counts 0."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro", zero_division=0.0))


def log_loss(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> float:
    """Cross-entropy of the predicted probabilities; ``labels`` names the columns."""
    from sklearn.metrics import log_loss as sk_log_loss

    return float(sk_log_loss(y_true, proba, labels=labels))


def roc_auc(y_true: np.ndarray, proba: np.ndarray, labels: list[str], positive: str) -> float:
    """ROC AUC. Two classes: of the probability of ``positive``, the model's second
    class (scikit-learn's ``classes_[1]``), whatever the labels' sort order. More:
    one-vs-rest, macro average over the classes that occur in the data (for a class
    that does not, ROC AUC is undefined)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    present = [i for i, label in enumerate(labels) if np.any(y_true == label)]
    if len(present) < 2:
        raise EvaluationError(
            "roc_auc needs at least two classes in the data, it has only "
            f"{[labels[i] for i in present]}"
        )
    if len(labels) == 2:
        return float(roc_auc_score(y_true == positive, proba[:, labels.index(positive)]))
    onehot = label_binarize(y_true, classes=labels)
    return float(roc_auc_score(onehot[:, present], proba[:, present], average="macro"))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    try:
        from sklearn.metrics import root_mean_squared_error
    except ImportError:  # scikit-learn < 1.4
        from sklearn.metrics import mean_squared_error

        return float(np.sqrt(mean_squared_error(y_true, y_pred)))
    return float(root_mean_squared_error(y_true, y_pred))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y_true, y_pred))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (NaN for fewer than two rows: never passes)."""
    from sklearn.metrics import r2_score

    return float(r2_score(y_true, y_pred))


_LABEL_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
}
_REGRESSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": rmse,
    "mae": mae,
    "r2": r2,
}
