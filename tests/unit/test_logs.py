"""The operator's logs stay quiet about what repeats: no access-log line for a kubelet's
probe of the health endpoint (Kopf's own aiohttp server, run here for real), unless
the operator logs at DEBUG."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import aiohttp
import kopf
import pytest
from kopf._core.engines import probing

from kubeloop.logs import setup_logging
from tests.modelserver import free_port

PROBE = "kube-probe/1.36"
CURL = "curl/8.14.1"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()}")


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Our logging set-up as `kubeloop run` makes it, and every line it lets through;
    the test process's logging as it was afterwards."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.filters[:],
             {name: logging.getLogger(name).level for name in ("kopf", "kopf.objects")})
    handler = Lines()
    yield handler
    root.handlers[:], root.level, access.filters[:] = saved[0], saved[1], saved[2]
    for name, level in saved[3].items():
        logging.getLogger(name).setLevel(level)


async def probe_then_ask(handler: Lines) -> list[str]:
    """Kopf's health endpoint, asked once by a kubelet's probe and then once by a
    person; the access-log lines once the person's request is logged."""
    port, ready = free_port(), asyncio.Event()
    server = asyncio.create_task(probing.health_reporter(
        f"http://127.0.0.1:{port}/healthz", memo=kopf.Memo(), indices={},
        registry=kopf.OperatorRegistry(), settings=kopf.OperatorSettings(),
        ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with aiohttp.ClientSession() as http:
            for agent in (PROBE, CURL):
                async with http.get(f"http://127.0.0.1:{port}/healthz",
                                    headers={"User-Agent": agent}) as response:
                    assert response.status == 200
        deadline = time.monotonic() + 10
        while not any(CURL in line for line in handler.lines):
            assert time.monotonic() < deadline, f"no access-log line: {handler.lines}"
            await asyncio.sleep(0.02)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    return [line for line in handler.lines if line.startswith("aiohttp.access")]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_probe_of_the_health_endpoint_leaves_no_access_log_line(lines: Lines,
                                                                   fmt: str) -> None:
    setup_logging("INFO", fmt)
    logging.getLogger().addHandler(lines)
    logged = asyncio.run(probe_then_ask(lines))
    assert len(logged) == 1 and CURL in logged[0] and "/healthz" in logged[0], logged
    assert not [line for line in lines.lines if PROBE in line]


def test_at_debug_the_probes_are_logged_too(lines: Lines) -> None:
    setup_logging("INFO")
    setup_logging("DEBUG")  # set up again: the filter of the first goes
    logging.getLogger().addHandler(lines)
    logged = asyncio.run(probe_then_ask(lines))
    assert [PROBE in line for line in logged] == [True, False], logged
