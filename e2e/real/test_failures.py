"""What breaks, breaks for real: a model the server cannot load crash-loops in
containerd and the resource says why, in the server's own words, as it does for a model
that cannot be fetched and for a training script that fails; a broken canary is rolled
back while the stable model keeps answering."""

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
from kubeloop.modeldir import load_model, write_manifest
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
    # It names the container and why: the kubelet's back-off, or the exit code it saw,
    # and the end of the server's log (terminationMessagePolicy FallbackToLogsOnError).
    assert ready["status"] == "False" and "container server" in ready["message"]
    assert "CrashLoopBackOff" in ready["message"] or "exit code 1" in ready["message"]
    assert "Failed to load model" in ready["message"], ready


def warning_about(cluster: Cluster, namespace: str, kind: str, name: str, reason: str,
                  timeout: float = 20) -> Any:
    """The Event the operator posts about the resource for `reason` (after its status)."""

    def posted() -> Any:
        return next((e for e in cluster.events_for(namespace, name)
                     if e.involved_object.kind == kind and e.reason == reason), None)

    return wait_for(posted, timeout, f"a {reason} Event about {kind} {name}")


def test_a_model_that_cannot_be_fetched_says_why(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    """No such directory on the claim: the fetch-model init container's own words reach
    the condition and the Event, not only its log."""
    cluster.create("ModelDeployment", namespace, "nomodel", {
        "model": {"uri": "pvc://models/flowers/v9"}, "scheduling": ON_REAL_NODE,
        "resources": {"cpu": "100m", "memory": "256Mi"},
    })
    words = "/mnt/pvc/models/flowers/v9/manifest.json: No such file or directory"

    def says_why() -> dict[str, Any] | None:
        cond = cluster.condition("ModelDeployment", namespace, "nomodel", "Ready")
        return cond if cond and cond["reason"] == "PodsCrashing" else None

    ready = wait_for(says_why, 60, "Ready False with reason PodsCrashing")
    assert "container fetch-model" in ready["message"] and words in ready["message"], ready
    event = warning_about(cluster, namespace, "ModelDeployment", "nomodel", "PodsCrashing")
    assert event.type == "Warning" and words in event.message, event.message


def test_a_failing_script_says_why_at_its_first_failure(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    """A dataset that is not there: the script's own last words are in the Event of the
    first restart (attempt 0 failed), and in the final condition."""
    cluster.create("TrainingJob", namespace, "typo", {
        "image": IMAGE, "command": TRAIN_COMMAND, "dataset": {"uri": "pvc://models/irs.csv"},
        "output": {"uri": "pvc://models/typo"}, "maxRestarts": 1, "scheduling": ON_REAL_NODE,
    })
    words = "No such file or directory: '/mnt/pvc/models/irs.csv'"
    # The worker runs first (a pod start, imports): the Event follows its failure.
    event = warning_about(cluster, namespace, "TrainingJob", "typo", "Restarting", 120)
    assert "worker 0 failed: exit code 1" in event.message and words in event.message, (
        event.message)
    assert "restarting all workers (restart 1 of 1)" in event.message
    final = cluster.wait_phase("TrainingJob", namespace, "typo", "Failed", 60)
    ready = cluster.condition("TrainingJob", namespace, "typo", "Ready")
    assert ready and ready["reason"] == "BackoffLimitExceeded" and words in ready["message"]
    assert words in final["message"]


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
