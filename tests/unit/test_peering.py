"""Exactly one writer among peered replicas: who leads a peering object's status
(Kopf's rule: yield to every live peer of a higher or equal priority), and the work
queue's gate, which holds every reconcile while it is shut."""

from __future__ import annotations

import asyncio
import datetime as dt

from kubeloop.controllers.runtime import Result, WorkQueue
from kubeloop.peering import leads

NOW = dt.datetime(2026, 12, 7, 8, 34, 27, tzinfo=dt.UTC)


def peer(priority: int, seconds_ago: float = 1.0, lifetime: int = 60) -> dict[str, object]:
    # As Kopf writes it: isoformat with the offset.
    seen = (NOW - dt.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


def test_the_highest_live_priority_leads() -> None:
    status = {"me": peer(50), "other": peer(10)}
    assert leads(status, "me", 50, NOW)
    assert not leads(status, "other", 10, NOW)


def test_a_replica_not_yet_in_the_peering_does_not_lead() -> None:
    assert not leads({"other": peer(10)}, "me", 50, NOW)
    assert not leads({}, "me", 50, NOW)


def test_equal_priorities_both_yield() -> None:
    status = {"me": peer(50), "other": peer(50)}
    assert not leads(status, "me", 50, NOW)
    assert not leads(status, "other", 50, NOW)


def test_a_dead_peer_is_ignored() -> None:
    status = {"me": peer(10), "gone": peer(90, seconds_ago=61), "naive": {
        "priority": 99, "lifetime": 60,
        "lastseen": (NOW - dt.timedelta(seconds=120)).replace(tzinfo=None).isoformat()}}
    assert leads(status, "me", 10, NOW)
    status["gone"] = peer(90, seconds_ago=59)
    assert not leads(status, "me", 10, NOW)


def test_a_shut_gate_holds_the_reconciles_until_it_opens() -> None:
    done: list[str] = []

    async def reconcile(key: tuple[str, str, str]) -> Result | None:
        done.append(key[2])
        return None

    async def scenario() -> None:
        queue = WorkQueue({"TrainingJob": reconcile}, workers=2)
        queue.gate.clear()
        queue.start()
        queue.add(("TrainingJob", "ns", "a"))
        queue.add(("TrainingJob", "ns", "b"))
        for _ in range(50):  # 50 turns of the loop with timers: nothing may run
            await asyncio.sleep(0.01)
        assert done == []
        queue.gate.set()
        async with asyncio.timeout(5):
            while len(done) < 2:
                await asyncio.sleep(0.01)
        assert sorted(done) == ["a", "b"]
        await queue.stop()

    asyncio.run(scenario())
