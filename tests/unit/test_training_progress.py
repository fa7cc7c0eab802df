"""How the operator turns worker 0's reports into a TrainingJob's status: read from a
real HTTP endpoint on loopback (what `kubeloop.train.report` serves), the schedule and
backoff of reads, the final metrics from the termination message."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kubeloop.api.trainingjob import Progress, TrainingJobSpec, TrainingJobStatus
from kubeloop.controllers import trainingprogress as tp
from kubeloop.names import COMPLETION_INDEX_ANNOTATION
from kubeloop.progress import Report, render_text
from kubeloop.render.trainingjob import WORKER_CONTAINER

KEY = ("TrainingJob", "ns", "t")


class Endpoint:
    """A progress endpoint on loopback whose report the test changes."""

    def __init__(self) -> None:
        self.report = Report(step=30, total_steps=120, metrics={"loss": 0.5, "accuracy": 0.8},
                             started=1000.0, updated=1030.0)
        self.hits = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.hits += 1
                body = render_text(endpoint.report).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.server.shutdown()
    tp.forget(KEY)


def worker0(phase: str = "Running", message: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "podIP": "127.0.0.1"}
    if message is not None:
        status["containerStatuses"] = [
            {"name": WORKER_CONTAINER, "state": {"terminated": {"exitCode": 0, "message": message}}}
        ]
    return {"metadata": {"name": "t-r0-0", "labels": {"job-name": "t-r0"},
                         "annotations": {COMPLETION_INDEX_ANNOTATION: "0"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status}


def observe(spec: TrainingJobSpec, status: TrainingJobStatus, prev: TrainingJobStatus,
            pods: list[dict[str, Any]]) -> float | None:
    return asyncio.run(tp.observe(KEY, spec, status, prev, pods))


def running() -> TrainingJobStatus:
    return TrainingJobStatus(phase="Running", job_name="t-r0")


def test_progress_is_read_after_one_interval_then_every_interval(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(tp.time, "monotonic", lambda: clock[0])
    spec = TrainingJobSpec(image="i", progress_port=endpoint.port)
    status = running()
    assert observe(spec, status, running(), [worker0()]) == pytest.approx(tp.READ_INTERVAL)
    assert endpoint.hits == 0 and status.progress is None
    clock[0] += tp.READ_INTERVAL
    assert observe(spec, status, running(), [worker0()]) == tp.READ_INTERVAL
    assert endpoint.hits == 1
    assert status.progress == Progress(percent=25.0, step=30, total_steps=120,
                                       estimated_remaining_seconds=90,
                                       last_update_time="1970-01-01T00:17:10Z")
    assert status.metrics == {"loss": 0.5, "accuracy": 0.8}
    assert status.metric == "loss=0.5"
    # A pass before the next read is due re-applies the last report (a write held back
    # by the status throttle is not lost) and does not read.
    again = running()
    clock[0] += 3
    assert observe(spec, again, running(), [worker0()]) == pytest.approx(7)
    assert endpoint.hits == 1 and again.progress == status.progress


def test_the_headline_is_the_first_metric_reported_not_the_first_sorted(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(tp.time, "monotonic", lambda: clock[0])
    spec = TrainingJobSpec(image="i", progress_port=endpoint.port)
    observe(spec, running(), running(), [worker0()])
    clock[0] += tp.READ_INTERVAL
    # As the API server hands it back: keys sorted.
    prev = running()
    prev.metrics = {"accuracy": 0.7, "loss": 0.6}
    status = running()
    observe(spec, status, prev, [worker0()])
    assert status.metric == "loss=0.5"


def test_a_silent_worker_is_read_less_and_less(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(tp.time, "monotonic", lambda: clock[0])
    spec = TrainingJobSpec(image="i", progress_port=1)  # nothing listens on port 1
    waits = []
    observe(spec, running(), running(), [worker0()])
    for _ in range(6):
        clock[0] += 1000
        waits.append(observe(spec, running(), running(), [worker0()]))
    tp.forget(KEY)
    assert waits == [20.0, 40.0, 80.0, 120.0, 120.0, 120.0]


def test_nothing_is_read_when_disabled_or_not_running(endpoint: Endpoint) -> None:
    off = TrainingJobSpec(image="i", progress_port=0)
    assert observe(off, running(), running(), [worker0()]) is None
    on = TrainingJobSpec(image="i", progress_port=endpoint.port)
    assert observe(on, running(), running(), [worker0("Pending")]) is None
    other = worker0()
    other["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] = "1"
    assert observe(on, running(), running(), [other]) is None
    assert endpoint.hits == 0


def test_final_metrics_come_from_the_termination_message() -> None:
    spec = TrainingJobSpec(image="i")
    prev = running()
    prev.progress = Progress(percent=50.0, step=60, total_steps=120,
                             last_update_time="2026-01-01T00:00:00Z")
    prev.metrics = {"accuracy": 0.8}
    done = TrainingJobStatus(phase="Succeeded", job_name="t-r0")
    message = json.dumps({"step": 120, "totalSteps": 120, "metrics": {"accuracy": 0.97}})
    assert observe(spec, done, prev, [worker0("Succeeded", message)]) is None
    assert done.metrics == {"accuracy": 0.97} and done.metric == "accuracy=0.97"
    assert done.progress is not None and done.progress.percent == 100.0
    assert done.progress.last_update_time == "2026-01-01T00:00:00Z"
    # Garbage in the message changes nothing; the carried values stay.
    other = TrainingJobStatus(phase="Failed", job_name="t-r0")
    observe(spec, other, prev, [worker0("Failed", "Traceback (most recent call last): ...")])
    assert other.metrics == {"accuracy": 0.8} and other.progress == prev.progress
