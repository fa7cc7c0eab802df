"""What a profile knows of the model itself, beside its inputs: the distribution of its
predictions on the reference (prediction drift compares the served ones with it) and,
for a classifier with probabilities, a calibration of its confidence (the server's
estimated accuracy without labels).

The estimate is confidence-based, like NannyML's CBPE: on labelled reference rows the
model did not learn from, an isotonic regression maps each answer's top class
probability to how often answers at that confidence were right. Served answers then
count ``calibration.expected(top probability)`` each; their mean over a window is the
estimated accuracy. It assumes covariate shift only, P(label | inputs) as on the
reference: then the calibration still holds wherever the inputs move, and the estimate
follows the model into regions where it is less sure. It fails under concept drift (the
same inputs now mean another label: the model is as confident and as wrong), when the
inputs leave the reference's range (where the model can be confidently wrong), and when
the reference rows were seen in training (an overconfident map): that is what labels are
for. Fit it on held-out rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kubeloop.drift.profile import (
    OTHER_CATEGORY,
    Calibration,
    FeatureProfile,
    Profile,
    _numeric_feature,
)

PREDICTION = "prediction"
# Knots of the calibration map a profile keeps at most.
MAX_KNOTS = 256


def fit_calibration(proba: np.ndarray, correct: np.ndarray) -> Calibration:
    """Isotonic map of the top probability to P(correct), from reference rows:
    ``proba`` (rows, classes) the model's probabilities, ``correct`` whether its
    answer was the label."""
    from sklearn.isotonic import IsotonicRegression  # the serve extra; only here

    proba = np.asarray(proba, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(hits) or len(hits) == 0:
        raise ValueError("calibration needs (rows, classes) probabilities and one label a row")
    top = proba.max(axis=1)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(top, hits)
    x, y = iso.X_thresholds_, iso.y_thresholds_
    if len(x) > MAX_KNOTS:
        # A large reference has thousands of steps; the map at MAX_KNOTS quantiles of
        # the confidence keeps the profile small and is still non-decreasing.
        x = np.unique(np.quantile(top, np.linspace(0.0, 1.0, MAX_KNOTS)))
        y = iso.predict(x)
    return Calibration(
        confidence=np.clip(x, 0.0, 1.0).tolist(),
        correct=np.clip(y, 0.0, 1.0).tolist(),
        rows=len(hits),
        accuracy=float(hits.mean()),
    )


def class_predictions(
    predicted: np.ndarray, classes: np.ndarray, labels: Sequence[str]
) -> FeatureProfile:
    """A classifier's predictions per class (the classes in the model's order)."""
    index = np.searchsorted(classes, predicted)
    counts = np.bincount(index, minlength=len(classes))
    return FeatureProfile(
        name=PREDICTION,
        kind="categorical",
        categories=[str(label) for label in labels],
        counts=[*(int(c) for c in counts), 0],
    )


def value_predictions(predicted: np.ndarray, bins: int = 10) -> FeatureProfile:
    """A regressor's predicted values on quantile bins (as a numeric feature's)."""
    return _numeric_feature(PREDICTION, np.asarray(predicted, dtype=np.float64), bins)


def with_model(
    profile: Profile,
    estimator: object,
    rows: np.ndarray,
    labels: np.ndarray | None = None,
    class_labels: Sequence[str] | None = None,
    bins: int = 10,
) -> Profile:
    """``profile`` with the model's prediction distribution on ``rows`` and, for a
    classifier with ``predict_proba`` and the rows' ``labels``, its calibration.
    ``rows`` should be reference rows the model did not train on."""
    predicted = np.asarray(estimator.predict(rows))  # type: ignore[attr-defined]
    classes = getattr(estimator, "classes_", None)
    update: dict[str, object] = {}
    if classes is None:
        update["predictions"] = value_predictions(predicted, bins)
        return profile.model_copy(update=update)
    classes = np.asarray(classes)
    names = list(class_labels) if class_labels else [str(c) for c in classes]
    if OTHER_CATEGORY in names:
        raise ValueError(f"a class may not be named {OTHER_CATEGORY!r}")
    update["predictions"] = class_predictions(predicted, classes, names)
    if labels is not None and hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
        labels = np.asarray(labels)
        if len(labels) != len(rows):
            raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
        update["calibration"] = fit_calibration(proba, predicted == labels)
    return profile.model_copy(update=update)
