"""Live progress of a BatchPrediction: each running pod's report read from a real HTTP
endpoint on loopback (what `kubeloop.train.report` serves), added to the final numbers
of the pods that ended."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kubeloop.api.batchprediction import BatchPredictionStatus, ShardResult
from kubeloop.controllers import batchprogress as bp
from kubeloop.progress import Report, render_text

KEY = ("BatchPrediction", "ns", "b")


class Endpoint:
    def __init__(self, report: Report) -> None:
        self.report, self.hits = report, 0
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
    ep = Endpoint(Report(step=300, total_steps=1000, metrics={"rows_per_second": 50.0}))
    yield ep
    ep.server.shutdown()
    bp.forget(KEY)


def pod(index: int, phase: str, message: str | None = None) -> dict[str, Any]:
    state = {"terminated": {"exitCode": 0, "message": message}} if message else {}
    return {
        "metadata": {"name": f"b-{index}", "uid": f"u{index}", "creationTimestamp": "t",
                     "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {"phase": phase, "podIP": "127.0.0.1",
                   "containerStatuses": [{"name": "score", "state": state}]},
    }


def test_running_pods_are_read_live_and_added_to_the_ended_ones(endpoint: Endpoint) -> None:
    final = json.dumps({"step": 1000, "totalSteps": 1000, "metrics": {"rows_per_second": 80.0}})
    status = BatchPredictionStatus(phase="Running", shards=[
        ShardResult(index=0, state="Succeeded", rows=1000, rows_total=1000, rows_per_second=80.0),
        ShardResult(index=1, state="Running"),
    ])
    pods = [pod(0, "Succeeded", final), pod(1, "Running")]
    # Read at once, then every interval.
    wait = asyncio.run(bp.observe(KEY, status, pods, 2, endpoint.port))
    assert endpoint.hits == 1 and wait == pytest.approx(bp.READ_INTERVAL, abs=1)
    assert status.progress is not None
    assert (status.progress.rows_done, status.progress.rows_total) == (1300, 2000)
    assert status.progress.percent == 65.0 and status.progress.rows_per_second == 50.0
    assert status.progress.estimated_remaining_seconds == 14
    # Between reads the last report stands (a held-back status write loses nothing).
    again = BatchPredictionStatus(phase="Running", shards=[
        ShardResult(index=0, state="Succeeded", rows=1000, rows_total=1000),
        ShardResult(index=1, state="Running")])
    asyncio.run(bp.observe(KEY, again, pods, 2, endpoint.port))
    assert endpoint.hits == 1 and again.progress is not None and again.progress.rows_done == 1300


def test_a_pod_that_does_not_answer_backs_off_and_a_run_that_ended_is_forgotten() -> None:
    status = BatchPredictionStatus(phase="Running", shards=[ShardResult(index=0, state="Running")])
    pods = [pod(0, "Running")]
    wait = asyncio.run(bp.observe(KEY, status, pods, 1, port=1))
    # The first miss waits one interval (the pod's server may not be up yet), the next two.
    assert wait == pytest.approx(bp.READ_INTERVAL, abs=1) and status.progress is None
    bp._schedules[KEY].next_read = 0.0
    wait = asyncio.run(bp.observe(KEY, status, pods, 1, port=1))
    assert wait == pytest.approx(2 * bp.READ_INTERVAL, abs=1)
    done = BatchPredictionStatus(phase="Succeeded")
    assert asyncio.run(bp.observe(KEY, done, pods, 1, port=1)) is None
    assert KEY not in bp._schedules
