"""Could one worker ever fit on some node of the cluster? Pure, from node objects.

The scheduler only says "0/3 nodes are available" and keeps the pod Pending forever;
when no node could fit a worker even if empty, we say so at once, with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_SUFFIX: dict[str, int | Decimal] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
# not-ready, unreachable, unschedulable...: conditions that pass; not "never fits".
TRANSIENT_TAINT_PREFIX = "node.kubernetes.io/"
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Kubernetes quantity to a number (`500m` -> 0.5, `4Gi` -> 4294967296)."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


@dataclass(frozen=True)
class Demand:
    """What one worker needs from one node."""

    requests: dict[str, Decimal]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for tol in tolerations:
        effect = tol.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def node_misfit(demand: Demand, node: dict[str, Any]) -> str | None:
    """Why this node can never run the worker, or None if it could."""
    labels = node.get("metadata", {}).get("labels", {}) or {}
    for key, value in demand.node_selector.items():
        if labels.get(key) != value:
            return f"node selector {key}={value}"
    for taint in node.get("spec", {}).get("taints", []) or []:
        if str(taint.get("key", "")).startswith(TRANSIENT_TAINT_PREFIX):
            continue
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(
            demand.tolerations, taint
        ):
            return f"untolerated taint {taint.get('key')}"
    allocatable = node.get("status", {}).get("allocatable", {}) or {}
    for resource, amount in demand.requests.items():
        have = parse_quantity(allocatable.get(resource, "0"))
        if have < amount:
            return f"insufficient {resource}"
    return None


def _fmt(value: Decimal) -> str:
    return str(value.normalize()) if value == value.to_integral() else str(value)


def explain_never_fits(demand: Demand, nodes: list[dict[str, Any]]) -> str | None:
    """None when some node could fit one worker; else a message saying why none can."""
    if not nodes:
        return None  # No node information (or no permission): let the scheduler judge.
    misfits = {}
    for node in nodes:
        why = node_misfit(demand, node)
        if why is None:
            return None
        misfits[node.get("metadata", {}).get("name", "?")] = why
    details = []
    for resource, amount in sorted(demand.requests.items()):
        largest = max(
            parse_quantity(n.get("status", {}).get("allocatable", {}).get(resource, "0"))
            for n in nodes
        )
        if largest < amount:
            details.append(
                f"one worker needs {_fmt(amount)} {resource}, the largest node has {_fmt(largest)}"
            )
    for key, value in sorted(demand.node_selector.items()):
        if not any(
            (n.get("metadata", {}).get("labels", {}) or {}).get(key) == value for n in nodes
        ):
            details.append(f"no node has label {key}={value}")
    if not details:
        summary = "; ".join(f"{name}: {why}" for name, why in sorted(misfits.items()))
        details.append(f"no single node satisfies every constraint ({summary})")
    return f"no node in the cluster can ever fit one worker: {'; '.join(details)}"


def worker_demand(
    container_resources: dict[str, Any],
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
) -> Demand:
    requests: dict[str, Decimal] = {}
    for source in ("limits", "requests"):
        for resource, amount in (container_resources.get(source) or {}).items():
            requests[resource] = max(requests.get(resource, Decimal(0)), parse_quantity(amount))
    return Demand(requests, dict(node_selector), list(tolerations))
