"""One `Plan` and one `execute` for every kind.

A reconcile reads what it observes, decides a `Plan` with pure planners, and hands it
here. `execute` is the only place that writes for a reconcile: children by server-side
apply (skipped when the store already has every rendered field), deletes, merge
patches, the status (with one throttle for minor changes) and Events (with one policy).

The decisions are pure functions, unit-tested apart from the API server:
- `unchanged`: whether an apply would change nothing;
- `hold_back`: how long a minor status change waits;
- `events_for`: which Events a move from one status to the next announces.

The Event policy: an Event is recorded when the status moved from the one the object
had when the reconcile began, right after the write that made the move, so that it is
neither lost (a later failure, or a final write that is a no-op because an earlier one
in the same pass already wrote it) nor repeated (a re-run starts from the status that
was written and sees no move). The plan's own Events go out when there are any;
otherwise a change of phase is announced by `transition_event`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from kubeloop import conditions as c
from kubeloop.controllers.common import (
    Ctx,
    finish_status,
    log_forbidden,
    record_event,
    refused,
    report_refused_child,
    rfc3339,
    transition_event,
    write_status,
)
from kubeloop.controllers.runtime import Result
from kubeloop.kube import KubeError

log = logging.getLogger("kubeloop")

Event = tuple[str, str, str]  # (type, reason, message)

# Status changes that only update counts or a message are written at most every 10 s
# per object; a change of phase, of any condition or of the plan's `urgent` fields is
# written at once.
STATUS_MIN_INTERVAL = 10.0

S = TypeVar("S", bound=BaseModel)
ALL = "*"


@dataclass
class Child:
    """An object to apply, and where the store keeps it (its watch's store kind)."""

    obj: dict[str, Any]
    store_kind: str
    owned: bool = True  # indexed in the store under the owner's name
    # A child whose failure does not stop the reconcile: the condition that says so
    # replaces the plan's condition of the same type (an HTTPRoute without Gateway API).
    on_failure: Callable[[KubeError], c.Cond] | None = None
    # A child the planner decides about when the API server refuses it (a retrain's
    # TrainingJob): True when it took the error as final (and changed the plan's status
    # and Events to say so), False to raise it (retried with backoff).
    on_refused: Callable[[KubeError], bool] | None = None


@dataclass
class Delete:
    api_version: str
    kind: str
    name: str
    uid: str | None = None  # delete only this object, not a newer one of the same name
    propagation: str = "Background"
    forget: str | None = None  # a store kind to drop it from (an unwatched kind)


@dataclass
class Patch:
    api_version: str
    kind: str
    name: str
    patch: dict[str, Any]
    field_manager: str | None = None
    subresource: str | None = None
    store_kind: str | None = None  # keep the patched object in the store under this kind
    # As Child.on_refused: a patch whose refusal the planner decides about (a promotion).
    on_refused: Callable[[KubeError], bool] | None = None


@dataclass
class Plan(Generic[S]):
    status: S
    conds: list[c.Cond] = field(default_factory=list)
    apply: list[Child] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    patch: list[Patch] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # Write the status before deleting anything, so that a crash between the two cannot
    # lose what the status records (a TrainingJob's restart count).
    status_first: bool = False
    # The first status of a new object is not announced unless it is Stalled.
    quiet_start: bool = False
    # Announce a change of the Event's reason within a phase too.
    announce_reason: bool = False
    # Status fields (dotted paths; ALL: every one) whose change is written at once,
    # beside the phase, the generation and the conditions: state the next plan reads
    # back, or figures that are the point of the status.
    urgent: tuple[str, ...] = ()
    # Store entries (store kind, name) to drop once the status is written.
    forget: list[tuple[str, str]] = field(default_factory=list)

    def requeue(self, seconds: float | None) -> None:
        """Run again after `seconds` at the latest."""
        if seconds is not None:
            self.requeue_after = min(self.requeue_after or seconds, seconds)


# --- The pure decisions -----------------------------------------------------------------


def contains(have: Any, want: Any) -> bool:
    """Whether `have` has every field of `want` with the same value (lists whole)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(contains(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


def unchanged(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    """An apply of `want` would write nothing: the observed object has all of it."""
    return have is not None and contains(have, want)


def _at(status: dict[str, Any], path: str) -> Any:
    if path == ALL:
        return status
    value: Any = status
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def shape(status: dict[str, Any], urgent: Sequence[str] = ()) -> tuple[Any, ...]:
    """What a change must touch to be written at once."""
    return (
        status.get("phase"),
        status.get("observedGeneration"),
        tuple(
            (cd.get("type"), cd.get("status"), cd.get("reason"))
            for cd in status.get("conditions") or []
        ),
        tuple(_at(status, path) for path in urgent),
    )


def hold_back(
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    urgent: Sequence[str] = (),
    events: bool = False,
    since_write: float = float("inf"),
) -> float:
    """Seconds to hold back the write of `after` (0: write now). Only a minor change
    (counts, messages) waits, for at most STATUS_MIN_INTERVAL since the last write; a
    change that comes with Events is written with them."""
    if before == after or events or shape(before, urgent) != shape(after, urgent):
        return 0.0
    return max(0.0, STATUS_MIN_INTERVAL - since_write)


def _cond(entry: dict[str, Any]) -> c.Cond:
    value = entry.get("status")
    status = None if value not in ("True", "False") else value == "True"
    return c.Cond(entry.get("type", ""), status, entry.get("reason", ""), entry.get("message", ""))


def events_for(
    before: dict[str, Any],
    after: dict[str, Any],
    conds: list[c.Cond],
    planned: Sequence[Event] = (),
    *,
    quiet_start: bool = False,
    announce_reason: bool = False,
) -> list[Event]:
    """The Events of a move from status `before` (what the object had when the
    reconcile began) to `after` (what it has now): none without a move; the plan's
    own when it has any; else the transition's when the phase changed."""
    if before == after:
        return []
    if planned:
        return list(planned)
    phase, prev_phase = after.get("phase"), before.get("phase")
    event = transition_event(phase, after.get("message") or "", conds)
    if phase == prev_phase:
        if not announce_reason:
            return []
        prev_conds = [_cond(x) for x in before.get("conditions") or []]
        if transition_event(prev_phase, "", prev_conds)[1] == event[1]:
            return []
    stalled = any(cd.type == c.STALLED for cd in conds)
    if quiet_start and prev_phase is None and not stalled:
        return []
    return [event]


# --- Carrying it out --------------------------------------------------------------------


@dataclass
class _Pass:
    """What one execute has done so far."""

    before: dict[str, Any]
    announced: bool = False
    sent: int = 0  # how many of the plan's own Events went out


async def execute(ctx: Ctx, body: dict[str, Any], plan: Plan[Any]) -> Result | None:
    """Carry out `plan` for `body`: see the module's docstring. A child the API server
    refuses makes the resource InvalidSpec and ends the pass (None); any other error
    raises, and the work queue retries with backoff."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace", ""), meta["name"]
    done = _Pass(before=dict(body.get("status") or {}))
    if plan.status_first:
        await _write(ctx, body, plan, done, throttle=False)
    for gone in plan.delete:
        await ctx.kube.delete(
            gone.api_version,
            gone.kind,
            namespace,
            gone.name,
            uid=gone.uid,
            propagation=gone.propagation,
        )
        if gone.forget:
            ctx.store.remove(gone.forget, namespace, gone.name, owner=name)
    for child in plan.apply:
        obj = child.obj
        if unchanged(ctx.store.get(child.store_kind, namespace, obj["metadata"]["name"]), obj):
            continue
        try:
            applied = await ctx.kube.apply(obj)
        except KubeError as exc:
            if child.on_refused is not None and child.on_refused(exc):
                log_forbidden(exc, f"{obj['kind']} {namespace}/{obj['metadata']['name']}")
                continue
            if child.on_failure is not None:
                log_forbidden(exc, f"{obj['kind']} {namespace}/{obj['metadata']['name']}")
                _replace(plan.conds, child.on_failure(exc))
                continue
            if not refused(exc):
                raise
            await report_refused_child(ctx, body, type(plan.status)(), exc, ctx.clock())
            return None
        ctx.store.put(child.store_kind, applied, owner=name if child.owned else None)
    for change in plan.patch:
        try:
            patched = await ctx.kube.merge_patch(
                change.api_version,
                change.kind,
                namespace,
                change.name,
                change.patch,
                field_manager=change.field_manager,
                subresource=change.subresource,
            )
        except KubeError as exc:
            if change.on_refused is None or not change.on_refused(exc):
                raise
            log_forbidden(exc, f"{change.kind} {namespace}/{change.name}")
            continue
        if change.store_kind and patched.get("metadata"):
            ctx.store.put(change.store_kind, patched)
    wait = await _write(ctx, body, plan, done, throttle=not plan.status_first)
    if wait > 0:
        # Only counts or a message changed: written a moment later, together with
        # whatever else changes meanwhile.
        return Result(requeue_after=min(wait, plan.requeue_after or wait))
    for store_kind, child_name in plan.forget:
        ctx.store.remove(store_kind, namespace, child_name, owner=name)
    return Result(requeue_after=plan.requeue_after)


async def _write(
    ctx: Ctx, body: dict[str, Any], plan: Plan[Any], done: _Pass, throttle: bool
) -> float:
    """Write the plan's status unless held back (returns the wait), then announce the
    move, once per pass."""
    status = finish_status(body, plan.status, plan.conds, rfc3339(ctx.clock()))
    current = _current(ctx, body)
    if throttle:
        meta = body["metadata"]
        key = (body["kind"], meta.get("namespace", ""), meta["name"])
        wait = hold_back(
            current,
            status,
            urgent=plan.urgent,
            events=bool(plan.events),
            since_write=time.monotonic() - ctx.status_written_at.get(key, 0.0),
        )
        if wait > 0:
            return wait
    if current != status:
        await write_status(ctx, {**body, "status": current}, status)
    if not done.announced:
        events = events_for(
            done.before,
            status,
            plan.conds,
            plan.events,
            quiet_start=plan.quiet_start,
            announce_reason=plan.announce_reason,
        )
        done.announced = True
        done.sent = len(plan.events) if events and plan.events else 0
    elif done.sent:
        # Status first, then a child's refusal said more (a retrain refused after it was
        # counted): its Events go out with the write that records it.
        events, done.sent = plan.events[done.sent :], len(plan.events)
    else:
        events = []
    for event in events:
        await record_event(ctx, body, *event)
    return 0.0


def _replace(conds: list[c.Cond], cond: c.Cond) -> None:
    """Put `cond` in the place of the condition of its type (or last)."""
    at = next((i for i, cd in enumerate(conds) if cd.type == cond.type), len(conds))
    conds[at : at + 1] = [cond]


def _current(ctx: Ctx, body: dict[str, Any]) -> dict[str, Any]:
    """The status as last written: the store's, once this pass has written it."""
    meta = body["metadata"]
    stored = ctx.store.get(body["kind"], meta.get("namespace", ""), meta["name"])
    if stored is not None and stored["metadata"].get("uid") == meta.get("uid"):
        return dict(stored.get("status") or {})
    return dict(body.get("status") or {})
