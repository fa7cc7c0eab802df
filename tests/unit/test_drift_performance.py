"""The reader side of the served model's quality (kubeloop.drift.performance) and the
profile's calibration (kubeloop.drift.calibration): window figures against
scikit-learn's metrics on the same rows, a hand-checked calibration (Benjamini-Hochberg:
test_drift_correction.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
)

from kubeloop.drift import calibration as calibration_module
from kubeloop.drift import performance
from kubeloop.drift.calibration import class_predictions, fit_calibration, value_predictions
from kubeloop.drift.performance import (
    add,
    between,
    parse_quality,
    window_quality,
)
from kubeloop.drift.profile import Calibration
from kubeloop.drift.sources import SourceInvalid

CLASSES = ["cat", "dog", "eel"]


def confusion_text(version: str, cells: dict[tuple[str, str], int], model: str = "m") -> str:
    lines = ["# TYPE kubeloop_model_feedback_confusion counter"]
    for (label, prediction), count in cells.items():
        lines.append(
            f'{performance.CONFUSION}{{label="{label}",model="{model}",'
            f'prediction="{prediction}",version="{version}"}} {count}'
        )
    return "\n".join(lines) + "\n"


def cells(truth: np.ndarray, predicted: np.ndarray) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for t, p in zip(truth, predicted, strict=True):
        out[(CLASSES[t], CLASSES[p])] = out.get((CLASSES[t], CLASSES[p]), 0) + 1
    return out


def test_accuracy_and_f1_of_a_window_summed_over_pods_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 900)
    predicted = np.where(rng.random(900) < 0.7, truth, rng.integers(0, 3, 900))
    # Two pods; the window is rows 300..900 (the start scrape saw the first 300).
    pod_a, pod_b = slice(0, 500), slice(500, 900)
    start = add([parse_quality(confusion_text("v1", cells(truth[:300], predicted[:300])))])
    end = add(
        parse_quality(confusion_text("v1", cells(truth[pod], predicted[pod])))
        for pod in (pod_a, pod_b)
    )
    # Pod b started after the start scrape: all its counts are the window's.
    reference = class_predictions(np.array([0]), np.arange(3), CLASSES)
    got = window_quality(between(start, end), "v1", reference)
    window_truth, window_pred = truth[300:], predicted[300:]
    assert got.labels == 600
    assert got.accuracy == pytest.approx(accuracy_score(window_truth, window_pred))
    assert got.f1 == pytest.approx(f1_score(window_truth, window_pred, average="macro"))


def test_regression_window_matches_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(10, 3, 400)
    predicted = truth + rng.normal(0.5, 1.0, 400)

    def text(rows: slice) -> str:
        error = predicted[rows] - truth[rows]
        key = 'model="m",version="r1"'
        return (
            f"{performance.LABELLED}{{{key}}} {error.size}\n"
            f"{performance.ERROR_SUM}{{{key}}} {float(error.sum())!r}\n"
            f"{performance.SQUARED}{{{key}}} {float((error**2).sum())!r}\n"
            f"{performance.ABSOLUTE}{{{key}}} {float(np.abs(error).sum())!r}\n"
        )

    got = window_quality(
        between(parse_quality(text(slice(0, 100))), parse_quality(text(slice(0, 400)))), "r1"
    )
    t, p = truth[100:], predicted[100:]
    assert got.labels == 300
    assert got.rmse == pytest.approx(mean_squared_error(t, p) ** 0.5)
    assert got.mae == pytest.approx(mean_absolute_error(t, p))
    assert got.bias == pytest.approx((p - t).mean())
    # A pod restart (its counts went down): the end's counts are the window.
    restarted = window_quality(
        between(parse_quality(text(slice(0, 400))), parse_quality(text(slice(0, 50)))), "r1"
    )
    assert restarted.labels == 50
    assert restarted.bias == pytest.approx((predicted[:50] - truth[:50]).mean())


def test_a_signed_sum_that_goes_down_is_no_restart() -> None:
    """The error sum of a model that answers low falls as labels arrive: only the count
    of labels says whether the pod restarted, so the window is the difference."""
    rng = np.random.default_rng(5)
    truth = rng.normal(10, 3, 400)
    predicted = truth + rng.normal(-2.0, 0.5, 400)

    def text(rows: slice) -> str:
        error = predicted[rows] - truth[rows]
        key = 'model="m",version="r1"'
        return (
            f"{performance.LABELLED}{{{key}}} {error.size}\n"
            f"{performance.ERROR_SUM}{{{key}}} {float(error.sum())!r}\n"
        )

    start, end = parse_quality(text(slice(0, 100))), parse_quality(text(slice(0, 400)))
    assert end.get("r1", performance.ERROR_SUM)[()] < start.get("r1", performance.ERROR_SUM)[()]
    got = window_quality(between(start, end), "r1")
    assert got.labels == 300
    assert got.bias == pytest.approx((predicted[100:] - truth[100:]).mean())


def test_versions_are_kept_apart() -> None:
    text = (
        confusion_text("old", {("cat", "cat"): 5})
        + confusion_text("new", {("cat", "dog"): 5}).split("\n", 1)[1]
    )
    window = parse_quality(text)
    assert window.versions == ["new", "old"]
    assert window_quality(window, "old").accuracy == 1.0
    assert window_quality(window, "new").accuracy == 0.0
    assert window_quality(window, "absent").labels == 0
    assert window_quality(window, "absent").accuracy is None


def test_calibration_by_hand() -> None:
    # At confidence 0.6 one answer of two was right, at 0.9 both: isotonic keeps those
    # means (they already rise) and interpolates linearly between them.
    proba = np.array([[0.6, 0.4], [0.4, 0.6], [0.9, 0.1], [0.1, 0.9]])
    calibration = fit_calibration(proba, np.array([False, True, True, True]))
    assert calibration.confidence == [0.6, 0.9] and calibration.correct == [0.5, 1.0]
    assert calibration.accuracy == 0.75 and calibration.rows == 4
    np.testing.assert_allclose(
        calibration.expected(np.array([0.5, 0.6, 0.75, 0.9, 1.0])), [0.5, 0.5, 0.75, 1.0, 1.0]
    )
    # Decreasing correctness is pooled (the pool-adjacent-violators step).
    pooled = fit_calibration(proba, np.array([True, True, False, False]))
    assert pooled.correct == [0.5, 0.5]


def test_estimated_accuracy_of_a_window() -> None:
    calibration = Calibration(confidence=[0.5, 1.0], correct=[0.4, 1.0], rows=10, accuracy=0.7)
    top = np.array([0.5, 0.75, 1.0, 1.0])
    correct = calibration.expected(top).sum()  # 0.4 + 0.7 + 1 + 1 = 3.1
    assert correct == pytest.approx(3.1)
    key = 'model="m",version="v"'
    text = (
        f"{performance.ESTIMATED_CORRECT}{{{key}}} {correct}\n"
        f"{performance.ESTIMATED_ANSWERS}{{{key}}} 4\n"
    )
    got = window_quality(parse_quality(text), "v")
    assert got.estimated_accuracy == pytest.approx(3.1 / 4) and got.estimated_answers == 4


def test_estimation_follows_a_covariate_shift() -> None:
    """A calibrated classifier's estimate tracks its realised accuracy when only the
    inputs move: the shift sends rows to where the model is less sure."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(
        6000, 5, n_informative=3, n_redundant=0, class_sep=1.5, random_state=0
    )
    model = LogisticRegression().fit(x[:2000], y[:2000])
    calibration = fit_calibration(
        model.predict_proba(x[2000:4000]), model.predict(x[2000:4000]) == y[2000:4000]
    )
    rest_x, rest_y = x[4000:], y[4000:]
    # Resample towards the boundary (low confidence): covariate shift, P(y|x) unchanged.
    top = model.predict_proba(rest_x).max(axis=1)
    shifted = np.argsort(top)[:600]
    estimate = calibration.expected(top[shifted]).mean()
    realised = (model.predict(rest_x[shifted]) == rest_y[shifted]).mean()
    assert realised < calibration.accuracy - 0.1  # the shift did hurt
    assert abs(estimate - realised) < 0.03


def test_prediction_drift_on_the_reference_bins() -> None:
    reference = class_predictions(np.array([0, 0, 1, 1, 2, 2] * 50), np.arange(3), CLASSES)
    assert reference.counts == [100, 100, 100, 0]
    same = f'{performance.PREDICTED_CLASS}{{class="cat",model="m",version="v"}} 10\n'
    same += f'{performance.PREDICTED_CLASS}{{class="dog",model="m",version="v"}} 10\n'
    same += f'{performance.PREDICTED_CLASS}{{class="eel",model="m",version="v"}} 10\n'
    flat = window_quality(parse_quality(same), "v", reference, "chi2")
    assert flat.prediction_drift is not None and not flat.prediction_drift.drifted
    skewed = same.replace("} 10\n", "} 200\n", 1)
    drifted = window_quality(parse_quality(skewed), "v", reference, "chi2")
    assert drifted.prediction_drift is not None and drifted.prediction_drift.drifted
    assert drifted.predictions == 220

    values = value_predictions(np.linspace(0, 9, 100), bins=3)
    edges = values.bin_labels()
    buckets = "".join(
        f'{performance.PREDICTED_VALUE}{{le="{le}",model="m",version="v"}} {c}\n'
        for le, c in zip(edges, [0, 0, 0, 0, 40], strict=True)
    )
    assert len(edges) == 5
    high = window_quality(parse_quality(buckets), "v", values, "psi")
    assert high.prediction_drift is not None and high.prediction_drift.drifted


def test_bad_quality_text_is_refused() -> None:
    with pytest.raises(SourceInvalid, match="no 'version' label"):
        parse_quality(f'{performance.CONFUSION}{{label="a",prediction="a"}} 1\n')
    with pytest.raises(SourceInvalid, match="is not a count"):
        parse_quality(f'{performance.ESTIMATED_ANSWERS}{{version="v"}} -1\n')


def test_a_large_reference_keeps_a_small_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    top = rng.uniform(0.5, 1.0, 50_000)
    proba = np.column_stack([top, 1 - top])
    hits = rng.random(50_000) < top  # calibrated: right as often as it is sure
    full = fit_calibration(proba, hits)
    monkeypatch.setattr(calibration_module, "MAX_KNOTS", 20)
    small = fit_calibration(proba, hits)
    assert len(full.confidence) > 20 >= len(small.confidence)
    assert all(b >= a for a, b in zip(small.correct, small.correct[1:], strict=False))
    grid = np.linspace(0.55, 0.95, 9)
    np.testing.assert_allclose(small.expected(grid), grid, atol=0.05)
    np.testing.assert_allclose(small.expected(grid), full.expected(grid), atol=0.03)
