"""The model server under bad clients: malformed and generated JSON, wrong shapes,
bodies over the limit, broken HTTP and slow-loris connections. Client errors get 4xx,
never 500; health checks are answered all along; memory stays flat."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.faults.conftest import poll, rss_kb
from tests.modelserver import ModelServer, free_port

RSS_GROWTH_LIMIT_KB = 60 * 1024
LORIS_SOCKETS = 100
LORIS_MAX_SECONDS = 60.0  # a bound; the clients are stopped when the bad requests end
HEALTH_TIMEOUT_S = 2.0
MAX_BODY = 8 << 20  # serving/rest.py MAX_BODY_BYTES

GOOD = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                    "data": [[5.1, 3.5, 1.4, 0.2]]}]}


def tensor(**fields: Any) -> bytes:
    return json.dumps({"inputs": [{**GOOD["inputs"][0], **fields}]}).encode()


# (what, body, expected status)
BAD_BODIES: list[tuple[str, bytes, int]] = [
    ("empty", b"", 400),
    ("truncated", b'{"inputs": [', 400),
    ("not json", b"hello", 400),
    ("invalid utf-8", b'{"inputs": "\xff\xfe"}', 400),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400),
    ("null", b"null", 400),
    ("a list", b"[]", 400),
    ("inputs not a list", b'{"inputs": 5}', 400),
    ("no inputs", b'{"inputs": []}', 400),
    ("null tensor", b'{"inputs": [null]}', 400),
    ("NaN literal", tensor(data=[[float("nan"), 1, 2, 3]]), 400),
    ("Infinity literal", tensor(data=[[float("inf"), 1, 2, 3]]), 400),
    ("too few features", tensor(shape=[1, 3], data=[[1, 2, 3]]), 400),
    ("shape and data disagree", tensor(shape=[2, 4]), 400),
    ("negative dimension", tensor(shape=[-1, 4]), 400),
    ("enormous shape", tensor(shape=[2**62, 2**62]), 400),
    ("shape not a list", tensor(shape="1x4"), 400),
    ("ragged data", tensor(shape=[2, 4], data=[[1, 2, 3, 4], [1]]), 400),
    ("strings as data", tensor(data=[["a", "b", "c", "d"]]), 400),
    ("nulls as data", tensor(data=[[None, None, None, None]]), 400),
    ("unknown datatype", tensor(datatype="BYTES"), 400),
    ("FP32 overflow", tensor(datatype="FP32", data=[[1e300, 1, 2, 3]]), 400),
    ("empty batch", tensor(shape=[0, 4], data=[]), 400),
    ("unknown output", json.dumps({**GOOD, "outputs": [{"name": "nope"}]}).encode(), 400),
    ("bad id", json.dumps({**GOOD, "id": 7}).encode(), 400),
]

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False), st.text(max_size=6))
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
TENSORS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input-0", "sepal_length_cm", "x"]) | SCALARS,
        "shape": st.lists(st.integers(-2, 5) | SCALARS, max_size=3) | SCALARS,
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES"]) | SCALARS,
        "data": st.lists(st.lists(st.floats() | st.integers(-5, 5) | SCALARS, max_size=5),
                         max_size=3) | JSONISH,
    },
)
REQUESTS = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {"inputs": st.lists(TENSORS | JSONISH, max_size=3) | JSONISH},
        optional={"outputs": JSONISH, "parameters": JSONISH, "id": SCALARS},
    ),
)


class Loris:
    """Slow-loris clients: each socket sends a request head a byte at a time, a byte
    every 0.1 s (the head never completes), bounded in count and time, loopback only."""

    def __init__(self, port: int, sockets: int, seconds: float) -> None:
        self.port, self.count, self.seconds = port, sockets, seconds
        self.stop = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        head = (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n"
                + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 40) for i in range(40)))
        socks: list[tuple[socket.socket, int]] = []
        try:
            for _ in range(self.count):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socks.append((s, 0))
                self.opened += 1
            end = time.monotonic() + self.seconds
            while time.monotonic() < end and not self.stop.wait(0.1):
                for i, (s, sent) in enumerate(socks):
                    if sent < len(head):
                        with contextlib.suppress(OSError):
                            s.send(head[sent : sent + 1])
                        socks[i] = (s, sent + 1)
        finally:
            for s, _ in socks:
                s.close()

    def __enter__(self) -> Loris:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def server(trained_model: Path) -> Iterator[ModelServer]:
    srv = ModelServer(trained_model, free_port())
    srv.start()
    yield srv
    srv.stop()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read whatever comes back until the server closes or 5 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def test_bad_clients_get_4xx_and_the_server_stays_up(server: ModelServer) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    infer = f"{server.url}/v2/models/iris/infer"
    http = requests.Session()
    assert http.post(infer, data=json.dumps(GOOD), timeout=10).status_code == 200
    baseline = rss_kb(pid)
    peak = [baseline]
    statuses: Counter[int] = Counter()
    health_failures: list[str] = []

    def healthy() -> bool:
        peak[0] = max(peak[0], rss_kb(pid))
        try:
            answer = requests.get(f"{server.url}/v2/health/ready", timeout=HEALTH_TIMEOUT_S)
        except requests.RequestException as exc:
            health_failures.append(repr(exc))
            return False
        if answer.status_code != 200:
            health_failures.append(f"HTTP {answer.status_code}")
        return answer.status_code == 200

    def post(body: bytes, **kw: Any) -> requests.Response:
        answer = http.post(infer, data=body, timeout=30, **kw)
        statuses[answer.status_code] += 1
        assert answer.status_code < 500, (answer.status_code, answer.text[:300], body[:200])
        assert healthy()
        return answer

    with Loris(server.port, LORIS_SOCKETS, LORIS_MAX_SECONDS) as loris:
        poll(lambda: loris.opened == LORIS_SOCKETS, 10, "slow-loris sockets open", 0.05)

        for what, body, expected in BAD_BODIES:
            answer = post(body)
            assert answer.status_code == expected, (what, answer.status_code, answer.text[:300])
            assert "error" in answer.json(), (what, answer.text[:300])

        # Over the body limit: with a length, and chunked without one.
        big = b" " * (MAX_BODY + (1 << 20))
        assert post(big).status_code == 413
        chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
        assert post(iter(chunks)).status_code == 413

        # Wrong model, wrong method, wrong path.
        assert http.post(f"{server.url}/v2/models/nope/infer", data=json.dumps(GOOD),
                         timeout=10).status_code == 404
        assert http.get(infer, timeout=10).status_code == 405
        assert http.get(f"{server.url}/v3", timeout=10).status_code == 404

        # Broken HTTP: a 400 from the server, or the connection closed; never a 5xx.
        for raw in (b"GARBAGE\r\n\r\n", b"POST /v2/models/iris/infer HTTP/1.1\r\n"
                    b"Content-Length: -5\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"POST /v2/models/iris/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"):
            answer = raw_exchange(server.port, raw)
            assert not answer.startswith(b"HTTP/1.1 5"), (raw, answer[:200])
            assert healthy()

        # Generated requests: answered 200 or 4xx, never an error of the server's own.
        @settings(max_examples=150, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(payload=REQUESTS)
        def generated(payload: Any) -> None:
            post(json.dumps(payload).encode())

        generated()
        assert loris.thread.is_alive(), "the slow-loris clients ended before the bad requests"
        assert healthy()

    # After: still up, still serving, no 5xx on its own books, memory flat.
    assert healthy() and server.proc.poll() is None
    assert http.post(infer, data=json.dumps(GOOD), timeout=10).status_code == 200
    metrics = http.get(f"{server.url}/metrics", timeout=10).text
    assert 'status="500"' not in metrics
    assert not health_failures, health_failures[:5]
    assert statuses[400] >= len(BAD_BODIES) - 2 and statuses[413] == 2, statuses
    grown = peak[0] - baseline
    print(f"answers {dict(statuses)}; server RSS {baseline} kB, peak +{grown} kB")
    assert grown < RSS_GROWTH_LIMIT_KB, f"server RSS grew by {grown} kB (from {baseline} kB)"
