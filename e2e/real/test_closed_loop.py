"""The closed loop, for real and under GitOps: the ModelDeployment and the DriftMonitor
are applied as Flux's kustomize-controller applies Git's manifests (server-side, forced,
field manager `kustomize-controller`). Traffic through the Service, the data changes,
drift is measured from the serving pods, a TrainingJob retrains in a real pod on the new
data, the model is promoted (`promoteWith: Annotation`: Git's spec unchanged) and rolled
out, and new pods serve the new model; Git's next sync keeps it serving; a commit of
another model in Git takes over. Clients' answers through the Service say which."""

from __future__ import annotations

import shutil
import time
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_iris

from e2e.real.conftest import (
    IMAGE,
    ON_REAL_NODE,
    TRAIN_COMMAND,
    ModelVolume,
    infer,
    pods_of,
    reachable,
    record,
    service_url,
    write_iris_csv,
)
from kubeloop.modeldir import load_model
from tests.kubetest import Cluster, wait_for

SHIFT = 2.0
RETRAIN = "iris-live-drift-retrain-1"
FLUX = "kustomize-controller"  # the field manager of Flux's applies


def iris_rows(count: int, shift: float, seed: int) -> list[list[float]]:
    data = load_iris().data
    rng = np.random.default_rng(seed)
    return (data[rng.integers(0, len(data), count)] + shift * data.std(axis=0)).tolist()


def send(url: str, rows: list[list[float]], batch: int = 50) -> None:
    for start in range(0, len(rows), batch):
        infer(url, "iris-live", rows[start:start + batch])


@pytest.fixture(scope="module")
def first_model(cluster: Cluster, namespace: str, volume: ModelVolume) -> str:
    write_iris_csv(volume.path / "data" / "iris.csv", shift=0.0)
    cluster.create("TrainingJob", namespace, "iris-v1", {
        "image": IMAGE, "command": TRAIN_COMMAND,
        "dataset": {"uri": "pvc://models/data/iris.csv"},
        "output": {"uri": "pvc://models/iris-v1"},
        "scheduling": ON_REAL_NODE,
    })
    cluster.wait_phase("TrainingJob", namespace, "iris-v1", "Succeeded", 240)
    return "pvc://models/iris-v1"


@pytest.mark.timeout(900)
def test_drift_retrain_promote_rollout(
    cluster: Cluster, namespace: str, volume: ModelVolume, first_model: str
) -> None:
    def git(model: str, replicas: int = 2) -> str:
        """What the Git repository holds: the deployment and its monitor."""
        deployment = {"model": {"uri": model}, "replicas": replicas,
                      "resources": {"cpu": "100m", "memory": "256Mi"},
                      "scheduling": ON_REAL_NODE}
        monitor = {
            "modelDeployment": "iris-live",
            "method": "psi",
            "threshold": 0.2,
            "interval": "3s",
            "minSamples": 200,
            "onDrift": {"promote": True, "promoteWith": "Annotation", "retrain": {
                "cooldown": "1h", "template": {
                    "image": IMAGE, "command": TRAIN_COMMAND,
                    "dataset": {"uri": "pvc://models/data/iris.csv"},
                    "output": {"uri": "pvc://models/{trainingJob}"},
                    "scheduling": ON_REAL_NODE,
                }}},
        }
        return yaml.safe_dump_all([
            {"apiVersion": "kubeloop.io/v1alpha1", "kind": kind,
             "metadata": {"name": name, "namespace": namespace}, "spec": spec}
            for kind, name, spec in (("ModelDeployment", "iris-live", deployment),
                                     ("DriftMonitor", "iris-live-drift", monitor))])

    cluster.apply_as(FLUX, git(first_model))

    def md_ready() -> bool:
        cond = cluster.condition("ModelDeployment", namespace, "iris-live", "Ready")
        return bool(cond and cond["status"] == "True")

    wait_for(md_ready, 240, "ModelDeployment iris-live Ready")
    url = service_url(cluster, namespace, "iris-live")
    reachable(url, "iris-live")
    old_pods = {p["metadata"]["name"] for p in
                pods_of(cluster, namespace, "kubeloop.io/model-deployment=iris-live")}

    def baseline() -> dict[str, Any] | None:
        """The monitor counts from its first scrape on: its window has a baseline."""
        status = cluster.status("DriftMonitor", namespace, "iris-live-drift")
        return status.get("window")

    first_window = wait_for(baseline, 120, "the monitor's baseline, read from the pods")

    # Traffic like the training data: the monitor, scraping the pods, sees no drift.
    send(url, iris_rows(300, 0.0, seed=1))

    def judged(drifted: bool) -> dict[str, Any] | None:
        status = cluster.status("DriftMonitor", namespace, "iris-live-drift")
        return status if status.get("drifted") is drifted and status.get("samples", 0) >= 200 \
            else None

    healthy = wait_for(lambda: judged(False), 90, "a first check without drift")
    assert healthy["phase"] == "Healthy", healthy

    # The world changes: the pipeline writes new data, and traffic moves with it.
    write_iris_csv(volume.path / "data" / "iris.csv", shift=SHIFT)
    shifted_at = time.monotonic()
    send(url, iris_rows(300, SHIFT, seed=2))
    drifted = wait_for(lambda: judged(True), 90, "drift detected")
    assert any(f["drifted"] for f in drifted["features"])
    record("drift_detected_seconds", round(time.monotonic() - shifted_at, 1))

    # The retrain runs for real on the new data, and is promoted.
    retrain = cluster.wait_phase("TrainingJob", namespace, RETRAIN, "Succeeded", 240)
    new_uri = f"pvc://models/{RETRAIN}"
    assert retrain["modelUri"] == new_uri
    (trainer,) = pods_of(cluster, namespace, f"kubeloop.io/training-job={RETRAIN}")
    assert trainer["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

    def promoted() -> dict[str, Any] | None:
        status = cluster.status("DriftMonitor", namespace, "iris-live-drift")
        return status if (status.get("lastRetrain") or {}).get("result") == "Promoted" else None

    wait_for(promoted, 60, "the retrained model promoted")
    # Git's spec is untouched: the promotion is the promoter's annotation.
    assert cluster.get("ModelDeployment", namespace, "iris-live")["spec"]["model"]["uri"] == \
        first_model

    # The Deployment rolls out: every old-model pod goes, new pods serve the new model.
    def rolled_out(uri: str, old: set[str], replicas: int | None = None) -> bool:
        """Only pods of `uri`, none of `old`; with `replicas`, that many ready."""
        pods = pods_of(cluster, namespace, "kubeloop.io/model-deployment=iris-live")
        ready = [p for p in pods if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or [])]
        counted = len(ready) == replicas if replicas is not None else bool(pods)
        return counted and all(
            p["metadata"]["name"] not in old
            and p["metadata"]["annotations"]["kubeloop.io/model-uri"] == uri
            for p in pods)

    wait_for(lambda: rolled_out(new_uri, old_pods), 240, "the old model's pods replaced")
    record("drift_onset_to_old_pods_gone_seconds", round(time.monotonic() - shifted_at, 1))
    wait_for(md_ready, 60, "ModelDeployment iris-live Ready on the new model")
    status = cluster.status("ModelDeployment", namespace, "iris-live")
    assert status["activeModelUri"] == new_uri

    new_model = load_model(volume.path / RETRAIN)
    probe = iris_rows(40, SHIFT, seed=3)
    expected = new_model.estimator.predict(np.asarray(probe)).tolist()
    old = load_model(volume.path / "iris-v1").estimator.predict(np.asarray(probe)).tolist()
    assert expected != old, "the two models must answer differently for this check to mean much"
    for _ in range(4):
        assert infer(url, "iris-live", probe)["outputs"][0]["data"] == expected

    # Against the new reference (read from the new pods), shifted traffic is the norm.
    def new_reference() -> bool:
        window = baseline()
        return bool(window) and window["reference"] != first_window["reference"]

    wait_for(new_reference, 90, "a new window on the new model's reference")
    before = cluster.status("DriftMonitor", namespace, "iris-live-drift").get("lastCheckTime")
    send(url, iris_rows(300, SHIFT, seed=4))

    def healthy_again() -> dict[str, Any] | None:
        status = judged(False)
        return status if status and status.get("lastCheckTime") != before else None

    final = wait_for(healthy_again, 90, "Healthy against the new reference")
    assert final["phase"] == "Healthy" and final["retrainCount"] == 1

    # Git's next sync: its manifests forced again, one replica more (so that the
    # deployment is reconciled on Git's spec anew and a new pod loads what it serves).
    def synced(replicas: int) -> dict[str, Any] | None:
        md = cluster.get("ModelDeployment", namespace, "iris-live")
        st = md.get("status") or {}
        return st if st.get("observedGeneration") == md["metadata"]["generation"] and \
            st.get("readyReplicas") == replicas else None

    cluster.apply_as(FLUX, git(first_model, replicas=3))
    assert wait_for(lambda: synced(3), 120, "Git's sync reconciled")["activeModelUri"] == new_uri
    wait_for(lambda: rolled_out(new_uri, set(), replicas=3), 120, "3 pods of the promoted model")
    for _ in range(4):
        assert infer(url, "iris-live", probe)["outputs"][0]["data"] == expected

    # A commit of another model in Git takes over (a copy of the first: it answers as
    # the first model does, unlike the promoted one).
    shutil.copytree(volume.path / "iris-v1", volume.path / "iris-v3")
    committed = "pvc://models/iris-v3"
    promoted_pods = {p["metadata"]["name"] for p in
                     pods_of(cluster, namespace, "kubeloop.io/model-deployment=iris-live")}
    cluster.apply_as(FLUX, git(committed, replicas=3))
    wait_for(lambda: rolled_out(committed, promoted_pods, replicas=3), 240,
             "Git's committed model rolled out")
    wait_for(lambda: synced(3), 60, "the commit reconciled")
    for _ in range(4):
        assert infer(url, "iris-live", probe)["outputs"][0]["data"] == old
    history = cluster.status("ModelDeployment", namespace, "iris-live")["history"]
    assert [(h["uri"], h["changedBy"]) for h in history] == [
        (committed, "user"), (new_uri, "DriftMonitor/iris-live-drift"), (first_model, "user")]
