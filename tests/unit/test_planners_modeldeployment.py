"""Each ModelDeployment planner on its own (controllers/modeldeployment_plan.py and
_tracks.py): model resolution, the split of the tracks, the children, availability and
the phase."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop import conditions as c
from kubeloop.api.modeldeployment import (
    CanaryStatus,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Promotion,
)
from kubeloop.controllers import canary
from kubeloop.controllers import modeldeployment_plan as mp
from kubeloop.controllers import modeldeployment_tracks as mt
from kubeloop.kube import KubeError

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
V1, V2 = "s3://models/v1", "s3://models/v2"


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": {"uri": V1}, **spec},
        "status": status or {},
    }


def spec_of(b: dict[str, Any]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(b["spec"])


def deployment(uri: str, replicas: int = 2, ready: int = 2) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "iris",
            "generation": 1,
            "annotations": {"kubeloop.io/model-uri": uri},
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def observed(**parts: Any) -> mt.Observed:
    base: dict[str, Any] = {
        "stable": None,
        "canary": None,
        "service": None,
        "hpa": None,
        "pods": [],
        "training_jobs": {},
    }
    return mt.Observed(**(base | parts))


def test_stable_model_keeps_serving_what_runs_while_the_model_is_unresolved() -> None:
    b = body(model={"fromTrainingJob": {"name": "t"}})
    running = observed(stable=deployment(V1))
    models = mp.stable_model(spec_of(b), ModelDeploymentStatus(), running, "ns")
    assert models.uri == V1 and models.resolution.uri is None
    assert models.resolution.reason == c.TRAINING_JOB_NOT_FOUND
    done = {"status": {"phase": "Succeeded", "modelUri": V2}}
    models = mp.stable_model(
        spec_of(b), ModelDeploymentStatus(), observed(training_jobs={"t": done}), "ns"
    )
    assert models.uri == V2 and models.resolution.training_job == "t"


def test_a_promotion_stands_in_for_spec_model_until_it_changes() -> None:
    prev = ModelDeploymentStatus(promotion=Promotion(uri=V2, replaces=V1, time="t"))
    models = mp.stable_model(spec_of(body()), prev, observed(), "ns")
    assert models.uri == V2 and models.promotion is not None
    moved_on = body(model={"uri": "s3://models/v3"})
    assert mp.stable_model(spec_of(moved_on), prev, observed(), "ns").promotion is None


def test_split_shares_replicas_between_the_tracks() -> None:
    spec = spec_of(body(replicas=4))
    decision = canary.Decision(CanaryStatus(), share=25)
    parts = mt.split(spec, decision, 0)
    assert (parts.stable, parts.canary, parts.status_replicas) == (3, 1, 3)
    assert mt.split(spec, None, 0) == mt.Split(None, 4, 0, 4)
    scaled = spec_of(body(autoscaling={"minReplicas": 2, "maxReplicas": 6}))
    parts = mt.split(scaled, decision, 4)
    assert parts.stable is None and parts.status_replicas == 4 and parts.canary >= 1


def test_canary_report_counts_ready_pods_and_the_actual_share() -> None:
    state = CanaryStatus(state=canary.AVAILABLE, model_uri=V2)
    cond = c.Cond(c.CANARY_AVAILABLE, True, c.CANARY_AVAILABLE_REASON, "")
    decision = canary.Decision(state, share=25, cond=cond)
    world = observed(stable=deployment(V1, 3, 3), canary=deployment(V2, 1, 1))
    status, reported = mt.canary_report(decision, mt.Split(25, 3, 1, 3), world)
    assert status is not None and (status.replicas, status.ready_replicas) == (1, 1)
    assert status.actual_traffic_percent == 25
    assert reported is not None and "serves 25% of traffic (1 of 4 ready pods)" in reported.message
    assert mt.canary_report(None, mt.Split(None, 2, 0, 2), world) == (None, None)


def test_deployments_render_the_tracks_and_remove_a_canary_that_went() -> None:
    b = body(replicas=2)
    apply, gone = mp.deployments(
        spec_of(b), b, V1, None, mt.Split(None, 2, 0, 2), observed(), "img"
    )
    assert [(c.obj["metadata"]["name"], c.store_kind) for c in apply] == [("iris", mt.DEPLOYMENT)]
    assert gone == []
    left = observed(canary=deployment(V2))
    _, gone = mp.deployments(spec_of(b), b, V1, None, mt.Split(None, 2, 0, 2), left, "img")
    assert [(d.kind, d.name) for d in gone] == [("Deployment", "iris-canary")]
    # No model known yet: nothing to serve, never a Deployment of a missing model.
    apply, _ = mp.deployments(spec_of(b), b, None, None, mt.Split(None, 2, 0, 2), observed(), "img")
    assert apply == []


def test_the_route_is_applied_apart_and_removed_after_a_restart_too() -> None:
    b = body(
        route={"gateway": {"name": "web"}}, canary={"model": {"uri": V2}, "trafficPercent": 10}
    )
    services, route, gone, routed = mp.service_and_route(spec_of(b), b, 10, observed())
    assert [s.obj["metadata"]["name"] for s in services] == ["iris", "iris-stable", "iris-canary"]
    assert route is not None and route.store_kind == mt.ROUTE and route.on_failure is not None
    assert routed is not None and routed.status and "iris-canary 10" in routed.message
    failed = route.on_failure(KubeError(404, "NotFound", "the server could not find it"))
    assert (failed.type, failed.status, failed.reason) == (c.ROUTED, False, c.ROUTE_FAILED)
    assert "the Gateway API is not installed" in failed.message
    # spec.route removed: the route this operator applied goes, even when only the
    # status remembers it (the store is empty after a restart).
    plain = body({"conditions": [{"type": "Routed", "status": "True", "reason": "RouteApplied"}]})
    _, route, gone, routed = mp.service_and_route(spec_of(plain), plain, None, observed())
    assert route is None and routed is None
    assert [(d.kind, d.name, d.forget) for d in gone] == [("HTTPRoute", "iris", mt.ROUTE)]
    assert mp.service_and_route(spec_of(body()), body(), None, observed())[2] == []


def test_the_routes_weight_is_what_the_ready_canary_pods_carry() -> None:
    assert mp.route_weight(None, 20) == 20
    assert mp.route_weight(canary.Decision(None, share=20), 20) == 20
    assert mp.route_weight(canary.Decision(None, share=50, route_share=20), 50) == 20


def test_autoscaler_applied_with_autoscaling_and_deleted_without() -> None:
    scaled = body(autoscaling={"minReplicas": 1, "maxReplicas": 3})
    apply, gone = mp.autoscaler(spec_of(scaled), scaled, observed())
    assert [a.obj["kind"] for a in apply] == ["HorizontalPodAutoscaler"] and gone == []
    apply, gone = mp.autoscaler(spec_of(body()), body(), observed(hpa={"metadata": {}}))
    assert apply == [] and [d.kind for d in gone] == ["HorizontalPodAutoscaler"]
    assert mp.autoscaler(spec_of(body()), body(), observed()) == ([], [])


def test_availability_counts_the_canary_only_while_it_takes_traffic() -> None:
    cond, crashing = mt.availability(observed(), None)
    assert cond.reason == c.MINIMUM_REPLICAS_UNAVAILABLE and crashing is None
    world = observed(stable=deployment(V1, 2, 0), canary=deployment(V2, 1, 1))
    assert mt.availability(world, None)[0].status is False
    cond, _ = mt.availability(world, 50)
    assert cond.status and cond.message == "1 replicas available"


def test_phase_from_resolution_availability_and_rollout() -> None:
    models = mp.Models(mp.resolve(spec_of(body()).model, "ns", {}), None, V1)
    up = c.Cond(c.AVAILABLE, True, c.MINIMUM_REPLICAS_AVAILABLE, "2 replicas available")
    assert mp.phase(models, up, None, True, None, None, None)[0] == "Ready"
    name, _, conds = mp.phase(models, up, None, False, None, None, None)
    assert name == "Progressing" and conds[-1].type == c.RECONCILING
    crash = c.Cond(c.AVAILABLE, False, c.PODS_CRASHING, "pod x: CrashLoopBackOff")
    name, message, conds = mp.phase(models, crash, "pod x", True, None, None, None)
    assert name == "Failed" and conds[-1].type == c.STALLED
    assert message.startswith("Available: pod x")
    failed_job = {"t": {"status": {"phase": "Failed", "message": "exit 1"}}}
    gone = mp.Models(
        mp.resolve(spec_of(body(model={"fromTrainingJob": {"name": "t"}})).model, "ns", failed_job),
        None,
        None,
    )
    down = c.Cond(c.AVAILABLE, False, c.MINIMUM_REPLICAS_UNAVAILABLE, "no Deployment yet")
    assert mp.phase(gone, down, None, False, None, None, None)[0] == "Failed"
    rolled_back = c.Cond(c.CANARY_AVAILABLE, False, c.CANARY_ROLLED_BACK, "failed step 1")
    _, message, _ = mp.phase(models, up, None, True, None, None, rolled_back)
    assert message == "CanaryRolledBack: failed step 1"
