"""The work queue: ordering, coalescing, retries. Plain asyncio, no cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from kubeloop.controllers.runtime import Key, Result, Store, WorkQueue


def key(name: str) -> Key:
    return ("TrainingJob", "ns", name)


async def drain(queue: WorkQueue, until: int, seen: list[str], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(seen) < until:
        assert loop.time() < deadline, f"only {seen}"
        await asyncio.sleep(0.01)


def test_urgent_work_goes_first_and_duplicates_coalesce() -> None:
    seen: list[str] = []

    async def reconcile(k: Key) -> Result | None:
        seen.append(k[2])
        return None

    async def main() -> None:
        queue = WorkQueue({"TrainingJob": reconcile}, workers=1)
        for name in ("a", "b", "a", "c"):
            queue.add(key(name))
        queue.add(key("c"), urgent=True)  # raised: runs before a and b
        queue.add(key("new"), urgent=True)
        queue.start()
        await drain(queue, 4, seen)
        await asyncio.sleep(0.05)
        await queue.stop()

    asyncio.run(main())
    assert seen == ["c", "new", "a", "b"]


def test_event_during_a_reconcile_runs_it_once_more() -> None:
    seen: list[str] = []
    gate = asyncio.Event

    async def main() -> None:
        release = gate()

        async def reconcile(k: Key) -> Result | None:
            seen.append(k[2])
            if len(seen) == 1:
                await release.wait()
            return None

        queue = WorkQueue({"TrainingJob": reconcile}, workers=4)
        queue.start()
        queue.add(key("a"))
        await drain(queue, 1, seen)
        for _ in range(5):
            queue.add(key("a"))  # while running: marked dirty, not run in parallel
        release.set()
        await drain(queue, 2, seen)
        await asyncio.sleep(0.1)
        await queue.stop()

    asyncio.run(main())
    assert seen == ["a", "a"]


def test_failures_back_off_and_requeue_after_is_honoured() -> None:
    calls: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def reconcile(k: Key) -> Result | None:
            calls.append(loop.time())
            if len(calls) == 1:
                raise RuntimeError("boom")
            if len(calls) == 2:
                return Result(requeue_after=0.3)
            return None

        queue = WorkQueue({"TrainingJob": reconcile}, workers=2)
        queue.start()
        queue.add(key("a"))
        deadline = loop.time() + 5
        while len(calls) < 3 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await queue.stop()

    asyncio.run(main())
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.8 * 1.0  # first backoff: about a second
    assert calls[2] - calls[1] >= 0.29


def test_store_indexes_children_by_owner() -> None:
    store = Store()
    store.put("Job", {"metadata": {"name": "t-r0", "namespace": "ns"}}, owner="t")
    store.put("Job", {"metadata": {"name": "u-r0", "namespace": "ns"}}, owner="u")
    assert [j["metadata"]["name"] for j in store.owned("Job", "ns", "t")] == ["t-r0"]
    store.remove("Job", "ns", "t-r0", owner="t")
    assert store.owned("Job", "ns", "t") == [] and store.count("Job") == 1


def test_store_drops_managed_fields_without_touching_the_event() -> None:
    store = Store()
    event_object = {"metadata": {"name": "a", "namespace": "ns", "managedFields": [{"m": 1}]}}
    store.put("Job", event_object)
    stored = store.get("Job", "ns", "a")
    assert stored is not None and "managedFields" not in stored["metadata"]
    assert event_object["metadata"]["managedFields"] == [{"m": 1}]


def test_store_keeps_the_newer_version_of_an_object() -> None:
    """A list fetched before the operator's own status write (the watch's first list,
    after the initial fill) must not put the older object back: a reconcile on it would
    write, and announce, the same transition again."""
    store = Store()

    def obj(rv: str, phase: str, uid: str = "u1") -> dict[str, Any]:
        return {"metadata": {"name": "t", "namespace": "ns", "uid": uid,
                             "resourceVersion": rv}, "status": {"phase": phase}}

    store.put("TrainingJob", obj("120", "Succeeded"))
    store.put("TrainingJob", obj("99", "Running"))
    assert store.get("TrainingJob", "ns", "t")["status"]["phase"] == "Succeeded"
    store.put("TrainingJob", obj("121", "Succeeded"))
    assert store.get("TrainingJob", "ns", "t")["metadata"]["resourceVersion"] == "121"
    # Another object of the same name (deleted and created again): always taken.
    store.put("TrainingJob", obj("5", "Pending", uid="u2"))
    assert store.get("TrainingJob", "ns", "t")["status"]["phase"] == "Pending"
    # Versions that are not integers are not compared.
    store.put("TrainingJob", obj("a", "Running", uid="u2"))
    assert store.get("TrainingJob", "ns", "t")["status"]["phase"] == "Running"
