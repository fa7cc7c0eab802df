"""Kubeloop's own watches of the built-in resources its kinds make (Jobs, Pods,
Services, Deployments, HorizontalPodAutoscalers) and of Nodes.

Kopf watches Kubeloop's own kinds. The built-in children are most of the events of a
busy cluster (a TrainingJob's Job and Pod change a dozen times for its one create), and
Kopf's processing of each event (its worker per object, cause detection, handler
invocation) was most of what the operator spent on them: here each event goes straight
to the same handlers, decoded by :mod:`kubeloop.jsoncodec`.

Each watch is the usual reflector loop: list (every object goes to the handlers, as
from Kopf's own re-list), then watch from the list's resourceVersion with bookmarks;
when the API server ends a watch, watch again from the last version seen; when that
version is gone (410), list again; on any other error, wait (1 s doubling to 30 s) and
list again. The watches run on every replica (a standby's store stays warm); only the
active replica's queue writes (peering.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kubeloop.kube import Kube, KubeError

log = logging.getLogger("kubeloop.watching")

GONE = 410
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0

Deliver = Callable[[dict[str, Any]], Awaitable[None]]
# What a watch lists: apiVersion, kind, cluster-scoped, label selector.
Feed = tuple[str, str, bool, str | None]


class Gone(Exception):
    """The version to watch from is no longer kept: list again."""


def start(
    kube: Kube,
    feeds: dict[Feed, Deliver],
    namespaces: Sequence[str],
    settings: Any,
) -> list[asyncio.Task[None]]:
    """A :func:`follow` task per feed (and per namespace when the operator watches
    only some), with the watch timeouts of Kopf's `settings.watching`."""
    tasks = []
    for (api_version, kind, cluster_scoped, selector), deliver in feeds.items():
        scopes: list[str | None] = [None] if cluster_scoped or not namespaces else list(namespaces)
        for namespace in scopes:
            tasks.append(asyncio.ensure_future(follow(
                kube, api_version, kind, namespace, selector, deliver,
                server_timeout=int(settings.server_timeout or 270),
                client_timeout=float(settings.client_timeout or 300),
            )))
    return tasks


async def follow(
    kube: Kube,
    api_version: str,
    kind: str,
    namespace: str | None,
    label_selector: str | None,
    deliver: Deliver,
    *,
    server_timeout: int,
    client_timeout: float,
) -> None:
    """List and watch `kind` (in `namespace`, or everywhere) until cancelled, handing
    every object listed and every event to `deliver` as ``{"type", "object"}``."""
    delay = RETRY_FIRST_S
    where = f"{kind} in {namespace}" if namespace else kind
    while True:
        try:
            items, version = await kube.list_at(api_version, kind, namespace, label_selector)
            for obj in items:
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                await deliver({"type": None, "object": obj})
            delay = RETRY_FIRST_S
            while True:
                version = await _watch_once(
                    kube, api_version, kind, namespace, label_selector, version, deliver,
                    server_timeout=server_timeout, client_timeout=client_timeout,
                )
        except Gone:
            log.info("Watching %s: the version watched from is gone; listing again", where)
        except KubeError as err:
            log.warning("Watching %s failed, listing again in %.3gs: %s", where, delay, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


def read(event: dict[str, Any], version: str) -> tuple[str, bool]:
    """What one watch event means: the version to go on from, and whether it goes to
    the handlers (not a bookmark). An ERROR event raises: :class:`Gone` for 410 (list
    again), a :class:`KubeError` for any other."""
    event_type = event.get("type")
    obj = event.get("object") or {}
    if event_type == "ERROR":
        code = int(obj.get("code") or 0)
        if code == GONE:
            raise Gone()
        raise KubeError(code, str(obj.get("reason", "")), str(obj.get("message", "")))
    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
    return version, event_type != "BOOKMARK"


async def _watch_once(
    kube: Kube,
    api_version: str,
    kind: str,
    namespace: str | None,
    label_selector: str | None,
    version: str,
    deliver: Deliver,
    *,
    server_timeout: int,
    client_timeout: float,
) -> str:
    """One watch request from `version`; the last version seen when it ends."""
    events = kube.watch(
        api_version, kind, namespace, label_selector, version,
        server_timeout=server_timeout, client_timeout=client_timeout,
    )
    try:
        async with contextlib.aclosing(events):  # the connection goes back at once
            async for event in events:
                version, wanted = read(event, version)
                if wanted:
                    await deliver(event)
    except KubeError as err:
        if err.status == GONE:
            raise Gone() from err
        raise
    return version
