"""What each controller declares beside its reconcile, for the wiring in operator.py:
its kind, the children it watches (and where the store keeps them), which of its
resources depend on a change elsewhere, and what to forget when one is deleted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubeloop.controllers.runtime import Key, Result

if TYPE_CHECKING:
    from kubeloop.controllers.common import Ctx

Obj = dict[str, Any]


@dataclass(frozen=True)
class ChildWatch:
    """A kind of child: watched with the operator's label selector, kept in the store
    under `store_kind`, indexed by the owner that its label `label` names."""

    group: str
    version: str
    plural: str
    kind: str
    store_kind: str
    label: str
    slim: Callable[[Obj], Obj] | None = None  # what of it the store keeps
    # After its deletion: the object to keep (marked) until its owner (named) recorded
    # it, or None.
    keep_deleted: Callable[[Ctx, Obj, str], Obj | None] | None = None


@dataclass(frozen=True)
class Controller:
    kind: str
    plural: str
    reconcile: Callable[[Ctx, Key], Awaitable[Result | None]]
    cluster_scoped: bool = False
    children: tuple[ChildWatch, ...] = ()
    # Its resources that depend on `obj` of kind `kind` (another kind), to look at again
    # when what others read of `obj` changed (its generation, phase or model).
    dependents: Callable[[Ctx, str, Obj], list[Key]] | None = None
    # Its resources to look at again when the nodes' capacity changed.
    on_capacity: Callable[[Ctx], list[Key]] | None = None
    wake_delay: float = 0.0  # how long to wait before looking again at what it wakes
    # Its dependents look again when one of its resources is deleted too.
    wake_on_delete: bool = False
    # What to forget (in-memory state beside the store) when a resource is deleted.
    forget: Callable[[Ctx, Key], None] | None = None


def slim_pod(pod: Obj) -> Obj:
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
