"""Conditions, phases and reasons, following kstatus.

kstatus: `Ready` is the summary; `Reconciling` and `Stalled` are "abnormal-true"
conditions, present with status True only while the resource is converging or stuck.
`lastTransitionTime` changes only when a condition's status flips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
# Kind-specific condition types.
SCHEDULED = "Scheduled"
MODEL_RESOLVED = "ModelResolved"
AVAILABLE = "Available"
CANARY_AVAILABLE = "CanaryAvailable"
COMPUTE_TEMPLATE = "ComputeTemplate"
DRIFTED = "Drifted"
SOURCE_READY = "SourceReady"
ROUTED = "Routed"
SHADOW_COMPARED = "ShadowCompared"

# Reasons: CamelCase constants; docs/troubleshooting.md explains each.
INVALID_SPEC = "InvalidSpec"
RECONCILED = "Reconciled"
PROGRESSING = "Progressing"
PENDING = "Pending"
QUEUED = "Queued"
SUSPENDED = "Suspended"
RUNNING = "Running"
RESTARTING = "Restarting"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
DEGRADED = "Degraded"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
UNSCHEDULABLE = "Unschedulable"
WAITING_FOR_SCHEDULER = "WaitingForScheduler"
TRAINING_JOB_NOT_FOUND = "TrainingJobNotFound"
TRAINING_JOB_NOT_SUCCEEDED = "TrainingJobNotSucceeded"
TRAINING_JOB_FAILED = "TrainingJobFailed"
RESOLVED = "Resolved"
EXPERIMENT_NOT_FOUND = "ExperimentNotFound"
NO_BEST_TRIAL = "NoBestTrial"
EXPERIMENT_FAILED = "ExperimentFailed"
TRIAL_NOT_FOUND = "TrialNotFound"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
PODS_CRASHING = "PodsCrashing"
CANARY_ROLLED_BACK = "CanaryRolledBack"
CANARY_PROGRESSING = "CanaryProgressing"
CANARY_NO_TRAFFIC = "NoTraffic"
CANARY_AVAILABLE_REASON = "CanaryAvailable"
CANARY_STARTED = "CanaryStarted"
CANARY_ANALYZING = "CanaryAnalyzing"
CANARY_HOLDING = "CanaryHolding"
CANARY_STEP_PASSED = "CanaryStepPassed"
CANARY_PAUSED = "CanaryPaused"
CANARY_RESUMED = "CanaryResumed"
CANARY_PROMOTING = "CanaryPromoting"
CANARY_PROMOTED = "CanaryPromoted"
CANARY_ABORTED = "CanaryAborted"
ROUTE_APPLIED = "RouteApplied"
ROUTE_FAILED = "RouteFailed"
SHADOW_PROGRESSING = "ShadowProgressing"
SHADOW_METRICS_UNAVAILABLE = "ShadowMetricsUnavailable"
TOO_FEW_SAMPLES = "TooFewSamples"
COMPARED = "Compared"
TARGET_NOT_FOUND = "TargetNotFound"
SOURCE_UNAVAILABLE = "SourceUnavailable"
SOURCE_INVALID = "SourceInvalid"
SOURCE_NOT_ALLOWED = "SourceNotAllowed"
REFERENCE_INVALID = "ReferenceInvalid"
REFERENCE_PENDING = "ReferencePending"
BATCH_PENDING = "BatchPending"
COLLECTING = "Collecting"
DRIFT_DETECTED = "DriftDetected"
NO_DRIFT = "NoDrift"
DRIFT_RESET = "DriftReset"
# The evaluation gate of a retrain (condition RetrainAccepted).
RETRAIN_ACCEPTED = "RetrainAccepted"
EVALUATING = "Evaluating"
EVALUATION_FAILED = "EvaluationFailed"
IMPROVED = "Improved"
NO_CHAMPION = "NoChampion"
NOT_BETTER = "NotBetter"
BELOW_FLOOR = "BelowFloor"
CHAMPION_CHANGED = "ChampionChanged"
EVALUATION_CANCELLED = "EvaluationCancelled"
# The shadow trial of a retrain (onDrift.shadow), in the same condition.
SHADOW_TRIAL = "ShadowTrial"
NOT_WORSE = "NotWorse"
NOT_SIGNIFICANT = "NotSignificant"
WORSE = "Worse"
TOO_FEW_LABELS = "TooFewLabels"
SHADOW_IN_USE = "ShadowInUse"
SHADOW_TRIAL_CANCELLED = "ShadowTrialCancelled"

# Experiment: why the search ended.
GOAL_REACHED = "GoalReached"
MAX_TRIALS_REACHED = "MaxTrialsReached"
TOO_MANY_FAILURES = "TooManyFailures"

# BatchPrediction.
MODEL_DEPLOYMENT_NOT_FOUND = "ModelDeploymentNotFound"
MODEL_NOT_SERVED = "ModelNotServed"
SHARD_FAILED = "ShardFailed"
INPUT_MISSING = "InputMissing"
OUTPUT_EXISTS = "OutputExists"
COLUMNS_MISSING = "ColumnsMissing"
MODEL_MISSING = "ModelMissing"

COMPUTE_TEMPLATE_NOT_FOUND = "ComputeTemplateNotFound"
COMPUTE_TEMPLATE_CONFLICT = "ComputeTemplateConflict"
COMPUTE_TEMPLATE_CHANGED = "TemplateChanged"
COMPUTE_TEMPLATE_APPLIED = "Applied"
POD_SECURITY_REFUSED = "PodSecurityRefused"
COUNTED = "Counted"

MAX_MESSAGE = 1024


def truncate(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


@dataclass(frozen=True)
class Cond:
    """A condition as computed by a reconcile, before timestamps are attached."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_str(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def merge_conditions(
    previous: Iterable[dict[str, Any]],
    computed: Iterable[Cond],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """The full new list: computed conditions, keeping lastTransitionTime where the
    status did not flip. Conditions not computed this time are dropped."""
    old = {c.get("type"): c for c in previous}
    result = []
    for cond in computed:
        before = old.get(cond.type)
        status = cond.status_str
        transition = now
        if (
            before is not None
            and before.get("status") == status
            and before.get("lastTransitionTime")
        ):
            transition = before["lastTransitionTime"]
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": truncate(cond.message),
            "lastTransitionTime": transition,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        result.append(entry)
    return result


def kstatus(
    ready: Cond, reconciling: Cond | None = None, stalled: Cond | None = None
) -> list[Cond]:
    """Ready plus the abnormal-true conditions, present only when True."""
    conds = [ready]
    if reconciling is not None:
        conds.append(reconciling)
    if stalled is not None:
        conds.append(stalled)
    return conds


def ready_from(parts: Iterable[Cond], ready_reason: str, ready_message: str) -> Cond:
    """Ready is the AND of the named sub-conditions; False names the first failing one."""
    for part in parts:
        if part.status is not True:
            return Cond(READY, False, part.reason, f"{part.type}: {part.message}")
    return Cond(READY, True, ready_reason, ready_message)
