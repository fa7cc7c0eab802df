"""DriftMonitors pointed at sources that hang, trickle, answer garbage or 100 MB: every
check ends within its time bound with a condition that says why, the sources are not
hammered, and the operator's memory stays flat."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import DM, MD, OperatorProcess, poll, rss_kb
from tests.kubetest import Cluster

# What the operator allows a check (controllers/driftmonitor.py): 5 s an attempt, one
# retry, so 10 s in all; the slack covers the reconcile and the status write on a
# loaded 2-core machine.
CHECK_BOUND_S = 10.0
SLACK_S = 10.0
RSS_GROWTH_LIMIT_KB = 60 * 1024
HUNDRED_MB = 100 * 2**20
INTERVAL_S = 3


class BadSources(socketserver.ThreadingTCPServer):
    """One loopback HTTP server, a bad behaviour per path."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop = threading.Event()
        self.requests: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.huge_sent: list[int] = []  # bytes sent on each /huge connection
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.BaseRequestHandler):
    server: BadSources

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        path = head.split(b" ", 2)[1].decode()
        with self.server.lock:
            self.server.requests[path] += 1
        with contextlib.suppress(OSError):  # the client gave up: that is the point
            getattr(self, "_" + path.strip("/").replace("-", "_"))(sock)

    def _send(self, sock: socket.socket, path: str, data: bytes) -> None:
        sock.sendall(data)
        with self.server.lock:
            self.server.sent[path] += len(data)

    def _hang(self, sock: socket.socket) -> None:
        """Accepts the request and never answers."""
        self.server.stop.wait(120)

    def _trickle(self, sock: socket.socket) -> None:
        """Answers, then one byte every half second, forever."""
        self._send(sock, "/trickle", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     b"Content-Length: 1000000\r\n\r\n")
        while not self.server.stop.wait(0.5):
            self._send(sock, "/trickle", b"#")

    def _garbage_bytes(self, sock: socket.socket) -> None:
        body = b"\xff\xfe\x00\x9c garbage \xc3\x28" * 64
        self._send(sock, "/garbage-bytes", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    def _garbage_text(self, sock: socket.socket) -> None:
        body = (b'kubeloop_model_feature_bucket{model="iris",feature="x",le="1"} not-a-number\n'
                b"{{{{ }}}} \"unterminated\n")
        self._send(sock, "/garbage-text", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    def _huge(self, sock: socket.socket) -> None:
        """100 MB of valid comment lines, without a Content-Length: only reading
        stops it."""
        self._send(sock, "/huge", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                  b"Connection: close\r\n\r\n")
        line = b"# " + b"x" * 1021 + b"\n"
        chunk = line * 64
        sent = 0
        try:
            while sent < HUNDRED_MB and not self.server.stop.is_set():
                self._send(sock, "/huge", chunk)
                sent += len(chunk)
        finally:
            with self.server.lock:
                self.server.huge_sent.append(sent)


@pytest.fixture
def bad_sources() -> Iterator[BadSources]:
    server = BadSources()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


CASES = {
    # path: (reason, words the message must contain)
    "/hang": ("SourceUnavailable", ("timed out",)),
    "/trickle": ("SourceUnavailable", ("deadline",)),
    "/garbage-bytes": ("SourceInvalid", ("UTF-8",)),
    "/garbage-text": ("SourceInvalid", ("malformed metrics text",)),
    "/huge": ("SourceInvalid", ("exceeds", "8388608-byte limit")),
}


def _source_condition(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    status = cluster.status(DM, ns, name)
    for cond in status.get("conditions", []):
        if cond["type"] == "SourceReady" and cond["status"] == "False":
            return {**cond, "lastCheckTime": status.get("lastCheckTime")}
    return None


def test_hanging_garbage_and_huge_sources_end_in_time_with_a_reason(
    cluster: Cluster, namespace: str, operator: OperatorProcess, trained_model: Path,
    bad_sources: BadSources,
) -> None:
    ns = namespace
    cluster.create(MD, ns, "iris", {"model": {"uri": f"file://{trained_model}"}})
    poll(lambda: cluster.status(MD, ns, "iris").get("activeModelUri"), 60, "the target's model")
    # The reference from a ConfigMap: no pod of `iris` serves on the simulated nodes.
    cluster.core.create_namespaced_config_map(ns, {
        "metadata": {"name": "ref"},
        "data": {"profile.json": (trained_model / "profile.json").read_text()},
    })  # fmt: skip
    ref = {"configMap": {"name": "ref"}}
    # A first check against a closed port loads the reference and starts the check
    # threads, so that the baseline below counts what the bad sources cost, not that.
    cluster.create(DM, ns, "dm-warm-up", {
        "modelDeployment": "iris", "source": {"url": "http://127.0.0.1:9/metrics"},
        "reference": ref,
        "interval": "1h", "minSamples": 10,
    })  # fmt: skip
    poll(lambda: _source_condition(cluster, ns, "dm-warm-up"), 30, "the warm-up check", 0.2)
    pid = operator.pid
    baseline = rss_kb(pid)
    peak = [baseline]

    def sample() -> None:
        peak[0] = max(peak[0], rss_kb(pid))

    created: dict[str, float] = {}
    names = {path: "dm" + path.replace("/", "-") for path in CASES}
    for path, name in names.items():
        cluster.create(DM, ns, name, {
            "modelDeployment": "iris",
            "source": {"url": f"{bad_sources.url}{path}"},
            "reference": ref,
            "interval": f"{INTERVAL_S}s",
            "minSamples": 10,
        })  # fmt: skip
        created[name] = time.monotonic()

    # Each check ends, within its bound, with the reason and why.
    first: dict[str, dict[str, Any]] = {}
    took: dict[str, float] = {}

    def all_reported() -> bool:
        sample()
        for name in set(names.values()) - set(first):
            cond = _source_condition(cluster, ns, name)
            if cond:
                first[name], took[name] = cond, time.monotonic() - created[name]
        return len(first) == len(names)

    poll(all_reported, CHECK_BOUND_S + SLACK_S + 30, "every monitor's first check", 0.2)
    for path, (reason, words) in CASES.items():
        name = names[path]
        cond = first[name]
        assert cond["reason"] == reason, (path, cond)
        for word in words:
            assert word.lower() in cond["message"].lower(), (path, cond)
        assert took[name] < CHECK_BOUND_S + SLACK_S, (path, took[name], cond)

    # And again every interval, never faster: no hot loop against a bad source.
    def checked_again() -> bool:
        sample()
        return all(
            (cond := _source_condition(cluster, ns, name))
            and cond["lastCheckTime"] != first[name]["lastCheckTime"]
            for name in names.values()
        )

    poll(checked_again, 2 * (CHECK_BOUND_S + SLACK_S) + INTERVAL_S, "a second check of each", 0.2)
    elapsed = time.monotonic() - min(created.values())
    for path in CASES:
        most = 2 * (elapsed / INTERVAL_S + 1)  # two attempts a check at most
        assert bad_sources.requests[path] <= most, (path, bad_sources.requests, elapsed)
    # The 100 MB were cut off early, every time: reading stopped at the 8 MiB limit.
    assert bad_sources.huge_sent and max(bad_sources.huge_sent) < HUNDRED_MB / 2, (
        bad_sources.huge_sent
    )

    sample()
    assert operator.alive and operator.pid == pid, operator.tail()
    grown = peak[0] - baseline
    print(f"first checks took {({n: round(t, 1) for n, t in took.items()})}; "
          f"requests {dict(bad_sources.requests)}; /huge cut at {bad_sources.huge_sent}; "
          f"operator RSS {baseline} kB, peak +{grown} kB")
    assert grown < RSS_GROWTH_LIMIT_KB, f"operator RSS grew by {grown} kB (from {baseline} kB)"
