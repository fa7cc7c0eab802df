"""The canary's measurement windows (canary/measure.py): which pods are read, and what
each pod's counters contribute to a window — since its baseline, whole when it is new,
from now on when it was missed."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest

from kubeloop.canary.figures import Sample
from kubeloop.canary.measure import CANARY, STABLE, ServingPod, Window, serving_pods, track_figures

OPENED = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
BEFORE, AFTER = OPENED - dt.timedelta(minutes=5), OPENED + dt.timedelta(seconds=5)


def sample(requests: float, errors: float = 0.0) -> Sample:
    return Sample(
        requests=requests, errors=errors, buckets=((0.01, requests), (float("inf"), requests))
    )


def pod(uid: str, track: str, created: dt.datetime = BEFORE) -> ServingPod:
    return ServingPod(uid, track, f"http://{uid}:8080/metrics", created)


def window(**baselines: Sample) -> Window:
    return Window("s3://m/v2", 1, 0.0, OPENED, 60.0, dict(baselines))


def test_counters_since_the_baseline_summed_over_the_track() -> None:
    pods = [pod("a", CANARY), pod("b", CANARY), pod("s", STABLE)]
    now = {"a": sample(150, 5), "b": sample(80, 1), "s": sample(900)}
    figures = track_figures(CANARY, pods, now, window(a=sample(100, 1), b=sample(40)))
    assert figures is not None
    assert (figures.requests, figures.errors, figures.pods) == (90, 5, 2)
    assert figures.error_percent is not None and round(figures.error_percent, 3) == 5.556


def test_a_server_restarted_in_the_window_counts_from_zero() -> None:
    figures = track_figures(
        CANARY, [pod("a", CANARY)], {"a": sample(30, 3)}, window(a=sample(500, 0))
    )
    assert figures is not None and (figures.requests, figures.errors) == (30, 3)


def test_a_pod_new_since_the_window_counts_whole() -> None:
    figures = track_figures(CANARY, [pod("n", CANARY, created=AFTER)], {"n": sample(40)}, window())
    assert figures is not None and figures.requests == 40


def test_a_pod_missed_at_the_baseline_counts_from_now_on() -> None:
    missed = window()
    figures = track_figures(CANARY, [pod("m", CANARY)], {"m": sample(700, 70)}, missed)
    assert figures is not None and (figures.requests, figures.errors) == (0, 0)
    assert missed.baselines["m"] == sample(700, 70)
    later = track_figures(CANARY, [pod("m", CANARY)], {"m": sample(760, 70)}, missed)
    assert later is not None and later.requests == 60


def test_an_unreadable_canary_pod_means_no_figures() -> None:
    pods = [pod("a", CANARY), pod("b", CANARY)]
    now: dict[str, Sample | None] = {"a": sample(150), "b": None}
    assert track_figures(CANARY, pods, now, window(a=sample(100), b=sample(10))) is None
    assert track_figures(STABLE, pods, now, window()) is None  # no stable pod at all


def k8s_pod(
    uid: str,
    track: str,
    uri: str,
    *,
    ready: bool = True,
    ip: str | None = "10.0.0.1",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "uid": uid,
        "labels": {"kubeloop.io/track": track},
        "annotations": {"kubeloop.io/model-uri": uri},
        "creationTimestamp": "2026-12-01T11:00:00Z",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T12:00:00Z"
    status = {"podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]}
    return {"metadata": meta, "status": status}


def test_only_ready_pods_serving_their_tracks_model_are_read() -> None:
    uris = {CANARY: "s3://m/v2", STABLE: "s3://m/v1"}
    pods = [
        k8s_pod("c", "canary", "s3://m/v2"),
        k8s_pod("s", "stable", "s3://m/v1", ip="10.0.0.2"),
        k8s_pod("old", "stable", "s3://m/v0"),  # still rolling: another model
        k8s_pod("starting", "canary", "s3://m/v2", ready=False),
        k8s_pod("gone", "canary", "s3://m/v2", deleting=True),
        k8s_pod("noip", "canary", "s3://m/v2", ip=None),
    ]
    found = serving_pods(pods, 9000, uris)
    assert [(p.uid, p.track, p.url) for p in found] == [
        ("c", CANARY, "http://10.0.0.1:9000/metrics"),
        ("s", STABLE, "http://10.0.0.2:9000/metrics"),
    ]
    assert found[0].created == dt.datetime(2026, 12, 1, 11, 0, tzinfo=dt.UTC)


def test_a_window_opens_holds_longer_and_keeps_its_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Meter.measure: a baseline first; nothing before the interval; a hold judges the
    same window again later; a step's verdict is returned again until the status moves
    on (a failed status write does not lose it). The pods' reads are stubbed here: the
    integration tests read real servers."""
    from kubeloop.api.modeldeployment import CanaryAnalysis
    from kubeloop.canary import measure

    counters = {"c": sample(0), "s": sample(0)}
    clock = [100.0]
    monkeypatch.setattr(measure, "_read", lambda url, model: counters[url.split("//")[1][0]])
    monkeypatch.setattr(measure.time, "monotonic", lambda: clock[0])
    meter = measure.Meter()
    pods = [pod("c", CANARY), pod("s", STABLE)]
    analysis = CanaryAnalysis(interval="10s", min_requests=20)
    key = ("ModelDeployment", "ns", "iris")

    def judge_now() -> tuple[Any, float]:
        return asyncio.run(meter.measure(key, analysis, "iris", pods, "s3://m/v2", 1, OPENED))

    assert judge_now() == (None, 10.0)  # the baseline
    counters.update(c=sample(5), s=sample(40))
    clock[0] = 105.0
    assert judge_now() == (None, 5.0)  # not due yet
    clock[0] = 110.0
    held, _ = judge_now()
    assert held.verdict.decision == "Hold" and held.canary.requests == 5
    counters.update(c=sample(30, 3), s=sample(90))
    clock[0] = 115.0
    assert judge_now()[0] is None  # the hold waits another interval
    clock[0] = 120.0
    failed, _ = judge_now()
    assert failed.verdict.decision == "Fail" and failed.canary.requests == 30  # whole window
    assert failed.window_seconds == 20.0
    counters.update(c=sample(99))
    assert judge_now()[0] is failed  # kept until the status moves on
    meter.forget(key)
    assert judge_now() == (None, 10.0)  # a new window


def test_a_pods_failure_is_news_once_and_its_recovery_once() -> None:
    from kubeloop.canary.measure import Reachability

    reach = Reachability()
    a, b = "http://10.0.0.1:8080/metrics", "http://10.0.0.2:8080/metrics"
    assert reach.observe({a: None, b: None}) == []
    assert reach.observe({a: "ConnectionError: refused", b: None}) == [
        f"Could not read {a}: ConnectionError: refused (logged again once it answers)"]
    assert reach.observe({a: "ConnectionError: refused", b: None}) == []
    assert reach.observe({a: "ReadTimeout", b: "HTTP 503"}) == [
        f"Could not read {b}: HTTP 503 (logged again once it answers)"]
    assert reach.observe({a: None, b: "HTTP 503"}) == [f"{a} answers again"]
    assert reach.observe({a: None}) == []  # b is not read any more: forgotten
    assert reach.failing == {}
    assert reach.observe({a: None, b: "HTTP 503"}) == [
        f"Could not read {b}: HTTP 503 (logged again once it answers)"]


def test_an_unreachable_pod_is_logged_once_per_change_not_per_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Meter.measure reading a real address: nothing listens (refused), then a server
    answers, then it is gone again. Each read is a new window's baseline (a new step)."""
    import http.server
    import threading

    from kubeloop.api.modeldeployment import CanaryAnalysis
    from kubeloop.canary import measure
    from tests.modelserver import free_port

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    pods = [ServingPod("c", CANARY, url, BEFORE)]
    meter, key = measure.Meter(), ("ModelDeployment", "ns", "iris")
    analysis = CanaryAnalysis(interval="1m")
    steps = iter(range(100))

    def read() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kubeloop.canary"):
            asyncio.run(meter.measure(key, analysis, "iris", pods, "s3://m/v2", next(steps),
                                      OPENED))
        return [r.getMessage() for r in caplog.records if r.name == "kubeloop.canary"]

    first = read()
    assert len(first) == 1 and first[0].startswith(f"ModelDeployment ns/iris: Could not read {url}")
    assert "ConnectionError" in first[0]
    assert read() == [] and read() == []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert read() == [f"ModelDeployment ns/iris: {url} answers again"]
        assert read() == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert len(read()) == 1 and read() == []
    meter.forget(key)  # the ModelDeployment went: so does what was known of its pods
    assert key not in meter.reachability
