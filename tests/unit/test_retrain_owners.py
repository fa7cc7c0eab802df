"""The retrain loop's readings that decide whose objects are whose and what is final:
a promotion refused or only failed for now, where the evaluation pod goes, which
retrain names a monitor may use, and why an evaluation gave no verdict."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.controllers import retrain
from kubeloop.controllers.common import Ctx, OperatorConfig
from kubeloop.controllers.retrain_verdict import no_verdict
from kubeloop.controllers.runtime import Store, WorkQueue
from kubeloop.kube import KubeError

MONITOR = {"kind": "DriftMonitor", "metadata": {"name": "m", "namespace": "ns", "uid": "u-new"}}


@pytest.mark.parametrize(
    ("status", "message", "final"),
    [
        (0, "Cannot connect to host", False),
        (500, 'failed calling webhook "x": connect: connection refused', False),
        (503, "the server is currently unable to handle the request", False),
        (504, "timeout", False),
        (429, "too many requests", False),
        (409, "conflict", False),
        (422, "spec.model.uri: Invalid value", True),
        (400, "bad request", True),
        (500, "failed to create typed patch object (x): .spec.y: field not declared", True),
        (403, "forbidden", True),
        (404, "not found", True),
    ],
)
def test_only_a_refusal_ends_a_promotion(status: int, message: str, final: bool) -> None:
    assert retrain.promotion_refused(KubeError(status, "Reason", message)) is final


def ctx_with(store: Store) -> Ctx:
    return Ctx(kube=None, store=store, queue=WorkQueue({}), config=OperatorConfig())  # type: ignore[arg-type]


def owned(kind: str, name: str, uid: str | None, **extra: Any) -> dict[str, Any]:
    refs = [{"kind": "DriftMonitor", "name": "m", "uid": uid}] if uid else []
    meta = {"name": name, "namespace": "ns", "uid": f"{name}-uid", "ownerReferences": refs}
    return {"kind": kind, "metadata": meta, **extra}


def test_a_monitor_takes_only_what_it_owns_by_uid() -> None:
    store = Store()
    ctx = ctx_with(store)
    assert retrain.name_taken(ctx, MONITOR, "m-retrain-1") is None
    # The old monitor's retrain, not yet garbage-collected, holds the name.
    store.put(retrain.TRAINING_JOB, owned("TrainingJob", "m-retrain-1", "u-old"))
    assert retrain.name_taken(ctx, MONITOR, "m-retrain-1") == "TrainingJob m-retrain-1"
    assert retrain.mine(store.get(retrain.TRAINING_JOB, "ns", "m-retrain-1"), MONITOR) is None
    # Ours: not taken.
    store.put(retrain.TRAINING_JOB, owned("TrainingJob", "m-retrain-2", "u-new"))
    assert retrain.name_taken(ctx, MONITOR, "m-retrain-2") is None
    assert retrain.mine(store.get(retrain.TRAINING_JOB, "ns", "m-retrain-2"), MONITOR)
    # A Job of an earlier TrainingJob of that name, the TrainingJob itself gone.
    store.put(retrain.TJ_JOB, owned("Job", "m-retrain-3-r0", "tj-old"), owner="m-retrain-3")
    assert "Job m-retrain-3-r0" in (retrain.name_taken(ctx, MONITOR, "m-retrain-3") or "")
    # Another's evaluation Job of the name.
    store.put(retrain.EVAL_JOB, owned("Job", "m-retrain-4-eval", "u-old"), owner="m")
    assert retrain.name_taken(ctx, MONITOR, "m-retrain-4") == "evaluation Job m-retrain-4-eval"


def _spec(**template: Any) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(
        {
            "modelDeployment": "md",
            "onDrift": {"retrain": {"template": {"image": "i", **template}}},
        }
    )


TEMPLATE_SPEC = {
    "nodeSelector": {"pool": "train"},
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "priorityClassName": "batch",
}


def test_the_evaluation_is_placed_like_the_retrain() -> None:
    store = Store()
    ctx = ctx_with(store)
    spec = _spec(compute="train", scheduling={"nodeSelector": {"zone": "a"}})
    # No template known: the retrain template's own scheduling.
    own = retrain.evaluation_scheduling(ctx, spec, None)
    assert own is not None and own.node_selector == {"zone": "a"}
    store.put(
        "ComputeTemplate",
        {"metadata": {"name": "train", "namespace": ""}, "spec": TEMPLATE_SPEC},
    )
    live = retrain.evaluation_scheduling(ctx, spec, None)
    assert live is not None
    assert live.node_selector == {"zone": "a", "pool": "train"}
    assert [t.key for t in live.tolerations] == ["dedicated"]
    assert live.priority_class_name == "batch"
    # The run recorded its template at its start: that one, not the live one.
    recorded = {"name": "train", "spec": {"nodeSelector": {"pool": "old"}}}
    tj = {"status": {"compute": recorded}}
    kept = retrain.evaluation_scheduling(ctx, spec, tj)
    assert kept is not None and kept.node_selector == {"zone": "a", "pool": "old"}
    assert retrain.evaluation_scheduling(ctx, _spec(), None) is None
    assert (
        retrain.evaluation_scheduling(
            ctx, DriftMonitorSpec.model_validate({"modelDeployment": "md"}), None
        )
        is None
    )


def test_no_verdict_says_which_pod_where_and_how_it_ended() -> None:
    complete = {"type": "Complete", "status": "True"}
    pod = {
        "metadata": {"name": "m-retrain-1-eval-abcde"},
        "spec": {"nodeName": "cpu-node-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "evaluate",
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }
            ]
        },
    }
    said = no_verdict(complete, pod)
    assert "without a verdict" in said
    assert "pod m-retrain-1-eval-abcde on node cpu-node-1: exit code 0 (Completed)" in said
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "late"}
    pending = {"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}}
    assert no_verdict(failed, pending) == "DeadlineExceeded: late; pod p: it never ran"
    assert no_verdict(failed, None) == "DeadlineExceeded: late"
