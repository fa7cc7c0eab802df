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
from typing import Any

import kopf

from kubeloop.canary.measure import METER
from kubeloop.controllers import (
    computetemplate,
    driftmonitor,
    modeldeployment,
    retrain,
    trainingjob,
    trainingprogress,
)
from kubeloop.controllers.common import Ctx, OperatorConfig
from kubeloop.controllers.runtime import Key, Result, Store, WorkQueue
from kubeloop.kube import Kube, KubeError
from kubeloop.names import (
    EVALUATION_LABEL,
    GROUP,
    MANAGED_BY,
    MODEL_DEPLOYMENT_LABEL,
    TRAINING_JOB_LABEL,
    VERSION,
)
from kubeloop.peering import Leadership, own_identity

log = logging.getLogger("kubeloop.operator")

MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
STORAGE_PREFIX = GROUP
CHILD_EVENT_DELAY = 0.2

KIND_PLURALS = {
    trainingjob.KIND: "trainingjobs",
    modeldeployment.KIND: "modeldeployments",
    driftmonitor.KIND: "driftmonitors",
}


def _slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """Only what status needs, to keep memory flat with thousands of pods."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    return {
        "metadata": {
            k: meta.get(k)
            for k in (
                "name",
                "namespace",
                "labels",
                "annotations",
                "creationTimestamp",
                "deletionTimestamp",
                "uid",
                "resourceVersion",
                # Whose pod it is: a pod is matched to its Job by the Job's UID, never by
                # a label anyone who may create pods can copy.
                "ownerReferences",
            )
            if meta.get(k) is not None
        },
        # Where it ran, for the messages that say why a pod failed.
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": {
            k: status.get(k)
            for k in (
                "phase",
                "conditions",
                "containerStatuses",
                "initContainerStatuses",
                "reason",
                "message",
                "podIP",
            )
            if status.get(k) is not None
        },
    }


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
    )


def dependents(ctx: Ctx, kind: str, namespace: str, name: str) -> list[Key]:
    """Resources whose status depends on this one: ModelDeployments serving a
    TrainingJob's model, DriftMonitors watching a ModelDeployment or waiting for the
    TrainingJob they created."""
    found: list[Key] = []
    if kind == trainingjob.KIND:
        for md in ctx.store.all(modeldeployment.KIND):
            if md["metadata"]["namespace"] == namespace and name in modeldeployment.referenced_jobs(
                md
            ):
                found.append((modeldeployment.KIND, namespace, md["metadata"]["name"]))
    for dm in ctx.store.all(driftmonitor.KIND):
        if dm["metadata"]["namespace"] != namespace:
            continue
        spec = dm.get("spec") or {}
        retrain = ((dm.get("status") or {}).get("lastRetrain") or {}).get("trainingJob")
        if (kind == modeldeployment.KIND and spec.get("modelDeployment") == name) or (
            kind == trainingjob.KIND and retrain == name
        ):
            found.append((driftmonitor.KIND, namespace, dm["metadata"]["name"]))
    return found


Handler = Callable[..., Awaitable[None]]
# What a watch lists: apiVersion, kind, cluster-scoped, label selector.
Feed = tuple[str, str, bool, str | None]


def build_registry(
    ctx_holder: dict[str, Ctx], namespaces: Sequence[str] = ()
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    seen_views: dict[Key, tuple[Any, ...] | None] = {}
    feeds: dict[Feed, list[Handler]] = {}

    def watch(
        group: str,
        version: str,
        plural: str,
        kind: str,
        *,
        cluster_scoped: bool = False,
        managed: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Register a Kopf event handler, and remember what it lists for the store's
        initial fill (`prime`)."""

        def register(handler: Handler) -> Handler:
            kopf.on.event(group, version, plural, registry=registry)(handler)
            api_version = f"{group}/{version}" if group else version
            feed = (api_version, kind, cluster_scoped, MANAGED_SELECTOR if managed else None)
            feeds.setdefault(feed, []).append(handler)
            return handler

        return register

    def ctx_of(memo: Any) -> Ctx:
        ctx: Ctx = memo.ctx
        return ctx

    for kind, plural in KIND_PLURALS.items():

        def make(kind: str) -> Callable[..., Awaitable[None]]:
            async def on_resource(*, event: Any, memo: Any, **_: Any) -> None:
                ctx = ctx_of(memo)
                obj = event["object"]
                meta = obj["metadata"]
                key: Key = (kind, meta["namespace"], meta["name"])
                if event.get("type") == "DELETED":
                    ctx.store.remove(kind, meta["namespace"], meta["name"])
                    ctx.queue.forget(key)
                    ctx.status_written_at.pop(key, None)
                    seen_views.pop(key, None)
                    if kind == driftmonitor.KIND:
                        driftmonitor.forget(meta["namespace"], meta["name"])
                    if kind == modeldeployment.KIND:
                        METER.forget(key)
                    if kind == trainingjob.KIND:
                        trainingjob.forget_gone_jobs(ctx, meta["namespace"], meta["name"])
                        trainingprogress.forget(key)
                    return
                ctx.store.put(kind, obj)
                # A new or changed spec goes before status follow-ups of other resources.
                status = obj.get("status") or {}
                ctx.queue.add(
                    key, urgent=status.get("observedGeneration") != meta.get("generation")
                )
                # Compared with what the last watch event showed (the store may already
                # hold our own status write, whose event must still wake dependents).
                view = dependency_view(obj)
                if seen_views.get(key) != view:
                    seen_views[key] = view
                    for dependent in dependents(ctx, kind, meta["namespace"], meta["name"]):
                        ctx.queue.add(dependent)
                    # A run that starts or ends changes what fits of its template.
                    used = (status.get("compute") or {}).get("name") or (obj.get("spec") or {}).get(
                        "compute"
                    )
                    if used:
                        ctx.queue.add((computetemplate.KIND, "", used), delay=1.0)

            return on_resource

        watch(GROUP, VERSION, plural, kind)(make(kind))

    def child(
        store_kind: str,
        owner_kind: str,
        label: str,
        slim: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Callable[..., Awaitable[None]]:
        """Children live in the store under `store_kind`, indexed by their owner's name."""

        async def on_child(*, event: Any, memo: Any, **_: Any) -> None:
            ctx = ctx_of(memo)
            obj = event["object"]
            owner = _owner_name(obj, label)
            if owner is None:
                return
            meta = obj["metadata"]
            if event.get("type") == "DELETED" and not trainingjob.keep_after_deletion(
                store_kind, obj, ctx.store.get(trainingjob.KIND, meta["namespace"], owner)
            ):
                ctx.store.remove(store_kind, meta["namespace"], meta["name"], owner=owner)
            elif event.get("type") == "DELETED":
                # A finished Job removed by its TTL before we saw it finish: keep its
                # final state until the TrainingJob's status records it.
                ctx.store.put(store_kind, {**obj, trainingjob.GONE: True}, owner=owner)
            else:
                ctx.store.put(store_kind, slim(obj) if slim else obj, owner=owner)
            # Children change in bursts (a Job's status and its pods within milliseconds):
            # one reconcile a moment later sees them all and writes status once.
            ctx.queue.add((owner_kind, meta["namespace"], owner), delay=CHILD_EVENT_DELAY)

        return on_child

    watch("batch", "v1", "jobs", "Job", managed=True)(
        child("Job", trainingjob.KIND, TRAINING_JOB_LABEL)
    )
    watch("", "v1", "pods", "Pod", managed=True)(
        child("Pod", trainingjob.KIND, TRAINING_JOB_LABEL, _slim_pod)
    )
    watch("", "v1", "services", "Service", managed=True)(
        child(trainingjob.SERVICE, trainingjob.KIND, TRAINING_JOB_LABEL)
    )
    # The evaluation Jobs of DriftMonitors, and their pods (which carry the verdict).
    watch("batch", "v1", "jobs", "Job", managed=True)(
        child(retrain.EVAL_JOB, driftmonitor.KIND, EVALUATION_LABEL)
    )
    watch("", "v1", "pods", "Pod", managed=True)(
        child(retrain.EVAL_POD, driftmonitor.KIND, EVALUATION_LABEL, _slim_pod)
    )
    for group, version, plural, kind, store_kind in (
        ("apps", "v1", "deployments", "Deployment", modeldeployment.DEPLOYMENT),
        ("", "v1", "services", "Service", modeldeployment.SERVICE),
        (
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            modeldeployment.HPA,
        ),
        ("", "v1", "pods", "Pod", modeldeployment.POD),
    ):
        watch(group, version, plural, kind, managed=True)(
            child(
                store_kind,
                modeldeployment.KIND,
                MODEL_DEPLOYMENT_LABEL,
                _slim_pod if plural == "pods" else None,
            )
        )

    @watch(GROUP, VERSION, "computetemplates", computetemplate.KIND, cluster_scoped=True)
    async def on_template(*, event: Any, memo: Any, **_: Any) -> None:
        ctx = ctx_of(memo)
        obj = event["object"]
        name = obj["metadata"]["name"]
        key: Key = (computetemplate.KIND, "", name)
        before = ctx.store.get(computetemplate.KIND, "", name)
        if event.get("type") == "DELETED":
            ctx.store.remove(computetemplate.KIND, "", name)
            ctx.queue.forget(key)
        else:
            ctx.store.put(computetemplate.KIND, obj)
            ctx.queue.add(key)
        # What the resources read of a template is its spec: a status write wakes none.
        if (
            before is None
            or event.get("type") == "DELETED"
            or before.get("spec") != obj.get("spec")
        ):
            for dependent in computetemplate.dependents(ctx, name):
                ctx.queue.add(dependent)

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
        # Capacity changed: templates count again, jobs waiting for a fit get a look.
        for template in ctx.store.all(computetemplate.KIND):
            ctx.queue.add((computetemplate.KIND, "", template["metadata"]["name"]), delay=1.0)
        for tj in ctx.store.all(trainingjob.KIND):
            if (tj.get("status") or {}).get("phase") in ("Pending", None):
                ctx.queue.add(
                    (trainingjob.KIND, tj["metadata"]["namespace"], tj["metadata"]["name"])
                )

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
        ctx.queue.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(*, memo: Any, **_: Any) -> None:
        ctx = ctx_of(memo)
        await ctx.queue.stop()
        await ctx.kube.close()

    return registry


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
    for plural in ("jobs", "pods", "deployments", "services", "horizontalpodautoscalers"):
        settings.watching.label_selectors[plural] = MANAGED_SELECTOR
    settings.peering.name = "kubeloop"
    settings.peering.mandatory = False


def make_context(config: OperatorConfig, kube: Kube | None = None) -> Ctx:
    kube = kube or Kube.from_environment()
    store = Store()
    holder: dict[str, Ctx] = {}

    async def run_tj(key: Key) -> Result | None:
        return await trainingjob.reconcile(holder["ctx"], key)

    async def run_md(key: Key) -> Result | None:
        return await modeldeployment.reconcile(holder["ctx"], key)

    async def run_dm(key: Key) -> Result | None:
        return await driftmonitor.reconcile(holder["ctx"], key)

    async def run_ct(key: Key) -> Result | None:
        return await computetemplate.reconcile(holder["ctx"], key)

    queue = WorkQueue(
        {
            trainingjob.KIND: run_tj,
            modeldeployment.KIND: run_md,
            driftmonitor.KIND: run_dm,
            computetemplate.KIND: run_ct,
        },
        workers=config.workers,
    )
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
