"""The HPA scales a ModelDeployment on the real CPU its pods burn (metrics-server reads
the kubelet), up under load through the Service and back down when the load stops."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from e2e.real.conftest import (
    IMAGE,
    ON_REAL_NODE,
    TRAIN_COMMAND,
    ModelVolume,
    reachable,
    record,
    service_url,
)
from tests.kubetest import Cluster, wait_for

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 20
LOAD_SECONDS_MAX = 180


@pytest.mark.timeout(900)
def test_hpa_scales_up_under_load_and_back_down(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    cluster.create("TrainingJob", namespace, "hpa-model", {
        "image": IMAGE, "command": TRAIN_COMMAND, "output": {"uri": "pvc://models/m"},
        "hyperparameters": {"n_estimators": "50"}, "passHyperparametersAsArgs": False,
        "scheduling": ON_REAL_NODE,
    })
    cluster.wait_phase("TrainingJob", namespace, "hpa-model", "Succeeded", 240)
    cluster.create("ModelDeployment", namespace, "busy", {
        "model": {"uri": "pvc://models/m"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 50},
        "resources": {"cpu": "100m", "memory": "256Mi"},
        "scheduling": ON_REAL_NODE,
    })

    def ready() -> bool:
        cond = cluster.condition("ModelDeployment", namespace, "busy", "Ready")
        return bool(cond and cond["status"] == "True")

    wait_for(ready, 240, "ModelDeployment busy Ready")

    def hpa_current() -> int:
        hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler("busy", namespace)
        return int(hpa.status.current_replicas or 0)

    def cpu_measured() -> bool:
        hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler("busy", namespace)
        return any(m.resource and m.resource.current.average_utilization is not None
                   for m in hpa.status.current_metrics or [])

    # metrics-server has read the pod's CPU from the kubelet: the HPA knows the usage.
    wait_for(cpu_measured, 120, "the HPA reading CPU utilization")
    assert hpa_current() == 1

    url = service_url(cluster, namespace, "busy")
    reachable(url, "busy")
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [len(ROWS), 4],
                        "data": ROWS}]}
    stop = threading.Event()
    errors: list[str] = []

    def load() -> None:
        deadline = time.monotonic() + LOAD_SECONDS_MAX
        with requests.Session() as session:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    response = session.post(f"{url}/v2/models/busy/infer", json=body,
                                            timeout=10)
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    continue
                if response.status_code != 200:
                    errors.append(response.text[:200])

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: hpa_current() > 1, LOAD_SECONDS_MAX, "the HPA scaling up")
        record("hpa_scale_up_seconds", round(time.monotonic() - started, 1))
        hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler("busy", namespace)
        usage = [m.resource.current.average_utilization for m in hpa.status.current_metrics
                 if m.resource]
        assert usage and usage[0] > 50, f"scaled up without CPU above target: {usage}"
        deployment = cluster.apps.read_namespaced_deployment("busy", namespace)
        assert deployment.spec.replicas > 1
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)
    assert not errors, errors[:3]
    stopped = time.monotonic()
    wait_for(lambda: hpa_current() == 1, 180, "the HPA scaling back down")
    record("hpa_scale_down_seconds", round(time.monotonic() - stopped, 1))
