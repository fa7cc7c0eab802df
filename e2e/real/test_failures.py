"""What breaks, breaks for real: a model the server cannot load crash-loops in
containerd and the resource says why; a broken canary is rolled back while the stable
model keeps answering."""

from __future__ import annotations

import shutil
import time
from typing import Any

import numpy as np
import pytest
import requests

from e2e.real.conftest import (
    IMAGE,
    ON_REAL_NODE,
    TRAIN_COMMAND,
    ModelVolume,
    infer,
    pods_of,
    reachable,
    service_url,
)
from kubeloop.serving.fetch import write_manifest
from kubeloop.serving.model import load_model
from tests.kubetest import Cluster, stays, wait_for

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def models(cluster: Cluster, namespace: str, volume: ModelVolume) -> tuple[str, str]:
    """A good model trained in a pod, and a copy whose estimator file is garbage with a
    manifest that matches it: it fetches whole, but no server can load it."""
    cluster.create("TrainingJob", namespace, "good", {
        "image": IMAGE, "command": TRAIN_COMMAND, "output": {"uri": "pvc://models/good"},
        "hyperparameters": {"n_estimators": "20"}, "passHyperparametersAsArgs": False,
        "scheduling": ON_REAL_NODE,
    })
    cluster.wait_phase("TrainingJob", namespace, "good", "Succeeded", 240)
    shutil.copytree(volume.path / "good", volume.path / "broken")
    (volume.path / "broken" / "model.joblib").write_bytes(b"not a model\n")
    write_manifest(volume.path / "broken")
    return "pvc://models/good", "pvc://models/broken"


def test_a_model_that_cannot_load_crash_loops_and_says_why(
    cluster: Cluster, namespace: str, models: tuple[str, str]
) -> None:
    cluster.create("ModelDeployment", namespace, "unloadable", {
        "model": {"uri": models[1]}, "scheduling": ON_REAL_NODE,
        "resources": {"cpu": "100m", "memory": "256Mi"},
    })

    def crash_looping() -> tuple[str, dict[str, Any]] | None:
        for pod in pods_of(cluster, namespace, "kubeloop.io/model-deployment=unloadable"):
            for cs in pod["status"].get("containerStatuses", []):
                waiting = cs["state"].get("waiting") or {}
                if waiting.get("reason") == "CrashLoopBackOff" and cs["restartCount"] >= 1:
                    return pod["metadata"]["name"], dict(cs)
        return None

    pod_name, server = wait_for(crash_looping, 180, "the server container in CrashLoopBackOff")
    assert server["lastState"]["terminated"]["exitCode"] != 0
    # The fetch passed (the manifest matches); the server itself refused the model.
    log = cluster.kubectl("logs", "-n", namespace, pod_name, "-c", "server",
                          "--previous").stdout
    assert "Failed to load model" in log and "model.joblib" in log, log[-2000:]

    def says_why() -> dict[str, Any] | None:
        cond = cluster.condition("ModelDeployment", namespace, "unloadable", "Ready")
        return cond if cond and cond["reason"] == "PodsCrashing" else None

    ready = wait_for(says_why, 60, "Ready False with reason PodsCrashing")
    # It names the container and why: the kubelet's back-off, or the exit code it saw.
    assert ready["status"] == "False" and "container server" in ready["message"]
    assert "CrashLoopBackOff" in ready["message"] or "exit code 1" in ready["message"]


def test_a_broken_canary_is_rolled_back_and_the_stable_keeps_serving(
    cluster: Cluster, namespace: str, volume: ModelVolume, models: tuple[str, str]
) -> None:
    good, broken = models
    cluster.create("ModelDeployment", namespace, "guarded", {
        "model": {"uri": good}, "replicas": 2, "scheduling": ON_REAL_NODE,
        "resources": {"cpu": "100m", "memory": "256Mi"},
    })

    def ready() -> bool:
        cond = cluster.condition("ModelDeployment", namespace, "guarded", "Ready")
        return bool(cond and cond["status"] == "True")

    wait_for(ready, 240, "ModelDeployment guarded Ready")
    url = service_url(cluster, namespace, "guarded")
    reachable(url, "guarded")
    good_model = load_model(volume.path / "good")
    expected = good_model.estimator.predict(np.asarray(ROWS)).tolist()
    assert infer(url, "guarded", ROWS)["outputs"][0]["data"] == expected
    served = requests.get(f"{url}/v2/models/guarded", timeout=10).json()
    assert served["versions"] == [good_model.metadata.version]

    started = time.monotonic()
    cluster.patch_spec("ModelDeployment", namespace, "guarded", {
        "canary": {"model": {"uri": broken}, "trafficPercent": 50,
                   "progressDeadlineSeconds": 30}})

    crashed_canaries: set[str] = set()

    def rolled_back() -> dict[str, Any] | None:
        # While the canary crashes, every answer still comes from the stable model.
        assert infer(url, "guarded", ROWS)["outputs"][0]["data"] == expected
        for pod in pods_of(cluster, namespace, "kubeloop.io/track=canary"):
            if any(cs["restartCount"] >= 1 for cs in pod["status"].get("containerStatuses", [])):
                crashed_canaries.add(pod["metadata"]["name"])
        cond = cluster.condition("ModelDeployment", namespace, "guarded", "CanaryAvailable")
        return cond if cond and cond["reason"] == "CanaryRolledBack" else None

    cond = wait_for(rolled_back, 120, "the canary rolled back")
    assert crashed_canaries, "no canary pod was seen crashing"
    assert time.monotonic() - started >= 29  # status times have whole seconds
    assert "CrashLoopBackOff" in cond["message"] or "exit code" in cond["message"], cond
    canary = cluster.apps.read_namespaced_deployment("guarded-canary", namespace)
    assert canary.spec.replicas == 0

    def canary_pods_gone() -> bool:
        return not [p for p in pods_of(cluster, namespace, "kubeloop.io/track=canary")
                    if p["metadata"]["labels"].get("kubeloop.io/model-deployment") == "guarded"]

    wait_for(canary_pods_gone, 60, "the canary's pods gone")
    # Every answer now comes from the stable model, over a window of requests.
    stays(lambda: infer(url, "guarded", ROWS)["outputs"][0]["data"] == expected, 3,
          "the stable model answering")
