"""Exactly one writer among peered replicas (the chart's `replicas` > 1).

Kopf's peering pauses a standby's watch streams, but Kubeloop's own work queue runs the
reconciles, and those write: a standby's queue could still hold keys from before the
pause, its timers fire, and a replica is active from the moment it starts until Kopf
first reads the peering object. So the queue runs only while this replica *leads*, as
this module judges from the same KopfPeering (namespaced) or ClusterKopfPeering
(cluster-wide) objects Kopf keeps, with Kopf's own rule: a replica yields to every live
peer (last seen within its lifetime) of a higher or equal priority. It leads only once
its own entry is there, and only after that entry has stood for `settle` seconds, so that
a leader already running sees the newcomer and stops first (controller-runtime's leader
election waits out a lease the same way). Until the first read says so, it does not lead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any

from kubeloop.kube import Kube

log = logging.getLogger(__name__)

PEERING_NAME = "kubeloop"  # settings.peering.name in operator.configure
API_VERSION = "kopf.dev/v1"


def own_identity() -> str:
    """This replica's peer id: its pod (or host) and a random part, unique per start."""
    where = os.environ.get("POD_ID") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{where}/{secrets.token_hex(4)}"


def _seen(value: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def leads(status: dict[str, Any], identity: str, priority: int, now: dt.datetime) -> bool:
    """Whether `identity` leads the peers in one peering object's status (Kopf keeps
    `{identity: {priority, lifetime, lastseen}}` there): it is present and no other live
    peer has a priority as high as its own."""
    if identity not in status:
        return False
    for peer, info in status.items():
        if peer == identity or not isinstance(info, dict):
            continue
        seen = _seen(info.get("lastseen"))
        lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
        if seen is not None and seen + lifetime <= now:
            continue  # dead: Kopf ignores it (and cleans it up)
        if int(info.get("priority", 0)) >= priority:
            return False
    return True


class Leadership:
    """Follows the peering objects and opens or closes `gate` (the work queue's)."""

    def __init__(
        self,
        kube: Kube,
        gate: asyncio.Event,
        identity: str,
        priority: int,
        namespaces: Sequence[str] = (),
        interval: float = 1.0,
        settle: float = 3.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kube, self.gate, self.identity, self.priority = kube, gate, identity, priority
        # Namespaced replicas meet in a KopfPeering of each watched namespace; cluster-wide
        # ones in the ClusterKopfPeering.
        self.scopes: list[str | None] = list(namespaces) or [None]
        self.interval, self.settle, self.clock = interval, settle, clock
        self.present_since: dt.datetime | None = None

    async def judge(self) -> bool:
        """One look at every peering object: whether this replica may write now."""
        now = self.clock()
        present, ahead = True, True
        for namespace in self.scopes:
            kind = "KopfPeering" if namespace else "ClusterKopfPeering"
            body = await self.kube.get(API_VERSION, kind, namespace, PEERING_NAME)
            status = (body or {}).get("status") or {}
            present = present and self.identity in status
            ahead = ahead and leads(status, self.identity, self.priority, now)
        if not present:
            self.present_since = None
            return False
        if self.present_since is None:
            self.present_since = now
        return ahead and (now - self.present_since).total_seconds() >= self.settle

    async def follow(self) -> None:
        self.gate.clear()
        failure = ""
        while True:
            try:
                leading = await self.judge()
                failure = ""
            except Exception as err:  # a refusal, a broken connection: not writing
                leading = False
                if str(err) != failure:  # once per new failure, not every second
                    failure = str(err)
                    log.warning("Could not read the peering: %s; not reconciling", err)
            if leading and not self.gate.is_set():
                log.info("Leading the peered replicas (%s): reconciling", self.identity)
                self.gate.set()
            elif not leading and self.gate.is_set():
                log.info("Another replica leads: not reconciling (%s)", self.identity)
                self.gate.clear()
            await asyncio.sleep(self.interval)
