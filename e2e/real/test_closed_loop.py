"""The closed loop, for real. Under GitOps: the ModelDeployment and the DriftMonitor
are applied as Flux's kustomize-controller applies Git's manifests (server-side, forced,
field manager `kustomize-controller`). Traffic through the Service, the data changes,
drift is measured from the serving pods, a TrainingJob retrains in a real pod on the new
data, the model is promoted (`promoteWith: Annotation`: Git's spec unchanged) and rolled
out, and new pods serve the new model; Git's next sync keeps it serving; a commit of
another model in Git takes over. Clients' answers through the Service say which.

On quality (docs/quality.md): a monitor with `spec.performance` reads the labels clients
post to the Service's feedback route; a harmless input shift with the labels still
agreeing is reported and retrains nothing, labels that start disagreeing while the
inputs stay the same (concept drift) retrain on the new labels, the evaluation gate
scores both models on the labelled rows the pods kept, and the retrain that wins on
them serves."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
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
    served,
    service_url,
    write_iris_csv,
)
from kubeloop.modeldir import load_model
from tests.kubetest import Cluster, stays, wait_for

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


QUALITY, WATCH = "iris-quality", "iris-quality-watch"
QUALITY_RETRAIN = f"{WATCH}-retrain-1"
LABELLED, UNLABELLED = 90, 210
SPECIES = load_iris().target_names


def new_concept(labels: np.ndarray) -> np.ndarray:
    """The world after the concept drift: each species is now called the next one
    (setosa -> versicolor -> virginica -> setosa), the flowers unchanged."""
    return (labels + 1) % 3


def write_concept_csv(path: Path) -> None:
    """What the data pipeline holds once the labels moved: plain iris, new labels."""
    iris = load_iris()
    lines = [",".join([*iris.feature_names, "species"])]
    lines += [",".join([*(repr(float(v)) for v in row), str(SPECIES[t])])
              for row, t in zip(iris.data, new_concept(iris.target), strict=True)]
    path.write_text("\n".join(lines) + "\n")


def labelled_traffic(
    url: str, count: int, seed: int, *, shift_sepal_length: float = 0.0,
    concept_drift: bool = False, with_inputs: bool = False,
) -> None:
    """`count` iris flowers through the Service, then their true labels sent back to
    the feedback route (with the answer and the version that gave it, as a client keeps
    them), then UNLABELLED more flowers: the monitor judges a window once `minSamples`
    (200) inputs arrived, and the labels must be in it by then. What the window before
    left over (at most 300 - 200) and `count` stay below 200, so the labels are posted
    before the window can be judged."""
    iris = load_iris()
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(iris.data), count + UNLABELLED)
    rows = iris.data[picked].copy()
    rows[:, 0] += shift_sepal_length * iris.data[:, 0].std()
    truth = new_concept(iris.target[picked]) if concept_drift else iris.target[picked]
    records: list[dict[str, Any]] = []
    for start in range(0, count, 50):
        answer = infer(url, QUALITY, rows[start:min(start + 50, count)].tolist())
        predictions = next(o["data"] for o in answer["outputs"] if o["name"] == "predict")
        for offset, prediction in enumerate(predictions):
            record_ = {"label": str(SPECIES[truth[start + offset]]), "prediction": prediction,
                       "model_version": answer["model_version"]}
            if with_inputs:
                record_["inputs"] = rows[start + offset].tolist()
            records.append(record_)
    got = requests.post(f"{url}/v2/models/{QUALITY}/feedback", json={"records": records},
                        timeout=10)
    assert got.status_code == 200 and got.json()["counted"] == count, got.text
    send_rows = rows[count:].tolist()
    for start in range(0, len(send_rows), 50):
        infer(url, QUALITY, send_rows[start:start + 50])


@pytest.mark.timeout(600)
def test_quality_drop_retrains_and_a_harmless_shift_does_not(
    cluster: Cluster, namespace: str, volume: ModelVolume, first_model: str
) -> None:
    write_concept_csv(volume.path / "data" / "concept.csv")
    cluster.create("ModelDeployment", namespace, QUALITY, {
        "model": {"uri": first_model}, "replicas": 2,
        "resources": {"cpu": "100m", "memory": "256Mi"}, "scheduling": ON_REAL_NODE,
    })
    cluster.wait_phase("ModelDeployment", namespace, QUALITY, "Ready", 240)
    url = service_url(cluster, namespace, QUALITY)
    reachable(url, QUALITY)
    cluster.create("DriftMonitor", namespace, WATCH, {
        "modelDeployment": QUALITY, "method": "psi", "threshold": 0.2, "interval": "3s",
        "minSamples": 200,
        "performance": {"metric": "accuracy", "source": "labels", "minimum": 0.8,
                        "minLabels": 50},
        "onDrift": {"promote": True, "retrain": {
            "cooldown": "1h", "template": {
                "image": IMAGE, "command": TRAIN_COMMAND,
                "dataset": {"uri": "pvc://models/data/concept.csv"},
                "output": {"uri": "pvc://models/{trainingJob}"},
                "scheduling": ON_REAL_NODE,
            }},
            "evaluate": {"metric": "accuracy", "live": {"mode": "Instead", "minRows": 50}},
        },
    })
    wait_for(lambda: cluster.status("DriftMonitor", namespace, WATCH).get("window"), 120,
             "the monitor's baseline, read from the pods")

    def condition(ctype: str, state: str) -> dict[str, Any] | None:
        cond = cluster.condition("DriftMonitor", namespace, WATCH, ctype)
        return cond if cond and cond["status"] == state else None

    def retrains() -> list[str]:
        jobs = cluster.custom.list_namespaced_custom_object(
            "kubeloop.io", "v1alpha1", namespace, "trainingjobs",
            label_selector=f"kubeloop.io/drift-monitor={WATCH}")["items"]
        return [j["metadata"]["name"] for j in jobs]

    # A harmless shift: sepal length moves by 2 standard deviations, a feature the model
    # hardly uses; the labels (the flowers' species) still agree with its answers.
    labelled_traffic(url, LABELLED, seed=11, shift_sepal_length=2.0)
    drift = wait_for(lambda: condition("InputDrift", "True"), 90, "the input shift reported")
    assert drift["reason"] == "DriftDetected", drift
    held = cluster.condition("DriftMonitor", namespace, WATCH, "PerformanceDegraded")
    assert held and (held["status"], held["reason"]) == ("False", "QualityHeld"), held
    status = cluster.status("DriftMonitor", namespace, WATCH)
    assert status["performance"]["labels"] == LABELLED, status["performance"]
    assert status["performance"]["realised"] >= 0.9, status["performance"]
    assert "reported only" in status["message"], status["message"]
    # Over the window and the checks after it (every 3 s), nothing retrains.
    stays(lambda: not retrains(), 12, "no retrain for a harmless shift")
    assert cluster.status("DriftMonitor", namespace, WATCH)["retrainCount"] == 0
    # The inputs come back to the reference's: a window without labels (an unknown
    # quality acts on nothing), judged before the next one starts, so that what it
    # leaves over for the next window is unshifted.
    plain = iris_rows(200, 0.0, seed=13)
    for start in range(0, len(plain), 50):
        infer(url, QUALITY, plain[start:start + 50])
    wait_for(lambda: (d := cluster.condition("DriftMonitor", namespace, WATCH,
                                             "PerformanceDegraded"))
             and d["reason"] == "TooFewLabels", 60, "a window without labels judged")

    # The concept drifts: the same flowers as the reference, every label now the next
    # species. Clients send the labels with the requests' inputs.
    drifted_at = time.monotonic()
    labelled_traffic(url, LABELLED, seed=12, concept_drift=True, with_inputs=True)
    dropped = wait_for(lambda: condition("PerformanceDegraded", "True"), 90,
                       "the quality drop judged")
    record("quality_drop_detected_seconds", round(time.monotonic() - drifted_at, 1))
    assert dropped["reason"] == "QualityDropped", dropped
    performance = cluster.status("DriftMonitor", namespace, WATCH)["performance"]
    assert performance["labels"] == LABELLED and performance["realised"] <= 0.1, performance
    assert condition("InputDrift", "False"), "the inputs look like the reference again"

    # The retrain runs on the new labels and wins on the labelled rows the pods kept.
    cluster.wait_phase("TrainingJob", namespace, QUALITY_RETRAIN, "Succeeded", 240)
    assert retrains() == [QUALITY_RETRAIN]

    def decided() -> dict[str, Any] | None:
        last = cluster.status("DriftMonitor", namespace, WATCH).get("lastRetrain") or {}
        return last if last.get("result") not in (None, "Running", "Evaluating") else None

    last = wait_for(decided, 240, "the retrain evaluated on the live labels")
    assert last["result"] == "Promoted", last
    live = last["evaluation"]["live"]
    # Every labelled row the pods kept is the new concept's (the shift's labels came
    # without inputs): all of them read, from whichever pod was sent them.
    assert live["rows"] == LABELLED and live["passed"] is True, live
    assert live["champion"] <= 0.1 and live["challenger"] >= 0.9, live
    record("quality_live_scores", {"rows": live["rows"], "champion": live["champion"],
                                   "challenger": live["challenger"]})
    new_uri = f"pvc://models/{QUALITY_RETRAIN}"
    assert last["modelUri"] == new_uri

    def rolled_out() -> bool:
        pods = pods_of(cluster, namespace, f"kubeloop.io/model-deployment={QUALITY}")
        return bool(pods) and all(
            p["metadata"]["annotations"]["kubeloop.io/model-uri"] == new_uri for p in pods
        ) and cluster.status("ModelDeployment", namespace, QUALITY).get("phase") == "Ready"

    wait_for(rolled_out, 240, "the retrained model's pods, Ready")
    record("quality_drop_to_rolled_out_seconds", round(time.monotonic() - drifted_at, 1))
    # What clients get through the Service: the new model's answers, which are the new
    # labels; the first model called the same flowers otherwise.
    iris = load_iris()
    probe = iris.data[[0, 50, 100]].tolist()
    new = load_model(volume.path / QUALITY_RETRAIN)
    wanted = tuple(int(c) for c in new_concept(iris.target[[0, 50, 100]]))
    assert tuple(int(c) for c in new.estimator.predict(np.asarray(probe))) == wanted
    old = load_model(volume.path / "iris-v1").estimator.predict(np.asarray(probe))
    assert tuple(int(c) for c in old) != wanted
    want = {(200, new.metadata.version, wanted)}
    seen: list[Any] = []

    def clients_get_the_new_model() -> bool:
        try:  # the Service's endpoints may lag the pods by a moment
            seen.append(served(url, QUALITY, probe, 10))
        except requests.RequestException as err:
            seen.append(repr(err))
        return seen[-1] == want

    try:
        wait_for(clients_get_the_new_model, 60, f"clients served {want}")
    except AssertionError as err:
        raise AssertionError(f"{err}; clients got {seen[-1]}") from None
