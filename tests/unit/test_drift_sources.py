"""Live sources: exposition text written by prometheus_client itself, and the Prometheus
HTTP API client against a real (misbehaving) HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from kubeloop.drift.profile import OTHER_CATEGORY, FeatureProfile, Profile
from kubeloop.drift.sources import (
    DEFAULT_BUCKET_QUERY,
    SourceInvalid,
    SourceUnavailable,
    fetch_metrics,
    parse_metrics,
    prometheus_counts,
    query_prometheus,
    render_query,
    window,
)

PROFILE = Profile(
    rows=100,
    features=[
        FeatureProfile(name="x", kind="numeric", edges=[0.1, 0.5, 2.0], counts=[1, 2, 3, 4]),
        FeatureProfile(name="y", kind="numeric", edges=[1 / 3, 1e6], counts=[5, 5, 0]),
        FeatureProfile(
            name="color", kind="categorical", categories=["red", "green"], counts=[6, 3, 1]
        ),
    ],
)

# Per-bin counts the fake server holds, and what parse_metrics must give back (padded).
X_COUNTS = [3, 0, 5, 2]
Y_COUNTS = [1, 1, 0]
CATEGORY_COUNTS = {"red": 3.0, "blue": 1.0, OTHER_CATEGORY: 1.0}
EXPECTED = np.array([X_COUNTS, [*Y_COUNTS, 0], [3, 0, 2, 0]], dtype=float)


class FeatureCollector(Collector):
    """What a model server exports: one histogram child per numeric feature, one counter
    per (feature, category)."""

    def __init__(
        self,
        models: tuple[str, ...] = ("iris",),
        label: str = "repr",
        numeric: dict[str, list[int]] | None = None,
    ) -> None:
        self.models = models
        self.label = label
        self.numeric = {"x": X_COUNTS, "y": Y_COUNTS} if numeric is None else numeric

    def _labels(self, feature: FeatureProfile) -> list[str]:
        if self.label == "repr":
            return feature.bin_labels()
        return [f"{e:.7g}" for e in feature.edges] + ["+Inf"]

    def collect(self) -> Iterator[HistogramMetricFamily | CounterMetricFamily]:
        histogram = HistogramMetricFamily(
            "kubeloop_model_feature", "Served inputs per feature.", labels=["model", "feature"]
        )
        categories = CounterMetricFamily(
            "kubeloop_model_feature_category",
            "Served inputs per category.",
            labels=["model", "feature", "category"],
        )
        for model in self.models:
            for name, counts in self.numeric.items():
                cumulative = np.cumsum(counts).tolist()
                buckets = list(zip(self._labels(PROFILE.feature(name)), cumulative, strict=True))
                histogram.add_metric([model, name], buckets=buckets, sum_value=0.0)
            for category, count in CATEGORY_COUNTS.items():
                categories.add_metric([model, "color", category], count)
        yield histogram
        yield categories


def exposition(collector: Collector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


# --- /metrics text ---------------------------------------------------------------------


def test_parse_metrics_gives_per_bin_counts() -> None:
    text = exposition(FeatureCollector())
    assert 'kubeloop_model_feature_bucket{feature="x",le="0.1",model="iris"} 3.0' in text
    np.testing.assert_array_equal(parse_metrics(text, PROFILE), EXPECTED)
    np.testing.assert_array_equal(parse_metrics(text, PROFILE, model="iris"), EXPECTED)


def test_bucket_bounds_match_edges_within_float_tolerance() -> None:
    text = exposition(FeatureCollector(label="%.7g"))
    assert 'le="0.3333333"' in text
    np.testing.assert_array_equal(parse_metrics(text, PROFILE), EXPECTED)


def test_picks_one_model_among_several() -> None:
    text = exposition(FeatureCollector(models=("iris", "wine")))
    np.testing.assert_array_equal(parse_metrics(text, PROFILE, model="wine"), EXPECTED)
    with pytest.raises(SourceInvalid, match=r"several models \['iris', 'wine'\]"):
        parse_metrics(text, PROFILE)
    with pytest.raises(SourceInvalid, match="no metrics for model 'nope'"):
        parse_metrics(text, PROFILE, model="nope")


def test_features_without_series_count_zero() -> None:
    text = exposition(FeatureCollector(numeric={"x": X_COUNTS}))
    got = parse_metrics(text, PROFILE)
    np.testing.assert_array_equal(got[1], [0, 0, 0, 0])
    np.testing.assert_array_equal(got[0], X_COUNTS)


def test_a_fresh_server_reads_as_zero_samples() -> None:
    text = exposition(FeatureCollector(models=()))
    assert "# TYPE kubeloop_model_feature histogram" in text
    assert not parse_metrics(text, PROFILE, model="iris").any()


def test_endpoint_without_feature_metrics_is_invalid() -> None:
    with pytest.raises(SourceInvalid, match="is monitoring enabled"):
        parse_metrics("# TYPE up gauge\nup 1\n", PROFILE)


def bucket_lines(les: list[str], values: list[float]) -> str:
    return "".join(
        f'kubeloop_model_feature_bucket{{model="iris",feature="x",le="{le}"}} {v}\n'
        for le, v in zip(les, values, strict=True)
    )


HEADER = "# TYPE kubeloop_model_feature histogram\n"


@pytest.mark.parametrize(
    ("les", "values", "message"),
    [
        (["0.1", "0.5", "1.0", "2.0", "+Inf"], [1, 2, 3, 4, 5], "le=1.0 is not one of"),
        (["0.1", "0.5", "+Inf"], [1, 2, 3], r"buckets missing for le=\['2.0'\]"),
        (["0.1", "0.5", "2.0"], [1, 2, 3], r"buckets missing for le=\['\+Inf'\]"),
        (["0.1", "0.5", "2.0", "+Inf"], [5, 4, 6, 7], "cumulative buckets decrease"),
        (["0.1", "0.5", "2.0", "+Inf"], [1, 2, float("nan"), 4], "not a finite"),
        (["0.1", "0.5", "2.0", "+Inf"], [1, -2, 3, 4], "not a finite non-negative"),
        (["0.1", "0.10000000001", "2.0", "+Inf"], [1, 2, 3, 4], "two buckets for le"),
        (["0.1", "0.5", "2.0", "+Inf", "0.5"], [1, 2, 3, 4, 2], "duplicate series"),
    ],
)
def test_broken_histograms_are_invalid(les: list[str], values: list[float], message: str) -> None:
    with pytest.raises(SourceInvalid, match=message):
        parse_metrics(HEADER + bucket_lines(les, values), PROFILE.select(["x"]))


def test_malformed_text_is_invalid() -> None:
    with pytest.raises(SourceInvalid, match="malformed metrics text"):
        parse_metrics(HEADER + 'kubeloop_model_feature_bucket{le="0.1" 3\n', PROFILE)
    with pytest.raises(SourceInvalid, match="without 'feature'"):
        parse_metrics(HEADER + 'kubeloop_model_feature_bucket{le="0.1"} 3\n', PROFILE)


def test_window_subtracts_scrapes_and_handles_counter_resets() -> None:
    previous = np.array([[5.0, 5, 5], [10, 10, 10]])
    current = np.array([[6.0, 9, 5], [1, 2, 30]])  # second feature's pod restarted
    np.testing.assert_array_equal(window(previous, current), [[1, 4, 0], [1, 2, 30]])
    with pytest.raises(ValueError, match="different shapes"):
        window(previous, current[:1])


# --- query templates -------------------------------------------------------------------


def test_render_query_fills_placeholders_and_keeps_promql_braces() -> None:
    query = render_query(
        DEFAULT_BUCKET_QUERY,
        feature='we"ird\\',
        model="iris",
        namespace="ml",
        window="5m",
        version="1a2b",
    )
    assert query == (
        "sum by (le) (increase(kubeloop_model_feature_bucket"
        '{namespace="ml", model="iris", version="1a2b", feature="we\\"ird\\\\"}[5m]))'
    )


def test_render_query_reports_missing_and_unknown_values() -> None:
    with pytest.raises(ValueError, match=r"uses \{window\} but no value"):
        render_query("x[{window}]", feature="f")
    with pytest.raises(ValueError, match="unknown query placeholders"):
        render_query("x", pod="p")


# --- the Prometheus HTTP API against a real server --------------------------------------


def vector(series: list[tuple[dict[str, str], str]]) -> bytes:
    result = [{"metric": labels, "value": [1700000000.0, value]} for labels, value in series]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


@dataclass
class Behaviour:
    mode: str = "ok"
    release: threading.Event = field(default_factory=threading.Event)
    paths: list[str] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    server: FakePrometheus

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        behaviour = self.server.behaviour
        behaviour.paths.append(self.path)
        # The client hanging up mid-answer is what the tests expect it to do.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.answer(behaviour)

    def answer(self, behaviour: Behaviour) -> None:
        mode = behaviour.mode
        if mode == "ok":
            body = vector([({"le": "0.1"}, "3"), ({"le": "+Inf"}, "4")])
            self.reply(200, body, len(body))
        elif mode == "by-query":
            body = self.by_query(parse_qs(urlparse(self.path).query)["query"][0])
            self.reply(200, body, len(body))
        elif mode == "hang":
            behaviour.release.wait(30)
        elif mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not behaviour.release.wait(0.02):
                self.wfile.write(b" ")
                self.wfile.flush()
        elif mode == "garbage":
            self.reply(200, b"<html>surprise</html>", 21)
        elif mode == "huge":
            self.send_response(200)  # no Content-Length: the client must count
            self.end_headers()
            chunk = b"[" * 65536
            for _ in range(2000):  # 128 MiB if nobody stops us
                self.wfile.write(chunk)
        elif mode == "huge-declared":
            self.reply(200, b"{}", 10**9)
        elif mode == "error":
            self.reply(503, b"overloaded", 10)
        elif mode == "bad-query":
            body = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"})
            self.reply(400, body.encode(), len(body))
        elif mode == "matrix":
            body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})
            self.reply(200, body.encode(), len(body))
        elif mode == "metrics":
            body = exposition(FeatureCollector()).encode()
            self.reply(200, body, len(body))
        elif mode == "not-found":
            self.reply(404, b"not found", 9)
        elif mode == "bad-element":
            body = vector([({"le": "0.1"}, "three")])
            self.reply(200, body, len(body))

    @staticmethod
    def by_query(query: str) -> bytes:
        for name, counts in (("x", X_COUNTS), ("y", Y_COUNTS)):
            if f'feature="{name}"' in query:
                labels = PROFILE.feature(name).bin_labels()
                cumulative = np.cumsum(counts).tolist()
                return vector(
                    [({"le": le}, str(v)) for le, v in zip(labels, cumulative, strict=True)]
                )
        return vector([({"category": c}, str(v)) for c, v in CATEGORY_COUNTS.items()])


class FakePrometheus(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviour = Behaviour()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.behaviour.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_query_returns_the_vector(prometheus: FakePrometheus) -> None:
    series = query_prometheus(prometheus.url, 'up{job="x"}', timeout=5)
    assert [(s.labels, s.value) for s in series] == [({"le": "0.1"}, 3.0), ({"le": "+Inf"}, 4.0)]
    assert prometheus.behaviour.paths == ["/api/v1/query?query=up%7Bjob%3D%22x%22%7D"]


def test_hanging_server_is_unavailable_within_the_time_budget(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "hang"
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="Timeout"):
        query_prometheus(prometheus.url, "up", timeout=0.4, retries=1, backoff=0.05)
    elapsed = time.monotonic() - start
    assert len(prometheus.behaviour.paths) == 2  # retried once
    assert elapsed < 0.4 * 2 + 1.0


def test_trickling_server_is_cut_off_at_the_deadline(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "trickle"
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="deadline"):
        query_prometheus(prometheus.url, "up", timeout=0.4, retries=0)
    assert time.monotonic() - start < 0.4 + 1.0


def test_server_errors_are_retried_then_unavailable(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "error"
    with pytest.raises(SourceUnavailable, match="HTTP 503"):
        query_prometheus(prometheus.url, "up", timeout=5, retries=2, backoff=0.01)
    assert len(prometheus.behaviour.paths) == 3


def test_total_timeout_bounds_the_retries(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "error"
    with pytest.raises(SourceUnavailable):
        query_prometheus(
            prometheus.url, "up", timeout=5, retries=10, backoff=0.2, total_timeout=0.5
        )
    # 0.2 + 0.4 of backoff already overshoots 0.5 s: two attempts, no more.
    assert len(prometheus.behaviour.paths) == 2


def test_refused_connection_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(SourceUnavailable, match="ConnectionError"):
        query_prometheus(f"http://127.0.0.1:{port}", "up", timeout=2, retries=1, backoff=0.01)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "not JSON"),
        ("bad-query", "query failed: parse error"),
        ("matrix", "expected an instant vector"),
        ("bad-element", "unexpected vector element"),
        ("huge-declared", "exceeds the 1048576-byte limit"),
    ],
)
def test_unusable_answers_are_invalid_without_retry(
    prometheus: FakePrometheus, mode: str, message: str
) -> None:
    prometheus.behaviour.mode = mode
    with pytest.raises(SourceInvalid, match=message):
        query_prometheus(prometheus.url, "up", timeout=5, max_bytes=2**20)
    assert len(prometheus.behaviour.paths) == 1


def test_huge_body_is_refused_while_streaming(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "huge"
    start = time.monotonic()
    with pytest.raises(SourceInvalid, match="exceeds the 1048576-byte limit"):
        query_prometheus(prometheus.url, "up", timeout=10, max_bytes=2**20)
    assert time.monotonic() - start < 5


def test_prometheus_counts_queries_every_feature(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "by-query"
    got = prometheus_counts(
        prometheus.url,
        PROFILE,
        model="iris",
        namespace="ml",
        window="10m",
        version="v7",
        timeout=5,
    )
    np.testing.assert_array_equal(got, EXPECTED)
    queries = [parse_qs(urlparse(p).query)["query"][0] for p in prometheus.behaviour.paths]
    assert len(queries) == 3
    assert all('namespace="ml", model="iris", version="v7"' in q and "[10m]" in q for q in queries)
    assert queries[2].startswith("sum by (category)")


def test_prometheus_counts_rejects_series_without_the_label(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "ok"  # answers with `le` series for every query
    with pytest.raises(SourceInvalid, match="feature 'x': buckets missing"):
        prometheus_counts(
            prometheus.url,
            PROFILE.select(["x"]),
            model="m",
            namespace="n",
            window="1m",
            version="v",
        )
    with pytest.raises(SourceInvalid, match="without a 'category' label"):
        prometheus_counts(
            prometheus.url, PROFILE.select(["color"]), model="m", namespace="n", window="1m"
        )


def test_fetch_metrics_reads_the_model_servers_endpoint(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "metrics"
    text = fetch_metrics(prometheus.url + "/metrics", timeout=5)
    np.testing.assert_array_equal(parse_metrics(text, PROFILE, model="iris"), EXPECTED)


def test_fetch_metrics_bounds_and_errors(prometheus: FakePrometheus) -> None:
    prometheus.behaviour.mode = "not-found"
    with pytest.raises(SourceInvalid, match="HTTP 404"):
        fetch_metrics(prometheus.url + "/metrics", timeout=5)
    prometheus.behaviour.mode = "huge"
    with pytest.raises(SourceInvalid, match="exceeds"):
        fetch_metrics(prometheus.url + "/metrics", timeout=10, max_bytes=2**20)
    prometheus.behaviour.mode = "hang"
    start = time.monotonic()
    with pytest.raises(SourceUnavailable):
        fetch_metrics(prometheus.url + "/metrics", timeout=0.3, retries=0)
    assert time.monotonic() - start < 0.3 + 1.0
