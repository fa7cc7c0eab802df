"""watching.py: what each kind of watch event means (the API server's own events,
taken from its API reference), and following when the API server cannot be reached:
it says so and tries again, slower each time, and never ends on its own (the store
would stop being filled)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from kubernetes.client import Configuration

from kubeloop import watching
from kubeloop.kube import Kube, KubeError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_retried_with_a_growing_delay(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watching, "RETRY_FIRST_S", 0.1)
    cfg = Configuration()
    cfg.host = f"http://127.0.0.1:{closed_port()}"
    kube = Kube(cfg)

    async def deliver(event: dict[str, Any]) -> None:
        raise AssertionError("nothing to deliver")

    async def scenario() -> None:
        follow = watching.follow(kube, "v1", "ConfigMap", "n", None, deliver,
                                 server_timeout=5, client_timeout=5)
        with pytest.raises(TimeoutError):  # still trying when given up on
            await asyncio.wait_for(follow, 1.0)
        await kube.close()

    with caplog.at_level(logging.WARNING, logger="kubeloop.watching"):
        asyncio.run(scenario())
    delays = [r.getMessage().split("listing again in ")[1].split("s:")[0] for r in caplog.records]
    assert len(delays) >= 3, caplog.text
    assert delays[:3] == ["0.1", "0.2", "0.4"], delays


def _event(kind: str, version: str = "7") -> dict[str, Any]:
    return {"type": kind, "object": {"kind": "Pod", "metadata": {"resourceVersion": version}}}


def test_events_move_the_version_and_bookmarks_are_not_delivered() -> None:
    assert watching.read(_event("ADDED", "8"), "7") == ("8", True)
    assert watching.read(_event("MODIFIED", "9"), "8") == ("9", True)
    assert watching.read(_event("DELETED", "10"), "9") == ("10", True)
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}
    assert watching.read(bookmark, "10") == ("42", False)


def test_an_expired_version_asks_for_a_list_and_other_errors_say_why() -> None:
    expired = {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
        "message": "too old resource version: 1 (4242)", "code": 410}}
    with pytest.raises(watching.Gone):
        watching.read(expired, "1")
    refused = {"type": "ERROR", "object": {
        "kind": "Status", "status": "Failure", "reason": "InternalError",
        "message": "etcd is down", "code": 500}}
    with pytest.raises(KubeError, match="etcd is down") as raised:
        watching.read(refused, "1")
    assert raised.value.status == 500
