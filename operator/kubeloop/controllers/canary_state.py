"""The canary's states, what `canary.decide()` reads (Inputs) and returns (Decision),
and the readings of them that other modules share."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import (
    Canary,
    CanaryAnalysis,
    CanaryStatus,
    ModelDeploymentStatus,
    Promotion,
)
from kubeloop.canary.measure import Measured
from kubeloop.controllers.k8sread import rolled_out
from kubeloop.names import MODEL_URI_ANNOTATION

# Canary states (status.canary.state).
WAITING = "Waiting"
PROGRESSING = "Progressing"
AVAILABLE = "Available"
IDLE = "Idle"
ANALYZING = "Analyzing"
HOLDING = "Holding"
PAUSED = "Paused"
PROMOTING = "Promoting"
PROMOTED = "Promoted"
ROLLED_BACK = "RolledBack"
ABORTED = "Aborted"

# States in which a window of live metrics is open and judged.
JUDGED = frozenset({ANALYZING, HOLDING})
# States in which the canary analysis is still under way (the resource is Reconciling).
UNDER_WAY = frozenset({PROGRESSING, ANALYZING, HOLDING, PAUSED, PROMOTING})

Event = tuple[str, str, str]


@dataclass
class World:
    """What the cluster shows of the two tracks."""

    stable: dict[str, Any] | None
    canary: dict[str, Any] | None
    crash: str | None  # why the canary's pods cannot serve, if they cannot


@dataclass
class Decision:
    status: CanaryStatus | None
    share: int | None = None  # the canary's share of traffic; None: no canary pods
    render: bool = True  # keep a canary Deployment (at zero when share is None)
    cond: c.Cond | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    promotion: Promotion | None = None
    under_way: bool = False
    # The canary's weight on an HTTPRoute when it differs from `share`: while the pods of
    # a new share start, the route keeps the share they can already carry.
    route_share: int | None = -1
    # Canary replicas to keep whatever the share (a promoted canary, until the stable
    # has all its replicas).
    keep_canary: int | None = None


def serves(dep: dict[str, Any] | None, uri: str) -> bool:
    """The Deployment is rolled out with `uri`."""
    annotations = ((dep or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(MODEL_URI_ANNOTATION) == uri and rolled_out(dep)


def current_promotion(prev: ModelDeploymentStatus, model_uri: str | None) -> Promotion | None:
    """The promotion that still stands: it ends when `spec.model` changes (the user's
    word) or names the promoted model itself (nothing left to stand in for)."""
    promotion = prev.promotion
    if promotion is None or model_uri is None:
        return promotion if model_uri is None else None
    if promotion.replaces != model_uri or promotion.uri == model_uri:
        return None
    return promotion


@dataclass
class Inputs:
    canary: Canary
    uri: str
    prev: CanaryStatus
    stable_uri: str | None  # what the stable serves, promotion included
    model_uri: str | None  # what spec.model resolves to
    promotion: Promotion | None
    world: World
    measured: Measured | None
    due_in: float | None
    replicas_for: Callable[[int], int]
    now: dt.datetime
    stable_total: int = 0  # the stable's replicas once the canary is gone


def analysis_of(canary: Canary) -> CanaryAnalysis | None:
    """How the canary is judged: its own analysis, or the default one with steps."""
    if canary.analysis is not None:
        return canary.analysis
    return CanaryAnalysis() if canary.steps else None


def judging(canary: Canary | None, prev: CanaryStatus | None) -> bool:
    """Whether a window of live metrics should be open now."""
    if canary is None or prev is None or canary.paused or canary.abort:
        return False
    if analysis_of(canary) is None or not prev.model_uri:
        return False
    return prev.state in JUDGED if canary.steps else prev.state == AVAILABLE
