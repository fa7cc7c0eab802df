"""The quality benchmark's pure parts (the shift, the concept drift, the delay, the goals
computed from the results, not written by hand) and its Kubeloop side: the product's
server collectors and DriftMonitor judgement, on a small model, act on a concept drift
with performance configured and not on the inputs alone."""

from __future__ import annotations

import copy
import importlib.util
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.kubetest import ROOT


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "bench" /
                                                  "quality_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_shift_resamples_on_its_feature(bench: ModuleType) -> None:
    column = np.random.default_rng(0).normal(size=20_000)
    rng = np.random.default_rng(1)
    assert abs(column[bench.shifted_sample(column, 0.0, 20_000, rng)].mean()) < 0.05
    up = column[bench.shifted_sample(column, 1.0, 20_000, rng)].mean()
    down = column[bench.shifted_sample(column, -1.0, 20_000, rng)].mean()
    # exp(s z) on a normal column moves its mean by s standard deviations
    assert up == pytest.approx(1.0, abs=0.1) and down == pytest.approx(-1.0, abs=0.1)


def test_concept_drift_moves_labels_in_the_region_only(bench: ModuleType) -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    region = np.array([True, True, True, False, False, False])
    np.testing.assert_array_equal(bench.concept_drift(y, region, 3), [1, 2, 0, 0, 1, 2])
    np.testing.assert_array_equal(y, [0, 1, 2, 0, 1, 2])  # not in place


@pytest.mark.parametrize(
    ("acted", "arrival", "expected"),
    [
        ([False, False, True, False], 2, 1),  # acts at the end of the first drifted window
        ([False, False, False, True], 2, 2),
        ([True, False, False, False], 2, None),  # acting before the drift is not detection
        ([False] * 4, 2, None),
    ],
)
def test_delay(bench: ModuleType, acted: list[bool], arrival: int, expected: int | None) -> None:
    assert bench.delay(acted, arrival) == expected


def test_mae(bench: ModuleType) -> None:
    assert bench.mae([0.9, 0.8], [0.8, 0.8]) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        bench.mae([0.9], [0.8, 0.8])


def test_the_product_acts_on_concept_drift_not_on_inputs(bench: ModuleType) -> None:
    """run_windows goes through the server's collectors and judge(): labels flipped on a
    region, inputs unchanged: performance acts in the first drifted window, input-only
    never; a shift of an unused feature alone: input-only acts, performance does not."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=40_000, n_features=4, n_informative=3,
                               n_redundant=0, n_classes=2, class_sep=0.5,
                               flip_y=0.1, random_state=0)
    x = np.hstack([x, np.random.default_rng(0).normal(size=(len(y), 1))])
    names = ["a", "b", "c", "d", "unused"]
    data = bench.split("t", x, y, names, [0, 1, 2, 3], [0], 10_000, 10_000, 0)
    model, profile = bench.prepared(data, 0)
    pool_x, pool_y = data.pool
    flipped = bench.concept_drift(pool_y, pool_x[:, 0] > np.quantile(pool_x[:, 0], 0.7), 2)
    rng = np.random.default_rng(1)
    plan = []
    for w in range(4):
        index = rng.choice(len(pool_y), size=3000, replace=False)
        rows = pool_x[index].copy()
        if w == 1:
            rows[:, 4] += 3.0  # a harmless shift
        plan.append((rows, (flipped if w >= 2 else pool_y)[index]))
    run = bench.run_windows(data, model, profile, plan, 2)
    acted = run["acted"]
    # The server's estimate (calibrated confidence) follows the realised accuracy while
    # P(label | inputs) holds, and is blind to the concept drift.
    for w in range(4):
        assert run["estimated"][w] == pytest.approx(run["realised"][0], abs=0.03)
    assert run["realised"][3] < run["realised"][0] - 0.1
    assert acted["Kubeloop, performance"] == [False, False, True, True]
    assert acted["Kubeloop input-only, psi"] == [False, True, False, False]
    assert not any(acted["Kubeloop, performance estimated only"])


def results() -> dict[str, Any]:
    acted = {name: [False] * 10 for name in ("Kubeloop, performance",
                                             "Kubeloop input-only, psi",
                                             "Kubeloop input-only, ks",
                                             "Evidently DataDriftPreset")}
    acted["Kubeloop input-only, ks"] = [False] * 5 + [True] * 5
    rates = {name: sum(a) / 10 for name, a in acted.items()}
    estimation = {"data": "d", "windows": 2, "shifts": ["x0 -1.00", "x0 +1.00"],
                  "realised range": [0.7, 0.9], "kubeloop mae": 0.01, "nannyml mae": 0.012}
    run = {"acted": {"Kubeloop, performance": [False, False, True],
                     "Kubeloop input-only, psi": [False] * 3},
           "realised": [0.9, 0.9, 0.7], "delay": {"Kubeloop, performance": 1,
                                                  "Kubeloop input-only, psi": None},
           "acted before the drift": {"Kubeloop, performance": 0,
                                      "Kubeloop input-only, psi": 0}}
    return {
        "commit": "0" * 40, "dirty": False, "date": "2026-12-07T00:00:00+00:00",
        "seconds": 100.0,
        "machine": {"cpus": 2, "cpu": "cpu", "python": "3.11", "load before": [1.0],
                    "load after": [1.0]},
        "versions": {"kubeloop": {"scikit-learn": "1", "numpy": "2"},
                     "nannyml": {"nannyml": "0.13.1"}, "evidently": {"evidently": "0.7.23"}},
        "estimation": [estimation],
        "false alarms": {"data": "d", "windows": 10, "acted": acted, "rate": rates,
                         "rate, windows without shift": rates,
                         "rate, windows with the unused feature shifted": rates,
                         "evidently any column drifted": [False] * 10,
                         "evidently method": "m", "input drift reported": [False] * 10,
                         "realised": [0.9] * 10, "judged": [0.9] * 10,
                         "reference accuracy": 0.9},
        "detection": {"data": "d", "windows": 3, "arrival": 2, "seeds": 1, "region": "r",
                      "region share": 0.1, "runs": [run]},
    }


def test_the_goals_are_read_from_the_results(bench: ModuleType) -> None:
    text = bench.table(results())
    assert "Kubeloop MAE 0.0100 vs NannyML 0.0120, goal <= NannyML's and <= 0.02: **met**" \
        in text
    assert "Kubeloop with performance: 0.0%, goal <= 1%: **met**" in text
    assert "goal within 2: **met**; input-only never firing: **met**" in text

    worse = results()
    worse["estimation"][0]["kubeloop mae"] = 0.013  # above NannyML's, below 0.02
    worse["false alarms"]["rate"]["Kubeloop, performance"] = 0.02
    run = worse["detection"]["runs"][0]
    run["delay"] = {"Kubeloop, performance": 3, "Kubeloop input-only, psi": 1}
    text = bench.table(worse)
    assert "NannyML 0.0120, goal <= NannyML's and <= 0.02: **missed**" in text
    assert "Kubeloop with performance: 2.0%, goal <= 1%: **missed**" in text
    assert "goal within 2: **missed**; input-only never firing: **missed**" in text


def test_render_replaces_only_its_section(
    bench: ModuleType, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench.BEGIN}\nOLD TABLE\n{bench.END}\nafter\n")
    monkeypatch.setattr(bench, "README", readme)
    bench.render(copy.deepcopy(results()))
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "OLD TABLE" not in text
    assert text.count(bench.BEGIN) == 1
