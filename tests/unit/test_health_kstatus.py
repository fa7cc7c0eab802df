"""kstatus health (what Flux waits on) of every phase of every kind.

The statuses are the operator's own: TrainingJob and ModelDeployment statuses come from
their pure `plan()`, DriftMonitor statuses from its pure `judge()` and condition helpers,
all finished by `finish_status` as the reconciles do. `SAMPLES` is shared with
test_health_argocd.py, which runs the Argo CD Lua checks on them. That the operator never
writes a user's spec is checked against the real API server
(tests/integration/test_spec_ownership.py).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from kubeloop.api.crdgen import UNOBSERVED_STATUS
from kubeloop.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus, RetrainRecord
from kubeloop.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeloop.controllers import driftverdict as dm
from kubeloop.controllers import modeldeployment as md
from kubeloop.controllers import trainingjob as tj
from kubeloop.controllers.common import (
    finish_status,
    invalid_spec_status,
    owner_reference,
    parse_spec,
    rfc3339,
)
from kubeloop.drift.profile import Profile
from kubeloop.names import API_VERSION, COMPLETION_INDEX_ANNOTATION
from kubeloop.render.modeldeployment import deployment_name
from kubeloop.render.trainingjob import render_job
from tests import kstatus

Status = kstatus.Status
NS = "ml"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
STAMP = rfc3339(NOW)
IMAGE = "ghcr.io/kubeloop/kubeloop:0.1.0"
PROMETHEUS = "http://prometheus.monitoring:9090"

# Every phase each kind writes (docs: DESIGN.md, the controllers).
PHASES = {
    "TrainingJob": {
        "Pending",
        "Queued",
        "Running",
        "Restarting",
        "Succeeded",
        "Failed",
        "Suspended",
        "Invalid",
    },
    "ModelDeployment": {"Pending", "Progressing", "Ready", "Failed", "Invalid"},
    "DriftMonitor": {"Pending", "Collecting", "Healthy", "Drifted", "Degraded", "Invalid"},
}


@dataclass(frozen=True)
class Sample:
    id: str
    obj: dict[str, Any]
    kstatus: kstatus.Status
    ready_reason: str | None  # the Ready condition's reason: which state this is

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def phase(self) -> str | None:
        return (self.obj.get("status") or {}).get("phase")


def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A resource as a user applies it and the API server returns it, before any status."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def with_status(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(obj), "status": status}


def edited(obj: dict[str, Any]) -> dict[str, Any]:
    """The user changed the spec: a new generation the operator has not seen yet."""
    out = copy.deepcopy(obj)
    out["metadata"]["generation"] += 1
    return out


def deleting(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["deletionTimestamp"] = STAMP
    return out


# --- TrainingJob: plan() over observed Jobs, pods and nodes ---------------------------

TJ_SPEC = {
    "image": "ghcr.io/acme/train:1",
    "workers": 2,
    "gpu": {"count": 8, "type": "NVIDIA-H100-80GB-HBM3"},
    "maxRestarts": 1,
    "output": {"uri": "s3://models/churn/v2"},
}
GPU_NODES = [
    {
        "metadata": {
            "name": f"gpu-{i}",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}},
    }
    for i in range(2)
]


def tj_reconciled(
    obj: dict[str, Any],
    jobs: Iterable[dict[str, Any]] = (),
    pods: Iterable[dict[str, Any]] = (),
    now: dt.datetime = NOW,
) -> dict[str, Any]:
    spec, error = parse_spec(TrainingJobSpec, obj)
    if spec is None:
        return with_status(obj, invalid_spec_status(obj, TrainingJobStatus(), error, STAMP))
    observed = tj.Observed(list(jobs), list(pods), GPU_NODES, service_exists=True)
    decided = tj.plan(spec, obj, observed, now)
    return with_status(obj, finish_status(obj, decided.status, decided.conds, rfc3339(now)))


def tj_job(obj: dict[str, Any], attempt: int, **status: Any) -> dict[str, Any]:
    spec, _ = parse_spec(TrainingJobSpec, obj)
    assert spec is not None
    name = obj["metadata"]["name"]
    job = render_job(spec, name, NS, attempt, owner_reference(obj))
    job["metadata"]["uid"] = f"uid-{name}-r{attempt}"
    job["status"] = status
    return job


def tj_pod(job: dict[str, Any], index: int, phase: str, **status: Any) -> dict[str, Any]:
    job_name = job["metadata"]["name"]
    return {
        "metadata": {
            "name": f"{job_name}-{index}-x7k2p",
            "labels": {"job-name": job_name},
            "annotations": {COMPLETION_INDEX_ANNOTATION: str(index)},
            "creationTimestamp": STAMP,
        },
        "status": {"phase": phase, **status},
    }


def failed_worker(job: dict[str, Any]) -> dict[str, Any]:
    terminated = {"exitCode": 1, "reason": "Error", "message": "CUDA error: out of memory"}
    return tj_pod(
        job,
        1,
        "Failed",
        containerStatuses=[{"name": "worker", "state": {"terminated": terminated}}],
    )


def job_condition(ctype: str, reason: str) -> dict[str, Any]:
    return {"type": ctype, "status": "True", "reason": reason}


def trainingjob_samples() -> dict[str, dict[str, Any]]:
    new = resource("TrainingJob", "churn", TJ_SPEC)
    pending = tj_reconciled(new)
    r0 = tj_job(pending, 0, startTime=STAMP, active=2)
    waiting = tj_reconciled(
        pending,
        [r0],
        [
            tj_pod(
                r0,
                i,
                "Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            )
            for i in range(2)
        ],
    )
    running = tj_reconciled(pending, [r0], [tj_pod(r0, i, "Running") for i in range(2)])
    r0_failed = tj_job(
        running,
        0,
        startTime=STAMP,
        failed=1,
        conditions=[job_condition("Failed", "BackoffLimitExceeded")],
    )
    restarting = tj_reconciled(running, [r0_failed], [failed_worker(r0_failed)])
    r1_failed = tj_job(
        restarting,
        1,
        startTime=STAMP,
        failed=1,
        conditions=[job_condition("Failed", "BackoffLimitExceeded")],
    )
    failed = tj_reconciled(restarting, [r1_failed], [failed_worker(r1_failed)])
    r0_complete = tj_job(
        running,
        0,
        startTime=STAMP,
        succeeded=2,
        completionTime=STAMP,
        conditions=[job_condition("Complete", "CompletionsReached")],
    )
    succeeded = tj_reconciled(running, [r0_complete])

    two_hours_ago = NOW - dt.timedelta(hours=2)
    deadline = resource("TrainingJob", "churn-deadline", {**TJ_SPEC, "activeDeadlineSeconds": 3600})
    started = tj_reconciled(deadline, now=two_hours_ago)
    over_deadline = tj_reconciled(
        started, [tj_job(started, 0, startTime=rfc3339(two_hours_ago), active=2)]
    )
    queued = resource(
        "TrainingJob", "churn-queued", {**TJ_SPEC, "scheduling": {"queueName": "gpu"}}
    )
    too_big = resource("TrainingJob", "churn-16", {**TJ_SPEC, "gpu": {"count": 16}})
    suspended = resource("TrainingJob", "churn-later", {**TJ_SPEC, "suspend": True})
    invalid = resource("TrainingJob", "churn-bad", {**TJ_SPEC, "workers": 0})
    return {
        "Pending (creating its Job)": pending,
        "Pending (WaitingForScheduler)": waiting,
        "Pending (Unschedulable: no node can ever fit a worker)": tj_reconciled(too_big),
        "Queued (Kueue admission)": tj_reconciled(queued),
        "Running": running,
        "Restarting (gang restart after a worker failed)": restarting,
        "Succeeded": succeeded,
        "Succeeded (its Job gone after the TTL)": tj_reconciled(succeeded),
        "Failed (BackoffLimitExceeded, no restarts left)": failed,
        "Failed (DeadlineExceeded)": over_deadline,
        "Suspended": tj_reconciled(suspended),
        "Invalid (spec.workers: 0)": tj_reconciled(invalid),
        # What the API server returns before the operator's first status write: the
        # CRD's default status (crdgen.UNOBSERVED_STATUS).
        "no status yet (just created)": with_status(new, dict(UNOBSERVED_STATUS)),
        "Running, spec edited (generation not yet observed)": edited(running),
        "Running, being deleted": deleting(running),
    }


# --- ModelDeployment: plan() over observed Deployments, pods and TrainingJobs ---------


def md_reconciled(
    obj: dict[str, Any],
    training_jobs: Iterable[dict[str, Any]] = (),
    stable: dict[str, Any] | None = None,
    canary: dict[str, Any] | None = None,
    pods: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    spec, error = parse_spec(ModelDeploymentSpec, obj)
    if spec is None:
        return with_status(obj, invalid_spec_status(obj, ModelDeploymentStatus(), error, STAMP))
    observed = md.Observed(
        stable=stable,
        canary=canary,
        service=None,
        hpa=None,
        pods=list(pods),
        training_jobs={t["metadata"]["name"]: t for t in training_jobs},
    )
    decided = md.plan(spec, obj, observed, IMAGE, NOW)
    return with_status(obj, finish_status(obj, decided.status, decided.conds, STAMP))


def md_deployment(
    obj: dict[str, Any], track: str, training_jobs: Iterable[dict[str, Any]] = (), **status: Any
) -> dict[str, Any]:
    """The Deployment plan() renders for a track, as the API server reports it back."""
    spec, _ = parse_spec(ModelDeploymentSpec, obj)
    assert spec is not None
    jobs = {t["metadata"]["name"]: t for t in training_jobs}
    observed = md.Observed(None, None, None, None, [], jobs)
    decided = md.plan(spec, obj, observed, IMAGE, NOW)
    name = deployment_name(obj["metadata"]["name"], track)
    dep = next(
        a.obj
        for a in decided.apply
        if a.obj["kind"] == "Deployment" and a.obj["metadata"]["name"] == name
    )
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, **status}
    return dep


def crashing_pod(dep: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{dep['metadata']['name']}-5d9c-abcde",
            "labels": dep["spec"]["template"]["metadata"]["labels"],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "server",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "cannot load model"}},
                }
            ],
        },
    }


def unscheduled_pod(dep: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{dep['metadata']['name']}-5d9c-fghij",
            "labels": dep["spec"]["template"]["metadata"]["labels"],
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu.",
                }
            ],
        },
    }


def modeldeployment_samples(tjs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    training = tjs["Running"]
    trained = tjs["Succeeded"]
    train_failed = tjs["Failed (BackoffLimitExceeded, no restarts left)"]
    from_job = resource(
        "ModelDeployment",
        "churn",
        {
            "model": {"fromTrainingJob": {"name": "churn"}},
            "replicas": 2,
        },
    )
    rolled_out = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    half_rolled = {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    ready = md_reconciled(
        from_job, [trained], md_deployment(from_job, "stable", [trained], **rolled_out)
    )

    canary = resource(
        "ModelDeployment",
        "churn-canary",
        {
            "model": {"uri": "s3://models/churn/v1"},
            "replicas": 4,
            "canary": {
                "model": {"uri": "s3://models/churn/v2"},
                "trafficPercent": 25,
                "progressDeadlineSeconds": 60,
            },
        },
    )
    started = rfc3339(NOW - dt.timedelta(seconds=120))
    canary_late = with_status(
        canary,
        {
            "canary": {
                "modelUri": "s3://models/churn/v2",
                "state": "Progressing",
                "startTime": started,
            }
        },
    )
    # The stable Deployment as the rollback pass renders it (all 4 replicas), rolled out.
    stable4 = md_deployment(
        canary_late, "stable", replicas=4, updatedReplicas=4, readyReplicas=4, availableReplicas=4
    )
    canary_dep = md_deployment(canary, "canary", replicas=1, updatedReplicas=1)

    by_uri = resource("ModelDeployment", "churn-v1", {"model": {"uri": "s3://models/churn/v1"}})
    broken = md_deployment(by_uri, "stable", replicas=1, updatedReplicas=1)
    invalid = resource(
        "ModelDeployment",
        "churn-bad",
        {
            "model": {"uri": "s3://models/churn/v1"},
            "replicas": -1,
        },
    )
    return {
        "Pending (its TrainingJob still running)": md_reconciled(from_job, [training]),
        "Pending (TrainingJobNotFound)": md_reconciled(from_job),
        "Progressing (no replica available yet)": md_reconciled(from_job, [trained]),
        "Progressing (rolling out)": md_reconciled(
            from_job, [trained], md_deployment(from_job, "stable", [trained], **half_rolled)
        ),
        "Ready": ready,
        "Ready (canary rolled back, stable serving)": md_reconciled(
            canary_late, stable=stable4, canary=canary_dep
        ),
        "Failed (its TrainingJob failed)": md_reconciled(from_job, [train_failed]),
        "Failed (PodsCrashing)": md_reconciled(by_uri, stable=broken, pods=[crashing_pod(broken)]),
        "Progressing (WaitingForScheduler: no node fits a pod)": md_reconciled(
            by_uri, stable=broken, pods=[unscheduled_pod(broken)]
        ),
        "Invalid (spec.replicas: -1)": md_reconciled(invalid),
        "Ready, spec edited (generation not yet observed)": edited(ready),
    }


# --- DriftMonitor: the pure judge() of a check, and the reconcile's other outcomes ----

PROFILE = Profile.model_validate(
    {
        "version": 1,
        "rows": 4000,
        "features": [
            {
                "name": "tenure",
                "kind": "numeric",
                "edges": [6.0, 24.0],
                "counts": [1000, 2000, 1000],
            },
            {
                "name": "plan",
                "kind": "categorical",
                "categories": ["basic", "pro"],
                "counts": [2500, 1400, 100],
            },
        ],
    }
)
BASELINE = np.array([[100.0, 200.0, 100.0], [250.0, 140.0, 10.0]])
LIKE_REFERENCE = np.array([[250.0, 500.0, 250.0], [625.0, 350.0, 25.0]])
SHIFTED = np.array([[700.0, 250.0, 50.0], [100.0, 300.0, 600.0]])
DM_SPEC: dict[str, Any] = {
    "modelDeployment": "churn",
    "source": {
        "type": "prometheus",
        "prometheus": {"url": PROMETHEUS, "query": 'sum by (le) (x{feature="{feature}"})'},
    },
    "reference": {"configMap": {"name": "churn-reference"}},
    "minSamples": 200,
    "interval": "5m",
}
RETRAIN = {
    "retrain": {
        "template": {**TJ_SPEC, "output": {"uri": "s3://models/{trainingJob}"}},
        "cooldown": "6h",
    }
}


def dm_status(obj: dict[str, Any], status: DriftMonitorStatus, conds: list[Any]) -> dict[str, Any]:
    return with_status(obj, finish_status(obj, status, conds, STAMP))


def dm_checked(
    obj: dict[str, Any], window: np.ndarray, previous: DriftMonitorStatus | None = None
) -> dict[str, Any]:
    """A metrics-source check: the baseline scrape in status, then `window` more."""
    spec, error = parse_spec(DriftMonitorSpec, obj)
    assert spec is not None, error
    status = previous or DriftMonitorStatus()
    status.window = dm._window_from(BASELINE, PROFILE, STAMP)
    verdict = dm.judge(
        spec, status, PROFILE, dm.Scrape(BASELINE + window, cumulative=True), NOW, []
    )
    return dm_status(obj, status, verdict.conds)


def driftmonitor_samples(mds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    monitor = resource("DriftMonitor", "churn-drift", DM_SPEC)
    retraining = resource("DriftMonitor", "churn-drift-loop", {**DM_SPEC, "onDrift": RETRAIN})
    spec, _ = parse_spec(DriftMonitorSpec, monitor)
    assert spec is not None
    healthy = dm_checked(monitor, LIKE_REFERENCE)
    running = DriftMonitorStatus(
        retrains=1,
        last_retrain=RetrainRecord(
            training_job="churn-drift-loop-retrain-1", time=STAMP, result="Running"
        ),
    )

    def degraded(reason: str, message: str, stalled: bool) -> dict[str, Any]:
        status = DriftMonitorStatus()
        return dm_status(monitor, status, dm.broken(status, reason, message, stalled=stalled))

    missing = DriftMonitorStatus()
    bad = resource("DriftMonitor", "churn-drift-bad", {**DM_SPEC, "method": "bogus"})
    _, bad_message = parse_spec(DriftMonitorSpec, bad)
    return {
        "Pending (TargetNotFound)": dm_status(
            monitor, missing, dm.target_missing(missing, spec, NS)
        ),
        "Collecting (too few samples)": dm_checked(monitor, LIKE_REFERENCE / 10),
        "Healthy": healthy,
        "Drifted": dm_checked(monitor, SHIFTED),
        "Drifted (retraining)": dm_checked(retraining, SHIFTED, running),
        "Degraded (SourceUnavailable, retried every interval)": degraded(
            "SourceUnavailable", f"{PROMETHEUS}/api/v1/query: connection refused", False
        ),
        "Pending (ReferencePending: no pod serves the model yet)": dm_status(
            monitor,
            pending := DriftMonitorStatus(),
            dm.reference_pending(
                pending, "waiting for a ready pod of ModelDeployment churn that serves s3://m/1"
            ),
        ),
        "Degraded (SourceInvalid, retried every interval)": degraded(
            "SourceInvalid", f"{PROMETHEUS}/api/v1/query: not a Prometheus answer", False
        ),
        "Degraded (ReferenceInvalid)": degraded(
            "ReferenceInvalid", "ConfigMap ml/churn-reference has no key 'profile.json'", True
        ),
        "Degraded (SourceNotAllowed)": degraded(
            "SourceNotAllowed", f"source.prometheus.url {PROMETHEUS} is not allowed", True
        ),
        "Invalid (spec.method: bogus)": with_status(
            bad, invalid_spec_status(bad, DriftMonitorStatus(), bad_message, STAMP)
        ),
        "Healthy, spec edited (generation not yet observed)": edited(healthy),
    }


# --- The table: what kstatus says for each ----------------------------------------------

IP, CUR, FAIL = Status.IN_PROGRESS, Status.CURRENT, Status.FAILED
# label -> (kstatus, reason of the Ready condition)
EXPECTED: dict[str, dict[str, tuple[kstatus.Status, str | None]]] = {
    "TrainingJob": {
        "Pending (creating its Job)": (IP, "Pending"),
        "Pending (WaitingForScheduler)": (IP, "WaitingForScheduler"),
        "Pending (Unschedulable: no node can ever fit a worker)": (FAIL, "Unschedulable"),
        "Queued (Kueue admission)": (IP, "Queued"),
        "Running": (CUR, "Running"),
        "Restarting (gang restart after a worker failed)": (IP, "Restarting"),
        "Succeeded": (CUR, "Succeeded"),
        "Succeeded (its Job gone after the TTL)": (CUR, "Succeeded"),
        "Failed (BackoffLimitExceeded, no restarts left)": (FAIL, "BackoffLimitExceeded"),
        "Failed (DeadlineExceeded)": (FAIL, "DeadlineExceeded"),
        "Suspended": (CUR, "Suspended"),
        "Invalid (spec.workers: 0)": (FAIL, "InvalidSpec"),
        # kstatus would take a resource without a status as reconciled (see tests/kstatus.py),
        # so a Flux health check run before the operator's first status write would pass:
        # the CRD's default status says generation 1 is not yet observed.
        "no status yet (just created)": (IP, None),
        "Running, spec edited (generation not yet observed)": (IP, "Running"),
        "Running, being deleted": (Status.TERMINATING, "Running"),
    },
    "ModelDeployment": {
        "Pending (its TrainingJob still running)": (IP, "TrainingJobNotSucceeded"),
        "Pending (TrainingJobNotFound)": (IP, "TrainingJobNotFound"),
        "Progressing (no replica available yet)": (IP, "MinimumReplicasUnavailable"),
        "Progressing (rolling out)": (IP, "Reconciled"),
        "Ready": (CUR, "Reconciled"),
        "Ready (canary rolled back, stable serving)": (CUR, "Reconciled"),
        "Failed (its TrainingJob failed)": (FAIL, "TrainingJobFailed"),
        "Failed (PodsCrashing)": (FAIL, "PodsCrashing"),
        "Progressing (WaitingForScheduler: no node fits a pod)": (IP, "WaitingForScheduler"),
        "Invalid (spec.replicas: -1)": (FAIL, "InvalidSpec"),
        "Ready, spec edited (generation not yet observed)": (IP, "Reconciled"),
    },
    "DriftMonitor": {
        "Pending (TargetNotFound)": (IP, "TargetNotFound"),
        "Collecting (too few samples)": (CUR, "Collecting"),
        "Healthy": (CUR, "Reconciled"),
        # Drift is a verdict on the served model; the monitor itself works.
        "Drifted": (CUR, "Reconciled"),
        "Drifted (retraining)": (CUR, "Reconciled"),
        # Ready=False without Stalled: kstatus keeps waiting (Flux until spec.timeout).
        "Degraded (SourceUnavailable, retried every interval)": (IP, "SourceUnavailable"),
        "Pending (ReferencePending: no pod serves the model yet)": (IP, "ReferencePending"),
        "Degraded (SourceInvalid, retried every interval)": (IP, "SourceInvalid"),
        "Degraded (ReferenceInvalid)": (FAIL, "ReferenceInvalid"),
        "Degraded (SourceNotAllowed)": (FAIL, "SourceNotAllowed"),
        "Invalid (spec.method: bogus)": (FAIL, "InvalidSpec"),
        "Healthy, spec edited (generation not yet observed)": (IP, "Reconciled"),
    },
}


def build_samples() -> list[Sample]:
    tjs = trainingjob_samples()
    mds = modeldeployment_samples(tjs)
    dms = driftmonitor_samples(mds)
    built = {"TrainingJob": tjs, "ModelDeployment": mds, "DriftMonitor": dms}
    assert {k: set(v) for k, v in built.items()} == {k: set(v) for k, v in EXPECTED.items()}
    return [
        Sample(f"{kind} {label}", obj, *EXPECTED[kind][label])
        for kind, objs in built.items()
        for label, obj in objs.items()
    ]


SAMPLES = build_samples()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_kstatus_of_each_status_the_operator_writes(sample: Sample) -> None:
    result = kstatus.compute(sample.obj)
    assert result.status == sample.kstatus, result.message


@pytest.mark.parametrize("kind", sorted(PHASES))
def test_samples_cover_every_phase(kind: str) -> None:
    phases = {s.phase for s in SAMPLES if s.kind == kind and s.phase is not None}
    assert phases == PHASES[kind]


def conditions_of(sample: Sample) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (sample.obj.get("status") or {}).get("conditions", [])}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_each_sample_is_in_the_state_its_name_says(sample: Sample) -> None:
    label = sample.id.removeprefix(f"{sample.kind} ")
    conditions = conditions_of(sample)
    assert label.startswith(sample.phase or "no status"), sample.phase
    assert (conditions.get("Ready") or {}).get("reason") == sample.ready_reason
    # kstatus: Reconciling and Stalled are present only while True, never both.
    abnormal = [t for t in ("Reconciling", "Stalled") if t in conditions]
    assert len(abnormal) <= 1 and all(conditions[t]["status"] == "True" for t in abnormal)


def test_edge_case_samples_reach_their_edge() -> None:
    status = {s.id: s.obj.get("status") or {} for s in SAMPLES}
    assert status["TrainingJob Restarting (gang restart after a worker failed)"]["restarts"] == 1
    failed = status["TrainingJob Failed (BackoffLimitExceeded, no restarts left)"]
    assert failed["restarts"] == 1 and "CUDA error" in failed["message"]
    assert (
        "16 nvidia.com/gpu"
        in status["TrainingJob Pending (Unschedulable: no node can ever fit a worker)"]["message"]
    )
    assert status["ModelDeployment Ready"]["sourceTrainingJob"] == "churn"
    rolled_back = status["ModelDeployment Ready (canary rolled back, stable serving)"]
    assert rolled_back["canary"]["state"] == "RolledBack"
    assert status["DriftMonitor Collecting (too few samples)"]["samples"] < DM_SPEC["minSamples"]
    assert status["DriftMonitor Healthy"]["drifted"] is False
    assert status["DriftMonitor Drifted"]["drifted"] is True
    assert status["DriftMonitor Drifted (retraining)"]["lastRetrain"]["result"] == "Running"


def test_every_status_write_records_the_generation() -> None:
    for sample in SAMPLES:
        status = sample.obj.get("status")
        if status is not None and status != UNOBSERVED_STATUS:  # the operator's writes
            assert isinstance(status["observedGeneration"], int), sample.id
            assert all(
                c["observedGeneration"] == status["observedGeneration"]
                for c in status["conditions"]
            ), sample.id


# --- The generic rules, on hand-made objects ----------------------------------------------


def obj_with(status: Any = None, **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": "TrainingJob", "metadata": {"name": "t", **metadata}}
    if status is not None:
        obj["status"] = status
    return obj


def cond(ctype: str, status: str, message: str = "") -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": "R", "message": message}


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [
        (
            obj_with(None, deletionTimestamp=STAMP, generation=2),
            Status.TERMINATING,
            "Resource scheduled for deletion",
        ),
        (
            obj_with(
                {"observedGeneration": 1, "conditions": [cond("Stalled", "True")]}, generation=2
            ),
            Status.IN_PROGRESS,
            "TrainingJob generation is 2, but latest observed generation is 1",
        ),
        # Without observedGeneration the generation check is skipped.
        (
            obj_with({"conditions": [cond("Ready", "True")]}, generation=2),
            Status.CURRENT,
            "Resource is Ready",
        ),
        # The first abnormal-true condition in list order decides.
        (
            obj_with(
                {
                    "conditions": [
                        cond("Stalled", "True", "stuck"),
                        cond("Reconciling", "True", "busy"),
                    ]
                }
            ),
            Status.FAILED,
            "stuck",
        ),
        (
            obj_with(
                {
                    "conditions": [
                        cond("Reconciling", "True", "busy"),
                        cond("Stalled", "True", "stuck"),
                    ]
                }
            ),
            Status.IN_PROGRESS,
            "busy",
        ),
        (
            obj_with({"conditions": [cond("Ready", "True"), cond("Stalled", "False")]}),
            Status.CURRENT,
            "Resource is Ready",
        ),
        (
            obj_with({"conditions": [cond("Ready", "False", "not yet")]}),
            Status.IN_PROGRESS,
            "not yet",
        ),
        (
            obj_with({"conditions": [cond("Ready", "Unknown", "unsure")]}),
            Status.IN_PROGRESS,
            "unsure",
        ),
        # A Ready condition with an odd status is passed over, then the next one counts.
        (
            obj_with({"conditions": [cond("Ready", "Maybe"), cond("Ready", "False", "second")]}),
            Status.IN_PROGRESS,
            "second",
        ),
        (obj_with({"phase": "Running"}), Status.CURRENT, "Resource is current"),
        (obj_with(), Status.CURRENT, "Resource is current"),
    ],
)
def test_generic_rules(obj: dict[str, Any], expected: kstatus.Status, message: str) -> None:
    assert kstatus.compute(obj) == kstatus.Result(expected, message)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            obj_with({"observedGeneration": "1"}, generation=1),
            "status.observedGeneration is not an integer: '1'",
        ),
        (obj_with(None, generation=True), "metadata.generation is not an integer: True"),
        (obj_with({"conditions": {"Ready": "True"}}), "status.conditions is not a list"),
        (obj_with({"conditions": ["Ready"]}), "status.conditions[0] is not an object"),
        (
            obj_with({"conditions": [{"type": "Ready", "status": True}]}),
            "status.conditions[0].status is not a string: True",
        ),
        (obj_with("Ready"), "status is not an object"),
        (obj_with(None, deletionTimestamp=5), "metadata.deletionTimestamp is not a string"),
    ],
)
def test_malformed_objects_are_unknown(obj: dict[str, Any], message: str) -> None:
    result = kstatus.compute(obj)
    assert result.status == Status.UNKNOWN and result.message.startswith(message)
