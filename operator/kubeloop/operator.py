"""Kopf wiring: settings, shared context in `memo`, and the watch handlers.

Every handler here is an `on.event` handler that records the object in the store and
enqueues the resource that owns it; all decisions happen in the per-kind reconciles.
Event handlers keep no state in the objects (no finalizers, no progress annotations),
so the operator writes nothing to an object it has nothing to change on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from kubeloop import watching
from kubeloop.controllers import (
    batchprediction,
    computetemplate,
    driftmonitor,
    experiment,
    modeldeployment,
    trainingjob,
)
from kubeloop.controllers.common import Ctx, OperatorConfig
from kubeloop.controllers.registration import ChildWatch, Controller
from kubeloop.controllers.runtime import Key, Result, Store, WorkQueue
from kubeloop.kube import Kube, KubeError
from kubeloop.names import GROUP, MANAGED_BY, VERSION
from kubeloop.peering import Leadership, own_identity
from kubeloop.watching import Feed

log = logging.getLogger("kubeloop.operator")

MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
STORAGE_PREFIX = GROUP
CHILD_EVENT_DELAY = 0.2

# Every kind, as its controller module declares it.
CONTROLLERS: tuple[Controller, ...] = (
    trainingjob.CONTROLLER,
    modeldeployment.CONTROLLER,
    driftmonitor.CONTROLLER,
    computetemplate.CONTROLLER,
    experiment.CONTROLLER,
    batchprediction.CONTROLLER,
)


def _owner_name(obj: dict[str, Any], label: str) -> str | None:
    value = (obj.get("metadata", {}).get("labels") or {}).get(label)
    return str(value) if value else None


def dependency_view(obj: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What other resources read of this one: a change elsewhere (counts, messages)
    need not wake them, which keeps a burst from scanning every dependent per event."""
    if obj is None:
        return None
    status = obj.get("status") or {}
    return (
        obj["metadata"].get("generation"),
        status.get("phase"),
        status.get("modelUri"),
        status.get("activeModelUri"),
        (status.get("bestTrial") or {}).get("modelUri"),
    )


def wake_dependents(ctx: Ctx, kind: str, obj: dict[str, Any]) -> None:
    """Resources whose status depends on this one look at it again (each controller
    declares which of its own depend on what)."""
    for controller in CONTROLLERS:
        if controller.dependents is None or controller.kind == kind:
            continue
        for key in controller.dependents(ctx, kind, obj):
            ctx.queue.add(key, delay=controller.wake_delay)


Handler = Callable[..., Awaitable[None]]


def _dispatcher(plural: str, handlers: list[Handler]) -> Handler:
    """One Kopf event handler calling `handlers` in turn with Kopf's arguments. One
    that fails is logged and the others still run, as when each was Kopf's own."""

    async def dispatch(**kwargs: Any) -> None:
        for handler in handlers:
            try:
                await handler(**kwargs)
            except Exception:
                log.exception("the %s event handler %s failed", plural, handler.__qualname__)

    return dispatch


def _deliverer(kind: str, handlers: list[Handler], memo: Any) -> watching.Deliver:
    """What watching.py calls with each event: `handlers`, as Kopf would call them."""
    dispatch = _dispatcher(kind, handlers)

    async def deliver(event: dict[str, Any]) -> None:
        await dispatch(event=event, memo=memo)

    return deliver


@dataclass(frozen=True)
class Wiring:
    """Kopf's registry (Kubeloop's kinds) and the built-in resources that watching.py
    follows, with their handlers."""

    registry: kopf.OperatorRegistry
    own: dict[Feed, list[Handler]]


def build_registry(
    ctx_holder: dict[str, Ctx], namespaces: Sequence[str] = ()
) -> kopf.OperatorRegistry:
    return wire(ctx_holder, namespaces).registry


def wire(ctx_holder: dict[str, Ctx], namespaces: Sequence[str] = ()) -> Wiring:
    registry = kopf.OperatorRegistry()
    seen_views: dict[Key, tuple[Any, ...] | None] = {}
    feeds: dict[Feed, list[Handler]] = {}
    own: dict[Feed, list[Handler]] = {}
    by_resource: dict[tuple[str, str, str], list[Handler]] = {}
    tasks: list[asyncio.Task[None]] = []

    def watch(
        group: str,
        version: str,
        plural: str,
        kind: str,
        *,
        cluster_scoped: bool = False,
        managed: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Add an event handler of a resource, and remember what it lists for the
        store's initial fill (`prime`). Kubeloop's own kinds are watched by Kopf, the
        built-in resources by watching.py (`watching.start`). Kopf gets one handler per
        resource, which calls that resource's handlers in turn: Kopf's invocation of a
        handler (its kwargs, logger and outcome bookkeeping) is paid once per event,
        not once per kind that watches, e.g. TrainingJobs for two kinds."""

        def register(handler: Handler) -> Handler:
            api_version = f"{group}/{version}" if group else version
            feed = (api_version, kind, cluster_scoped, MANAGED_SELECTOR if managed else None)
            feeds.setdefault(feed, []).append(handler)
            if group != GROUP:
                own.setdefault(feed, []).append(handler)
                return handler
            handlers = by_resource.setdefault((group, version, plural), [])
            if not handlers:
                kopf.on.event(group, version, plural, registry=registry, id=f"watch-{plural}")(
                    _dispatcher(plural, handlers)
                )
            handlers.append(handler)
            return handler

        return register

    def ctx_of(memo: Any) -> Ctx:
        ctx: Ctx = memo.ctx
        return ctx

    def resource(controller: Controller) -> Handler:
        kind = controller.kind

        async def on_resource(*, event: Any, memo: Any, **_: Any) -> None:
            ctx = ctx_of(memo)
            obj = event["object"]
            meta = obj["metadata"]
            namespace = meta.get("namespace", "")  # "" for a cluster-scoped kind
            key: Key = (kind, namespace, meta["name"])
            if event.get("type") == "DELETED":
                ctx.store.remove(kind, namespace, meta["name"])
                ctx.queue.forget(key)
                ctx.status_written_at.pop(key, None)
                seen_views.pop(key, None)
                if controller.forget is not None:
                    controller.forget(ctx, key)
                if controller.wake_on_delete:
                    wake_dependents(ctx, kind, obj)
                return
            ctx.store.put(kind, obj)
            # A new or changed spec goes before status follow-ups of other resources.
            status = obj.get("status") or {}
            ctx.queue.add(key, urgent=status.get("observedGeneration") != meta.get("generation"))
            # Compared with what the last watch event showed (the store may already
            # hold our own status write, whose event must still wake dependents).
            view = dependency_view(obj)
            if seen_views.get(key) != view:
                seen_views[key] = view
                wake_dependents(ctx, kind, obj)

        return on_resource

    def child(owner_kind: str, spec: ChildWatch) -> Handler:
        """Children live in the store under their store kind, indexed by their owner's
        name."""

        async def on_child(*, event: Any, memo: Any, **_: Any) -> None:
            ctx = ctx_of(memo)
            obj = event["object"]
            owner = _owner_name(obj, spec.label)
            if owner is None:
                return
            meta = obj["metadata"]
            if event.get("type") == "DELETED":
                kept = spec.keep_deleted(ctx, obj, owner) if spec.keep_deleted else None
                if kept is None:
                    ctx.store.remove(spec.store_kind, meta["namespace"], meta["name"], owner=owner)
                else:
                    ctx.store.put(spec.store_kind, kept, owner=owner)
            else:
                ctx.store.put(spec.store_kind, spec.slim(obj) if spec.slim else obj, owner=owner)
            # Children change in bursts (a Job's status and its pods within milliseconds):
            # one reconcile a moment later sees them all and writes status once.
            ctx.queue.add((owner_kind, meta["namespace"], owner), delay=CHILD_EVENT_DELAY)

        return on_child

    for controller in CONTROLLERS:
        watch(
            GROUP,
            VERSION,
            controller.plural,
            controller.kind,
            cluster_scoped=controller.cluster_scoped,
        )(resource(controller))
    for controller in CONTROLLERS:
        for spec in controller.children:
            watch(spec.group, spec.version, spec.plural, spec.kind, managed=True)(
                child(controller.kind, spec)
            )

    @watch("", "v1", "nodes", "Node", cluster_scoped=True)
    async def on_node(*, event: Any, memo: Any, **_: Any) -> None:
        ctx = ctx_of(memo)
        node = event["object"]
        name = node["metadata"]["name"]
        before = ctx.store.get("Node", "", name)
        if event.get("type") == "DELETED":
            ctx.store.remove("Node", "", name)
        else:
            slim = {
                "metadata": {"name": name, "labels": node["metadata"].get("labels", {})},
                "spec": {"taints": (node.get("spec") or {}).get("taints", [])},
                "status": {"allocatable": (node.get("status") or {}).get("allocatable", {})},
            }
            if slim == before:
                return  # a heartbeat: nothing that decides a fit has changed
            ctx.store.put("Node", slim)
        # Capacity changed: templates count again, runs waiting for a fit get a look.
        for controller in CONTROLLERS:
            if controller.on_capacity is not None:
                for key in controller.on_capacity(ctx):
                    ctx.queue.add(key, delay=controller.wake_delay)

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # Kopf's watches use exactly the credentials of kube.py.
        return kopf.ConnectionInfo(**ctx_holder["ctx"].kube.connection_info())

    @kopf.on.startup(registry=registry)
    async def startup(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        configure(settings)
        ctx = ctx_holder["ctx"]
        memo.ctx = ctx
        # No reconcile before every watched kind is in the store: a reconcile that ran
        # on half a store would write what is not true (a target "not found").
        await prime(ctx, memo, feeds, namespaces)
        delivers = {feed: _deliverer(feed[1], handlers, memo) for feed, handlers in own.items()}
        tasks.extend(watching.start(ctx.kube, delivers, namespaces, settings.watching))
        ctx.queue.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(*, memo: Any, **_: Any) -> None:
        ctx = ctx_of(memo)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()
        await ctx.queue.stop()
        await ctx.kube.close()

    return Wiring(registry, own)


async def prime(
    ctx: Ctx, memo: Any, feeds: dict[Feed, list[Handler]], namespaces: Sequence[str]
) -> None:
    """Fill the store from one list of every watched kind, through the same handlers
    as the watch events (controller-runtime's "wait for cache sync"). Kopf's watches
    then list again and stream on; the store takes the newer versions."""
    started = time.monotonic()
    count = 0
    for (api_version, kind, cluster_scoped, selector), handlers in feeds.items():
        scopes: list[str | None] = [None] if cluster_scoped or not namespaces else list(namespaces)
        for namespace in scopes:
            try:
                items = await ctx.kube.list(api_version, kind, namespace, selector)
            except KubeError as err:
                # Not allowed (a narrower RBAC) or not served: the watch still fills it.
                log.warning("Initial list of %s failed, the watch fills it: %s", kind, err)
                continue
            for obj in items:
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                for handler in handlers:
                    await handler(event={"type": None, "object": obj}, memo=memo)
                count += 1
    log.info(
        "Store filled from the initial lists: %d objects in %.2fs",
        count,
        time.monotonic() - started,
    )


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf computes each object's "essence" (a deep copy of the whole body) and its diff
    on every watch event, for change and daemon handlers. Kubeloop registers neither (all
    its handlers are `on.event`: `build_registry`, checked by tests/unit), so the copy is
    never read: this storage builds none. In a py-spy profile of a 300-job burst, Kopf's
    diffbase.py was 19% of the operator's CPU. Nothing is ever stored."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{STORAGE_PREFIX}/finalizer"
    # Watches end on the server side every few minutes and on the client side shortly
    # after, so that a silently dead connection is noticed.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.posting.enabled = False  # Our own Events, with our reasons, via kube.py.
    settings.peering.name = "kubeloop"
    settings.peering.mandatory = False


def make_context(config: OperatorConfig, kube: Kube | None = None) -> Ctx:
    kube = kube or Kube.from_environment()
    store = Store()
    holder: dict[str, Ctx] = {}

    def runner(controller: Controller) -> Callable[[Key], Awaitable[Result | None]]:
        async def run(key: Key) -> Result | None:
            return await controller.reconcile(holder["ctx"], key)

        return run

    queue = WorkQueue({c.kind: runner(c) for c in CONTROLLERS}, workers=config.workers)
    ctx = Ctx(kube=kube, store=store, queue=queue, config=config)
    holder["ctx"] = ctx
    return ctx


async def run_operator(
    config: OperatorConfig,
    *,
    namespaces: Sequence[str] = (),
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    liveness_endpoint: str | None = None,
    kube: Kube | None = None,
    peering: bool = False,
) -> None:
    ctx = make_context(config, kube)
    registry = build_registry({"ctx": ctx}, namespaces)
    # Kopf pauses every operator of equal priority: each replica draws its own, and the
    # highest one alive is the active one; only that one's queue reconciles.
    priority = secrets.randbelow(2**31 - 1) + 1 if peering else 0
    identity = own_identity()
    leadership = None
    if peering:
        leadership = asyncio.ensure_future(
            Leadership(ctx.kube, ctx.queue.gate, identity, priority, namespaces).follow()
        )
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            liveness_endpoint=liveness_endpoint,
            standalone=not peering,
            priority=priority,
            identity=identity,  # type: ignore[arg-type]  # (Kopf's Identity is a NewType of str)
            memo=kopf.Memo(),
        )
    finally:
        if leadership is not None:
            leadership.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leadership
