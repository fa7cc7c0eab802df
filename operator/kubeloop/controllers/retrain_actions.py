"""What one step of the retrain loop reads (`Observed`) and asks for (`Actions`): the
types between controllers/retrain.py (which gathers and carries out) and the pure
controllers/retrain_step.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.api.trainingjob import Scheduling
from kubeloop.controllers.retrain_render import PROMOTER
from kubeloop.kube import KubeError

Event = tuple[str, str, str]

RUNNING = "Running"
EVALUATING = c.EVALUATING
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PROMOTED = "Promoted"
REJECTED = "Rejected"
ROLLING_OUT = "RollingOut"
ROLLED_BACK = "RolledBack"
SUPERSEDED = "Superseded"
EVALUATION_FAILED = c.EVALUATION_FAILED
SHADOWING = "Shadowing"
IN_FLIGHT = frozenset({RUNNING, EVALUATING, SHADOWING, ROLLING_OUT})
MAX_RETRAINS_KEPT = 10
# How long a finished evaluation Job's verdict may take to reach us with its pod,
# counted from the Job's own finish time (its status: no clock of this process).
VERDICT_GRACE = 10.0


@dataclass
class Observed:
    """What one step reads: the monitor, its spec, and its children by UID."""

    monitor: dict[str, Any]  # the DriftMonitor (name, namespace, uid, apiVersion)
    spec: DriftMonitorSpec
    now: dt.datetime
    image: str = ""
    # The retrain's TrainingJob when this monitor owns it; `gone`: it (or the
    # Experiment) was created and the API server says it no longer exists.
    training_job: dict[str, Any] | None = None
    gone: bool = False
    # The retrain's Experiment when it is a search and this monitor owns it.
    experiment: dict[str, Any] | None = None
    # What holds the retrain's name that this monitor does not own, if anything.
    taken: str | None = None
    # The next free retrain: its number and name, and the names stepped over.
    next_number: int = 1
    next_name: str = ""
    skipped: list[str] = field(default_factory=list)
    evaluation_job: dict[str, Any] | None = None  # ours, by UID
    evaluation_taken: bool = False  # its name is held by another's Job
    evaluation_pod: dict[str, Any] | None = None  # newest pod the Job owns, by UID
    evaluation_scheduling: Scheduling | None = None
    target: dict[str, Any] | None = None  # the ModelDeployment
    # With `evaluate.live`: the serving pods' labelled rows, for the evaluation Job.
    live_rows: list[str] = field(default_factory=list)
    wants_retrain: bool = False


@dataclass
class Create:
    """Apply a child; a refusal by the API server ends the retrain as `on_refused`
    says (returns False for an error that passes: the step is taken again)."""

    obj: dict[str, Any]
    store_kind: str
    on_refused: Callable[[KubeError], bool]


@dataclass
class Promote:
    """The merge patch of the ModelDeployment, by the promoter's field manager: the
    promotion, or a shadow trial's note set or removed."""

    name: str
    patch: dict[str, Any]
    on_refused: Callable[[KubeError], bool]
    field_manager: str = PROMOTER


@dataclass
class Actions:
    creates: list[Create] = field(default_factory=list)
    promote: Promote | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # The retrain was counted: write that before the create (a crash in between
    # creates the same name again, never a second one).
    status_first: bool = False
    started: bool = False
