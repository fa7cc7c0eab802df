"""kstatus: the health that Flux (and kpt, through cli-utils) computes for a resource.

A pure re-statement of the rules of `Compute` in sigs.k8s.io/cli-utils
`pkg/kstatus/status` (and Flux's fork of it) as they apply to a custom resource,
for which no built-in, kind-specific rule exists. In order, the first rule that
decides wins:

1. `metadata.deletionTimestamp` set: **Terminating**.
2. `status.observedGeneration` present and not `metadata.generation`: **InProgress**
   (skipped when either field is absent).
3. The conditions in list order: the first `Reconciling=True` gives **InProgress**, the
   first `Stalled=True` gives **Failed**.
4. The first `Ready` condition: `True` gives **Current**; `False` or `Unknown` gives
   **InProgress**; any other value is passed over.
5. Otherwise **Current**: kstatus takes a resource without any of these conditions, even
   one without a status, as reconciled.

A malformed object, where the library would return an error, is **Unknown**, as
kstatus pollers report it.

The operator writes its status for these rules (kubeloop.conditions): `Ready` always,
`Reconciling` or `Stalled` only while True, and `observedGeneration` on every write.

Test support, not part of the product: tests/unit/test_health_kstatus.py judges every
status the operator writes with it, and tests/unit/test_kstatus_library.py checks it
against the real library (hack/kstatus, built by `make kstatus`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    CURRENT = "Current"
    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Result:
    status: Status
    message: str


class _Malformed(ValueError):
    """A field has a type kstatus cannot read."""


def compute(obj: Mapping[str, Any]) -> Result:
    """The kstatus status of one resource, as returned by the API server."""
    try:
        return _compute(obj)
    except _Malformed as err:
        return Result(Status.UNKNOWN, str(err))


def _compute(obj: Mapping[str, Any]) -> Result:
    metadata = _mapping(obj, "metadata")
    status = _mapping(obj, "status")

    deletion = metadata.get("deletionTimestamp")
    if deletion is not None and not isinstance(deletion, str):
        raise _Malformed(f"metadata.deletionTimestamp is not a string: {deletion!r}")
    if deletion:
        return Result(Status.TERMINATING, "Resource scheduled for deletion")

    generation = _integer(metadata, "generation", "metadata")
    observed = _integer(status, "observedGeneration", "status")
    if generation is not None and observed is not None and observed != generation:
        kind = obj.get("kind", "Resource")
        return Result(
            Status.IN_PROGRESS,
            f"{kind} generation is {generation}, but latest observed generation is {observed}",
        )

    conditions = _conditions(status)
    for cond in conditions:
        if cond["status"] != "True":
            continue
        if cond["type"] == "Reconciling":
            return Result(Status.IN_PROGRESS, cond["message"])
        if cond["type"] == "Stalled":
            return Result(Status.FAILED, cond["message"])

    for cond in conditions:
        if cond["type"] != "Ready":
            continue
        if cond["status"] == "True":
            return Result(Status.CURRENT, "Resource is Ready")
        if cond["status"] in ("False", "Unknown"):
            return Result(Status.IN_PROGRESS, cond["message"])

    return Result(Status.CURRENT, "Resource is current")


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Malformed(f"{key} is not an object: {value!r}")
    return value


def _integer(parent: Mapping[str, Any], key: str, where: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{where}.{key} is not an integer: {value!r}")
    return value


def _conditions(status: Mapping[str, Any]) -> list[dict[str, str]]:
    """The string fields of each condition; absent ones read as empty."""
    raw = status.get("conditions")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Malformed(f"status.conditions is not a list: {raw!r}")
    out = []
    for index, cond in enumerate(raw):
        if not isinstance(cond, Mapping):
            raise _Malformed(f"status.conditions[{index}] is not an object: {cond!r}")
        fields = {}
        for name in ("type", "status", "reason", "message"):
            value = cond.get(name)
            if value is not None and not isinstance(value, str):
                raise _Malformed(f"status.conditions[{index}].{name} is not a string: {value!r}")
            fields[name] = value or ""
        out.append(fields)
    return out
