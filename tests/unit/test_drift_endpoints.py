"""Which pods a DriftMonitor reads: while a ModelDeployment rolls out a new model (or
runs a canary), pods of two models serve side by side; the inputs are read from the
ready pods of the model it watches (status.activeModelUri), the others for their quality
counters only."""

from __future__ import annotations

from typing import Any

from kubeloop.api.driftmonitor import DriftMonitorSpec
from kubeloop.controllers.common import Ctx, OperatorConfig
from kubeloop.controllers.driftread import MD_POD, Endpoints, References
from kubeloop.controllers.runtime import Store, WorkQueue

NS = "ns"
OLD, NEW = "pvc://models/iris-v1", "pvc://models/iris-retrain-1"
TARGET = {
    "metadata": {"name": "iris", "namespace": NS},
    "spec": {"model": {"uri": NEW}, "runtime": {"port": 9000}},
    "status": {"activeModelUri": NEW},
}


def pod(
    name: str, ip: str | None, uri: str | None, ready: bool = True, deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if uri is not None:
        meta["annotations"] = {"kubeloop.io/model-uri": uri}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T17:00:00Z"
    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def endpoints(pods: list[dict[str, Any]], **spec: Any) -> Endpoints:
    store = Store()
    for p in pods:
        store.put(MD_POD, p, owner="iris")
    ctx = Ctx(kube=None, store=store, queue=WorkQueue({}), config=OperatorConfig())  # type: ignore[arg-type]
    monitor = DriftMonitorSpec.model_validate({"modelDeployment": "iris", **spec})
    return References().endpoints(ctx, monitor, NS, TARGET)


def test_a_rollout_reads_the_inputs_of_the_watched_models_ready_pods_only() -> None:
    got = endpoints(
        [
            pod("old-a", "10.0.0.1", OLD),
            pod("old-b", "10.0.0.2", OLD),
            pod("new-a", "10.0.0.3", NEW),
            pod("new-b", "10.0.0.4", NEW, ready=False),  # starting: serves nothing yet
            pod("new-c", None, NEW),  # no address yet
            pod("gone", "10.0.0.5", NEW, deleting=True),
            pod("custom", "10.0.0.6", None),  # says nothing of its model: counted
        ]
    )
    assert got.current == ["http://10.0.0.6:9000/metrics", "http://10.0.0.3:9000/metrics"]
    assert got.others == ["http://10.0.0.1:9000/metrics", "http://10.0.0.2:9000/metrics"]


def test_without_pods_the_service_and_a_named_url_as_before() -> None:
    assert endpoints([]) == Endpoints(["http://iris.ns.svc:9000/metrics"])
    named = endpoints([pod("new-a", "10.0.0.3", NEW)], source={"url": "http://m:1/metrics"})
    assert named == Endpoints(["http://m:1/metrics"])
