"""The in-memory store and the work queue behind every reconcile.

Kopf's watch streams feed `on.event` handlers, which only record the latest object in
the store and enqueue the owning resource. Workers take keys from the queue and run
the kind's reconcile, which reads from the store (no GET per reconcile) and writes
through `kube.py`. A key is never reconciled twice at once; events that arrive while a
key is being reconciled coalesce into one more pass. Failures retry with exponential
backoff per key, so bad input never spins in a hot loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubeloop import metrics
from kubeloop.kube import KubeError

log = logging.getLogger("kubeloop.runtime")

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of the queue: run again after `requeue_after` seconds."""

    requeue_after: float | None = None


Reconciler = Callable[[Key], Awaitable[Result | None]]


class Store:
    """Latest observed objects, by kind then (namespace, name), plus owner indexes."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self._by_owner: dict[str, dict[tuple[str, str], set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )

    def put(self, kind: str, obj: dict[str, Any], owner: str | None = None) -> None:
        meta = obj.get("metadata", {})
        if "managedFields" in meta:
            # Often the largest part of an object, and never read by a reconcile.
            meta = {k: v for k, v in meta.items() if k != "managedFields"}
            obj = {**obj, "metadata": meta}
        key = (meta.get("namespace", ""), meta["name"])
        if _older(meta, self._objects[kind].get(key)):
            # A list fetched before our own write (the initial fill and the watch's own
            # first list overlap): the store keeps the newer object it already has.
            return
        self._objects[kind][key] = obj
        if owner is not None:
            self._by_owner[kind][(key[0], owner)].add(key[1])

    def remove(self, kind: str, namespace: str, name: str, owner: str | None = None) -> None:
        self._objects[kind].pop((namespace, name), None)
        if owner is not None:
            names = self._by_owner[kind].get((namespace, owner))
            if names is not None:
                names.discard(name)
                if not names:
                    del self._by_owner[kind][(namespace, owner)]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects[kind].get((namespace, name))

    def owned(self, kind: str, namespace: str, owner: str) -> list[dict[str, Any]]:
        names = self._by_owner[kind].get((namespace, owner), set())
        objs = (self._objects[kind].get((namespace, n)) for n in sorted(names))
        return [o for o in objs if o is not None]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return list(self._objects[kind].values())

    def count(self, kind: str) -> int:
        return len(self._objects[kind])


def _older(meta: dict[str, Any], have: dict[str, Any] | None) -> bool:
    """Whether `meta` is an older version of the same object than `have`. Versions are
    compared only where both are the integers the API server's storage hands out."""
    if have is None:
        return False
    old = have.get("metadata", {})
    new_rv, old_rv = meta.get("resourceVersion"), old.get("resourceVersion")
    if meta.get("uid") != old.get("uid") or not (
        isinstance(new_rv, str) and isinstance(old_rv, str)
    ):
        return False
    return new_rv.isdigit() and old_rv.isdigit() and int(new_rv) < int(old_rv)


class WorkQueue:
    def __init__(self, reconcilers: dict[str, Reconciler], workers: int = 8) -> None:
        self._reconcilers = reconcilers
        self._workers = workers
        # (priority, sequence, key): urgent work (a new or changed spec) before status
        # follow-ups of children, FIFO within a priority.
        self._queue: asyncio.PriorityQueue[tuple[int, int, Key]] = asyncio.PriorityQueue()
        self._queued: dict[Key, int] = {}
        self._sequence = itertools.count()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = defaultdict(int)
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.idle = asyncio.Event()
        # Open unless peered replicas keep it shut (kubeloop.peering): no reconcile starts
        # while it is shut, and what is queued waits.
        self.gate = asyncio.Event()
        self.gate.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self._workers)]

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add(self, key: Key, delay: float = 0.0, urgent: bool = False) -> None:
        # Before start (the store's initial fill) nothing runs yet: a delay means nothing.
        if delay > 0 and self._loop is not None:
            self._add_later(key, delay)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._running:
            self._dirty.add(key)
            return
        priority = 0 if urgent else 1
        queued = self._queued.get(key)
        if queued is not None and queued <= priority:
            return
        # A key raised to urgent gets a second entry; the stale one is skipped when popped.
        self._queued[key] = priority
        self._queue.put_nowait((priority, next(self._sequence), key))
        metrics.QUEUE_DEPTH.set(len(self._queued))

    def _add_later(self, key: Key, delay: float) -> None:
        assert self._loop is not None
        existing = self._timers.get(key)
        due = self._loop.time() + delay
        if existing is not None and existing.when() <= due:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = self._loop.call_at(due, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    def backoff(self, key: Key) -> float:
        """1 s, 2 s, 4 s ... capped at 5 minutes, with jitter so failures do not align."""
        failures = self._failures[key]
        return float(min(300.0, 2.0 ** min(failures, 9)) * (0.8 + 0.4 * random.random()))

    async def _worker(self, index: int) -> None:
        while True:
            priority, _, key = await self._queue.get()
            await self.gate.wait()
            if self._queued.get(key) != priority:
                continue  # superseded by an urgent entry, or already reconciled
            del self._queued[key]
            metrics.QUEUE_DEPTH.set(len(self._queued))
            self._running.add(key)
            started = time.perf_counter()
            kind = key[0]
            try:
                result = await self._reconcilers[kind](key)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 403 and "being terminated" in exc.message:
                    # The namespace is going away, and the resource with it.
                    log.info("Skipped %s %s/%s: namespace terminating", kind, key[1], key[2])
                    result = None
                else:
                    delay = self.backoff(key)
                    self._failures[key] += 1
                    metrics.RECONCILES.labels(kind, "error").inc()
                    log.warning(
                        "Reconcile of %s %s/%s failed: %s; retrying in %.1fs",
                        kind,
                        key[1],
                        key[2],
                        exc,
                        delay,
                    )
                    result = Result(requeue_after=delay)
            except Exception:
                delay = self.backoff(key)
                self._failures[key] += 1
                metrics.RECONCILES.labels(kind, "error").inc()
                log.exception(
                    "Reconcile of %s %s/%s failed; retrying in %.1fs", kind, key[1], key[2], delay
                )
                result = Result(requeue_after=delay)
            else:
                self._failures.pop(key, None)
                metrics.RECONCILES.labels(kind, "success").inc()
            finally:
                metrics.RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif result is not None and result.requeue_after is not None:
                self.add(key, max(result.requeue_after, 0.05))
            if not self._queued and not self._running:
                self.idle.set()
            else:
                self.idle.clear()
