"""Canary figures: parsing a real model server's /metrics, windows, sums, p99, divergence."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import distance

from kubeloop.canary.figures import (
    MAX_CLASSES,
    MAX_TEXT_BYTES,
    Figures,
    FiguresInvalid,
    Sample,
    combine,
    delta,
    divergence,
    parse_sample,
    quantile,
)
from kubeloop.modeldir import LoadedModel
from kubeloop.serving.dataplane import DURATION_BUCKETS, DataPlane
from tests.unit.test_serving import model, model_dir, running  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train" / "train.py"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
CLASSES = ["setosa", "versicolor", "virginica"]
EDGES = (*DURATION_BUCKETS, math.inf)
TIMEOUT = 10
INF = math.inf


# -- a real model server ----------------------------------------------------------------


def infer(url: str, body: Any, model: str = "iris") -> int:  # noqa: F811
    data = json.dumps(body).encode()
    return requests.post(f"{url}/v2/models/{model}/infer", data=data, timeout=TIMEOUT).status_code


def matrix(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}


def scrape(url: str) -> str:
    return requests.get(f"{url}/metrics", timeout=TIMEOUT).text


class Exploding:
    def predict(self, rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


def test_a_live_servers_requests_errors_latency_and_predictions(model: LoadedModel) -> None:  # noqa: F811
    server = DataPlane(model.metadata)
    server.set_model(model)
    with running(server) as url:
        for _ in range(3):
            assert infer(url, matrix(ROWS)) == 200
        assert infer(url, {"inputs": []}) == 400
        assert infer(url, matrix(ROWS), model="nosuch") == 404
        server.model = dataclasses.replace(model, estimator=Exploding())
        for _ in range(2):
            assert infer(url, matrix(ROWS)) == 500
        text = scrape(url)

    sample = parse_sample(text, "iris")
    assert sample.requests == 7
    assert sample.errors == 2
    assert [le for le, _ in sample.buckets] == list(EDGES)
    assert sample.buckets[-1][1] == 7
    predicted = model.estimator.predict(np.array(ROWS))
    assert model.classes is not None
    assert dict(sample.predictions) == {
        label: 3.0 * int((predicted == cls).sum())
        for label, cls in zip(model.class_labels, model.classes, strict=True)
    }
    assert sum(sample.predictions.values()) == 9
    assert parse_sample(text) == sample
    assert parse_sample(text, "other") == Sample()

    figures = combine([sample])
    assert figures.error_percent == pytest.approx(100 * 2 / 7)
    assert figures.p99_seconds is not None
    assert 0 < figures.p99_seconds <= DURATION_BUCKETS[-1]


def test_a_fresh_server_has_zero_counts_and_an_empty_histogram(model: LoadedModel) -> None:  # noqa: F811
    server = DataPlane(model.metadata)
    server.set_model(model)
    with running(server) as url:
        sample = parse_sample(scrape(url), "iris")
    assert sample.requests == 0
    assert sample.errors == 0
    assert sample.buckets == tuple((le, 0.0) for le in EDGES)
    assert dict(sample.predictions) == dict.fromkeys(CLASSES, 0.0)
    assert combine([sample]).p99_seconds is None


# -- parsing text ---------------------------------------------------------------------------


def exposition(model: str = "iris", ok: float = 90, failed: float = 10, bad: float = 5) -> str:  # noqa: F811
    return f"""\
# TYPE kubeloop_model_requests counter
kubeloop_model_requests_total{{model="{model}",status="200"}} {ok}
kubeloop_model_requests_total{{model="{model}",status="503"}} {failed}
kubeloop_model_requests_total{{model="{model}",status="400"}} {bad}
kubeloop_model_requests_created{{model="{model}",status="200"}} 1.7e9
# TYPE kubeloop_model_request_duration_seconds histogram
kubeloop_model_request_duration_seconds_bucket{{le="0.1",model="{model}"}} {ok}
kubeloop_model_request_duration_seconds_bucket{{le="+Inf",model="{model}"}} {ok + failed + bad}
kubeloop_model_request_duration_seconds_count{{model="{model}"}} {ok + failed + bad}
kubeloop_model_request_duration_seconds_sum{{model="{model}"}} 4.5
# TYPE kubeloop_model_prediction counter
kubeloop_model_prediction_total{{class="cat",model="{model}"}} 60
kubeloop_model_prediction_total{{class="dog",model="{model}"}} 30
"""


def test_parse_counts_5xx_as_errors_and_every_status_as_a_request() -> None:
    assert parse_sample(exposition()) == Sample(
        requests=105,
        errors=10,
        buckets=((0.1, 90), (INF, 105)),
        predictions={"cat": 60, "dog": 30},
    )


def test_parse_picks_the_named_models_series() -> None:
    text = exposition("a", ok=1, failed=2) + exposition("b", ok=30, failed=4).replace("# TYPE", "#")
    assert parse_sample(text, "a").errors == 2
    assert parse_sample(text, "b").errors == 4
    assert parse_sample(text, "b").requests == 39
    assert parse_sample(text, "c") == Sample()
    with pytest.raises(FiguresInvalid, match="several models"):
        parse_sample(text)


def test_parse_of_text_without_the_families_is_zero() -> None:
    assert parse_sample("# nothing here\nother_metric 3\n") == Sample()
    assert parse_sample("") == Sample()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('kubeloop_model_requests_total{model="iris" 3\n', "malformed"),
        ('kubeloop_model_requests_total{model="iris",status="200"} x\n', "malformed"),
        ('kubeloop_model_requests_total{model="iris", =x} 1\n', "malformed"),  # IndexError
        ('kubeloop_model_requests_total{model="iris",status="200"} NaN\n', "not a count"),
        ('kubeloop_model_requests_total{model="iris",status="200"} -1\n', "not a count"),
        ('kubeloop_model_requests_total{model="iris",status="200"} +Inf\n', "not a count"),
        ('kubeloop_model_requests_total{model="iris"} 3\n', "no 'status' label"),
        ('kubeloop_model_requests_total{model="iris",status="ok"} 3\n', "HTTP status"),
        (
            'kubeloop_model_requests_total{model="iris",status="200"} 3\n'
            'kubeloop_model_requests_total{model="iris",status="200"} 4\n',
            "duplicate",
        ),
        ('kubeloop_model_prediction_total{model="iris"} 3\n', "no 'class' label"),
        ('kubeloop_model_request_duration_seconds_bucket{le="1"} 3\n', "no \\+Inf bucket"),
        ('kubeloop_model_request_duration_seconds_bucket{le="NaN"} 3\n', "NaN"),
        ('kubeloop_model_request_duration_seconds_bucket{le="soon"} 3\n', "not a number"),
        (
            'kubeloop_model_request_duration_seconds_bucket{le="1"} 5\n'
            'kubeloop_model_request_duration_seconds_bucket{le="+Inf"} 4\n',
            "decrease",
        ),
    ],
)
def test_unusable_text_is_figures_invalid(text: str, match: str) -> None:
    with pytest.raises(FiguresInvalid, match=match):
        parse_sample(text)


def test_text_over_one_mib_is_refused_in_bytes_not_characters() -> None:
    body = exposition()
    at_limit = body + "#" * (MAX_TEXT_BYTES - len(body) - 1) + "\n"
    assert len(at_limit.encode()) == MAX_TEXT_BYTES
    assert parse_sample(at_limit).requests == 105
    with pytest.raises(FiguresInvalid, match="larger than"):
        parse_sample(at_limit + "\n")
    wide = "# " + "é" * (MAX_TEXT_BYTES // 2) + "\n"
    assert len(wide) < MAX_TEXT_BYTES
    with pytest.raises(FiguresInvalid, match="larger than"):
        parse_sample(wide)


def predictions_text(classes: int) -> str:
    return "".join(
        f'kubeloop_model_prediction_total{{class="c{i}",model="iris"}} 1\n' for i in range(classes)
    )


def test_more_than_a_thousand_classes_is_refused() -> None:
    assert len(parse_sample(predictions_text(MAX_CLASSES)).predictions) == MAX_CLASSES
    with pytest.raises(FiguresInvalid, match="classes"):
        parse_sample(predictions_text(MAX_CLASSES + 1))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.text(alphabet='kubeloop_model_requests_total{}="+-.,1234567890eInfNa \n#', max_size=120),
        st.builds(
            lambda cut, junk: exposition()[:cut] + junk,
            st.integers(0, len(exposition())),
            st.text(max_size=20),
        ),
    )
)
def test_any_text_gives_a_sample_or_figures_invalid(text: str) -> None:
    try:
        sample = parse_sample(text)
    except FiguresInvalid:
        return
    assert sample.requests >= sample.errors >= 0


def test_a_sample_is_read_only_and_does_not_alias_its_input() -> None:
    counts = {"cat": 1.0}
    sample = Sample(requests=1, predictions=counts)
    counts["cat"] = 5.0
    assert sample.predictions["cat"] == 1.0
    with pytest.raises(TypeError):
        sample.predictions["cat"] = 2.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.requests = 2  # type: ignore[misc]


# -- windows ---------------------------------------------------------------------------------


BASE = Sample(
    requests=100, errors=2, buckets=((0.1, 80), (INF, 100)), predictions={"cat": 70, "dog": 30}
)


def test_delta_without_a_baseline_is_the_current_sample() -> None:
    assert delta(BASE, None) is BASE


def test_delta_subtracts_every_counter() -> None:
    current = Sample(
        requests=150,
        errors=5,
        buckets=((0.1, 110), (INF, 150)),
        predictions={"cat": 90, "dog": 40, "eel": 2},
    )
    assert delta(current, BASE) == Sample(
        requests=50,
        errors=3,
        buckets=((0.1, 30), (INF, 50)),
        predictions={"cat": 20, "dog": 10, "eel": 2},
    )
    assert delta(BASE, BASE) == Sample(
        requests=0, errors=0, buckets=((0.1, 0), (INF, 0)), predictions={"cat": 0, "dog": 0}
    )


def test_delta_from_a_baseline_without_a_histogram_keeps_the_current_one() -> None:
    baseline = dataclasses.replace(BASE, buckets=())
    current = dataclasses.replace(BASE, requests=120)
    assert delta(current, baseline).buckets == BASE.buckets
    assert delta(current, baseline).requests == 20


@pytest.mark.parametrize(
    "restarted",
    [
        dataclasses.replace(BASE, requests=99),
        dataclasses.replace(BASE, requests=120, errors=1),
        dataclasses.replace(BASE, requests=120, buckets=((0.1, 79), (INF, 120))),
        dataclasses.replace(BASE, requests=120, buckets=((0.2, 90), (INF, 120))),
        dataclasses.replace(BASE, requests=120, buckets=()),
        dataclasses.replace(BASE, requests=120, predictions={"cat": 90, "dog": 29}),
        dataclasses.replace(BASE, requests=120, predictions={"cat": 120}),
    ],
    ids=["requests", "errors", "bucket", "edges", "no-histogram", "class-count", "class-gone"],
)
def test_delta_after_a_counter_reset_is_the_current_sample(restarted: Sample) -> None:
    assert delta(restarted, BASE) is restarted


# -- tracks ----------------------------------------------------------------------------------


def test_combine_sums_pods_and_takes_p99_over_the_summed_histogram() -> None:
    one = Sample(
        requests=60, errors=3, buckets=((0.1, 50), (0.2, 60), (INF, 60)), predictions={"cat": 60}
    )
    two = Sample(
        requests=40,
        errors=1,
        buckets=((0.1, 10), (0.2, 30), (INF, 40)),
        predictions={"cat": 10, "dog": 30},
    )
    figures = combine([one, two])
    assert figures.requests == 100
    assert figures.errors == 4
    assert figures.error_percent == pytest.approx(4.0)
    assert figures.pods == 2
    assert dict(figures.predictions) == {"cat": 70, "dog": 30}
    # Summed: 60 at 0.1, 90 at 0.2, 100 at +Inf; rank 99 lies in +Inf: the top finite bound.
    assert figures.p99_seconds == 0.2
    assert combine([one]).p99_seconds == pytest.approx(0.1 + 0.1 * (59.4 - 50) / 10)


def test_combine_refuses_histograms_with_different_edges() -> None:
    one = Sample(requests=1, buckets=((0.1, 1), (INF, 1)))
    two = Sample(requests=1, buckets=((0.2, 1), (INF, 1)))
    with pytest.raises(FiguresInvalid, match="edges"):
        combine([one, two])


def test_combine_counts_a_pod_without_histogram_in_requests_only() -> None:
    figures = combine([Sample(requests=10, buckets=((0.1, 10), (INF, 10))), Sample(requests=5)])
    assert figures.requests == 15
    assert figures.p99_seconds == pytest.approx(0.099)


def test_combine_without_requests_or_pods_has_no_p99_or_error_rate() -> None:
    assert combine([]) == Figures(requests=0, errors=0, p99_seconds=None, predictions={}, pods=0)
    idle = combine([Sample(buckets=((0.1, 0), (INF, 0)))])
    assert idle.p99_seconds is None
    assert idle.error_percent is None
    assert idle.pods == 1


# -- quantile ----------------------------------------------------------------------------------


HISTOGRAM = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (INF, 40.0)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, HISTOGRAM, 0.15),  # rank 20: 10 of the 20 in (0.1, 0.2]
        (0.99, HISTOGRAM, 0.488),  # rank 39.6: 9.6 of the 10 in (0.2, 0.5]
        (0.25, HISTOGRAM, 0.1),  # rank 10: the top of the first bucket
        (0.1, HISTOGRAM, 0.04),  # rank 4 in [0, 0.1]: the first bucket starts at 0
        (0.0, HISTOGRAM, 0.0),
        (1.0, HISTOGRAM, 0.5),
        (0.5, list(reversed(HISTOGRAM)), 0.15),
        (0.99, [(0.1, 10.0), (0.2, 10.0), (INF, 20.0)], 0.2),  # in +Inf: highest finite
        (0.5, [(0.1, 10.0), (0.2, 10.0), (INF, 20.0)], 0.1),
        (0.5, [(-1.0, 4.0), (1.0, 6.0), (INF, 6.0)], -1.0),  # a first bound <= 0 is returned
    ],
)
def test_quantile_interpolates_like_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float
) -> None:
    assert quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [(0.1, 0.0), (INF, 0.0)],
        [(INF, 5.0)],
        [(0.1, 3.0), (0.2, 5.0)],
    ],
    ids=["no-buckets", "zero-count", "only-inf", "no-inf"],
)
def test_quantile_of_an_unusable_histogram_is_none(buckets: list[tuple[float, float]]) -> None:
    assert quantile(0.99, buckets) is None


def test_quantile_outside_zero_to_one_is_an_error() -> None:
    for q in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="quantile"):
            quantile(q, HISTOGRAM)


# -- divergence --------------------------------------------------------------------------------


def test_divergence_of_identical_or_proportional_counts_is_zero() -> None:
    assert divergence({"a": 3, "b": 1}, {"a": 3, "b": 1}) == pytest.approx(0.0, abs=1e-12)
    assert divergence({"a": 3, "b": 1}, {"b": 10, "a": 30}) == pytest.approx(0.0, abs=1e-12)
    assert divergence({"a": 3, "b": 0}, {"a": 7}) == pytest.approx(0.0, abs=1e-12)


def test_divergence_of_disjoint_classes_is_one() -> None:
    assert divergence({"a": 5}, {"b": 2}) == 1.0
    assert divergence({"a": 5, "b": 0}, {"a": 0, "b": 2}) == 1.0


def test_divergence_matches_scipy_base_two() -> None:
    a = {"x": 10.0, "y": 30.0, "z": 60.0}
    b = {"x": 25.0, "y": 25.0, "w": 50.0}
    labels = sorted(set(a) | set(b))
    expected = distance.jensenshannon(
        [a.get(k, 0) for k in labels], [b.get(k, 0) for k in labels], base=2
    )
    assert divergence(a, b) == pytest.approx(expected)
    assert 0.2 < expected < 0.9


@pytest.mark.parametrize(
    ("a", "b"),
    [({}, {"a": 1}), ({"a": 1}, {}), ({"a": 0}, {"a": 1}), ({}, {})],
)
def test_divergence_without_counts_on_either_side_is_none(
    a: dict[str, float], b: dict[str, float]
) -> None:
    assert divergence(a, b) is None
