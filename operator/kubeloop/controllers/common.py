"""What every kind's reconcile shares: context, parsing, status writes, events."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kubeloop import conditions as c
from kubeloop import metrics
from kubeloop.controllers.runtime import Key, Store, WorkQueue
from kubeloop.kube import Kube, KubeError
from kubeloop.names import API_VERSION

log = logging.getLogger("kubeloop")

M = TypeVar("M", bound=BaseModel)

DEFAULT_IMAGE = "ghcr.io/kubeloop/kubeloop:0.1.0"


@dataclass
class OperatorConfig:
    image: str = DEFAULT_IMAGE
    # URL prefixes a DriftMonitor's Prometheus source may point at (empty: none).
    drift_source_allowlist: list[str] = field(default_factory=list)
    workers: int = 32


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# Status changes that only update counts or a message are written at most every 10 s
# per object; a change of phase or of any condition is written at once.
STATUS_MIN_INTERVAL = 10.0


@dataclass
class Ctx:
    kube: Kube
    store: Store
    queue: WorkQueue
    config: OperatorConfig
    clock: Callable[[], dt.datetime] = utcnow
    status_written_at: dict[tuple[str, str, str], float] = field(default_factory=dict)


def field_path(loc: tuple[Any, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_spec(model: type[M], body: dict[str, Any]) -> tuple[M | None, str]:
    """The typed spec, or None and a message naming the offending field."""
    try:
        return model.model_validate(body.get("spec") or {}), ""
    except ValidationError as err:
        first = err.errors()[0]
        extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        return None, f"{field_path(tuple(first['loc']))}: {first['msg']}{extra}"


def owner_reference(body: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def key_of(body: dict[str, Any]) -> Key:
    return (body["kind"], body["metadata"]["namespace"], body["metadata"]["name"])


def finish_status(
    body: dict[str, Any],
    status: BaseModel,
    computed: list[c.Cond],
    now: str,
) -> dict[str, Any]:
    """The status dict to write: the model's fields plus merged conditions."""
    generation = body["metadata"].get("generation")
    out = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    out["observedGeneration"] = generation
    out["conditions"] = c.merge_conditions(
        (body.get("status") or {}).get("conditions", []), computed, generation, now
    )
    return out


def _shape(status: dict[str, Any]) -> tuple[Any, ...]:
    """What a change must touch to be written at once: phase, generation, conditions."""
    return (
        status.get("phase"),
        status.get("observedGeneration"),
        tuple(
            (c.get("type"), c.get("status"), c.get("reason"))
            for c in status.get("conditions") or []
        ),
    )


def status_wait(ctx: Ctx, body: dict[str, Any], status: dict[str, Any]) -> float:
    """Seconds to hold back a minor status change (counts, messages), else 0."""
    if _shape(body.get("status") or {}) != _shape(status):
        return 0.0
    key = (body["kind"], body["metadata"]["namespace"], body["metadata"]["name"])
    elapsed = time.monotonic() - ctx.status_written_at.get(key, 0.0)
    return max(0.0, STATUS_MIN_INTERVAL - elapsed)


async def write_status(ctx: Ctx, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Apply the whole status when it differs from what the API server has."""
    if (body.get("status") or {}) == status:
        return False
    meta = body["metadata"]
    namespace = meta.get("namespace", "")  # "" for a cluster-scoped kind
    ctx.status_written_at[(body["kind"], namespace, meta["name"])] = time.monotonic()
    obj = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "metadata": {"name": meta["name"], **({"namespace": namespace} if namespace else {})},
        "status": status,
    }
    updated = await ctx.kube.apply(obj, status=True)
    metrics.STATUS_WRITES.labels(body["kind"]).inc()
    log.debug(
        "Wrote status of %s %s/%s: %s %s",
        body["kind"],
        namespace,
        meta["name"],
        status.get("phase"),
        _shape(status)[2],
    )
    # Keep the store current so that a reconcile right after this one compares against
    # what we wrote, not against the pre-write object.
    if updated.get("metadata"):
        ctx.store.put(body["kind"], updated)
    return True


# Condition reasons that say only "in progress" or "done": an Event names the phase then.
_GENERIC_REASONS = frozenset({c.PROGRESSING, c.RECONCILED})


def transition_event(phase: str | None, message: str, conds: list[c.Cond]) -> tuple[str, str, str]:
    """The Event for a move into `phase`: its reason is the condition's reason (what
    `kubectl get -o wide` shows), a Warning when the resource is Stalled or not Ready
    for a reason that is not a wait."""
    by_type = {cd.type: cd for cd in conds}
    stalled, ready = by_type.get(c.STALLED), by_type.get(c.READY)
    cause = stalled or ready
    reason = cause.reason if cause is not None else ""
    if not reason or reason in _GENERIC_REASONS:
        reason = phase or "Reconciled"
    warning = stalled is not None or phase in (c.FAILED, c.RESTARTING, c.DEGRADED)
    return ("Warning" if warning else "Normal", reason, message)


async def record_event(
    ctx: Ctx, body: dict[str, Any], event_type: str, reason: str, message: str
) -> None:
    """A Kubernetes Event on the resource, for `kubectl describe`. Best effort."""
    meta = body["metadata"]
    now = ctx.clock()
    stamp = rfc3339(now)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": body.get("apiVersion", API_VERSION),
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": c.truncate(message),
        "type": event_type,
        "source": {"component": "kubeloop"},
        "reportingComponent": "kubeloop",
        "reportingInstance": "kubeloop",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await ctx.kube.create(event)
    except KubeError as exc:
        if "being terminated" in exc.message:
            return  # the namespace is going away, and the resource with it
        log.warning(
            "Could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc
        )


def invalid_spec_status(body: dict[str, Any], status: BaseModel, message: str, now: str) -> dict:
    """Ready=False/InvalidSpec and Stalled=True: nothing to retry until the spec changes."""
    status_model = status.model_copy(update={"phase": "Invalid", "message": message})
    return finish_status(
        body,
        status_model,
        [
            c.Cond(c.READY, False, c.INVALID_SPEC, message),
            c.Cond(c.STALLED, True, c.INVALID_SPEC, message),
        ],
        now,
    )


async def begin(
    ctx: Ctx, key: tuple[str, str, str], spec_model: type[M], empty_status: BaseModel
) -> tuple[dict[str, Any], M, dt.datetime] | None:
    """The start of every reconcile: the object from the store and its typed spec; None
    when there is nothing to do (gone, being deleted, or an invalid spec, which is
    reported once in status and an Event and then waits for the next spec change)."""
    kind, namespace, name = key
    body = ctx.store.get(kind, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    now = ctx.clock()
    spec, error = parse_spec(spec_model, body)
    if spec is None:
        status = invalid_spec_status(body, empty_status, error, rfc3339(now))
        if await write_status(ctx, body, status):
            await record_event(ctx, body, "Warning", c.INVALID_SPEC, error)
        return None
    return body, spec, now


def log_forbidden(exc: KubeError, what: str) -> None:
    """A refusal that a reconcile reports in status or an Event rather than raising is
    logged too when it is RBAC's (403): a permission missing from the operator's role
    is an installation problem, to be seen in its log."""
    if exc.status == 403 and "being terminated" not in exc.message:
        log.warning("Forbidden: %s: %s", what, exc)


# Server-side apply answers 500 (not 422) when the applied object does not fit the
# kind's schema at all, e.g. a volumeMount the CRD's free-form item let through with
# fields a VolumeMount does not have, or two with the same mountPath.
UNTYPABLE = "failed to create typed patch object"


def refused(exc: KubeError) -> bool:
    """The API server rejected what we rendered: retrying the same spec cannot help."""
    return exc.status in (400, 422) or (exc.status == 500 and UNTYPABLE in exc.message)


async def report_refused_child(
    ctx: Ctx, body: dict[str, Any], empty_status: BaseModel, exc: KubeError, now: dt.datetime
) -> None:
    """InvalidSpec in status (and an Event): the spec passed the schema but makes a child
    the API server refuses, e.g. an env name or label it does not allow."""
    message = f"the spec makes a child the API server refuses: {exc.message}"
    status = invalid_spec_status(body, empty_status, message, rfc3339(now))
    if await write_status(ctx, body, status):
        await record_event(ctx, body, "Warning", c.INVALID_SPEC, message)
