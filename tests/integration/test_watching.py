"""watching.py against the real API server: what a list and a watch deliver, and a
watch that the server ends is taken up again from the last version seen. (A 410 for a
version no longer kept cannot be provoked on a fresh API server, whose watch cache
holds every version since it started: tests/unit/test_watching.py reads one.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from kubeloop import watching
from kubeloop.kube import Kube
from tests.kubetest import Cluster

SELECTOR = "kubeloop.io/watched=yes"


class CountingKube(Kube):
    """The real client, counting its watch requests."""

    watches = 0

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        self.watches += 1
        return super().watch(*args, **kwargs)


@pytest.fixture
def space(cluster: Cluster) -> Iterator[str]:
    name = cluster.new_namespace()
    yield name
    cluster.delete_namespace(name)


def config_map(namespace: str, name: str, value: str, watched: bool = True) -> dict[str, Any]:
    labels = {"kubeloop.io/watched": "yes" if watched else "no"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"value": value},
    }


async def wait(check: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def test_a_list_then_the_events_and_a_watch_the_server_ends_goes_on(
    cluster: Cluster, space: str
) -> None:
    seen: list[tuple[str | None, str, str]] = []

    async def deliver(event: dict[str, Any]) -> None:
        obj = event["object"]
        seen.append((event["type"], obj["metadata"]["name"], (obj.get("data") or {}).get("value")))
        assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"

    async def scenario() -> None:
        kube = CountingKube.from_environment(cluster.kubeconfig)
        await kube.create(config_map(space, "before", "0"))
        await kube.create(config_map(space, "unwatched", "0", watched=False))
        # The server ends each watch after 1 s: the events after that come only if the
        # watch is taken up again.
        task = asyncio.ensure_future(watching.follow(
            kube, "v1", "ConfigMap", space, SELECTOR, deliver,
            server_timeout=1, client_timeout=30,
        ))
        try:
            await wait(lambda: (None, "before", "0") in seen, 20, "the listed object")
            await kube.create(config_map(space, "after", "1"))
            await wait(lambda: ("ADDED", "after", "1") in seen, 20, "the ADDED event")
            ended = kube.watches
            await wait(lambda: kube.watches >= ended + 2, 20, "two watches ended by the server")
            await kube.merge_patch("v1", "ConfigMap", space, "after", {"data": {"value": "2"}})
            await wait(lambda: ("MODIFIED", "after", "2") in seen, 20, "MODIFIED after 2 ends")
            await kube.delete("v1", "ConfigMap", space, "before")
            await wait(lambda: any(e[0] == "DELETED" and e[1] == "before" for e in seen), 20,
                       "the DELETED event")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await kube.close()

    asyncio.run(scenario())
    assert all(name != "unwatched" for _, name, _ in seen), seen
    # Listed once (no other list: no error happened), and no event twice.
    assert [e for e in seen if e[0] is None] == [(None, "before", "0")], seen
    assert len(seen) == len(set(seen)), seen
