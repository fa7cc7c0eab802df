"""A shadow challenger for real: the stable and the shadow in real pods, clients through
the Service (kube-proxy), the stable's pods mirroring every answered request to the
shadow's own Service, and the operator pod comparing them from the stable's /metrics.

The shadow is the stable's model retrained with virginica relabelled versicolor where
the petals are longer than 5 cm: it disagrees on that part of the input space only.
Clients get the stable's answers alone; status.shadow shows the disagreement, and with
the late labels, McNemar's test on the same requests, both equal to a direct
computation on the two model files over the rows the clients sent.

Then the loop's gate (`onDrift.shadow`, require Better): a DriftMonitor's retrain runs
as the deployment's shadow until enough labelled requests came back; a challenger worse
than the champion on them is rejected (the shadow goes, clients keep the champion's
answers), a better one is promoted and rolled out (clients get its answers)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from scipy import stats as sp
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from e2e.real.conftest import (
    IMAGE,
    ON_REAL_NODE,
    ModelVolume,
    infer,
    pods_of,
    reachable,
    record,
    served,
    service_url,
)
from e2e.real.test_progressive import chown_tree, train
from kubeloop.modeldir import load_model, write_manifest
from tests.kubetest import Cluster, or_none, wait_for

MD = "ModelDeployment"
NAME = "iris-shadowed"
SMALL = {"cpu": "100m", "memory": "512Mi"}


def disagreeing_copy(source: Path, out: Path, version: str = "shadow",
                     also_wrong: bool = False, right: bool = False) -> Path:
    """`source`'s directory with a tree trained on iris where virginica with petals
    longer than 5 cm is labelled versicolor (scikit-learn only: the image loads it);
    `also_wrong`: and versicolor with petals shorter than 4.2 cm setosa; `right`: on
    iris as it is."""
    shutil.copytree(source, out)
    x, y = load_iris(return_X_y=True)
    if not right:
        y = np.where((y == 2) & (x[:, 2] > 5.0), 1, y)
    if also_wrong:
        y = np.where((y == 1) & (x[:, 2] < 4.2), 0, y)
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(x, y), out / "model.joblib")
    meta = json.loads((out / "model.json").read_text())
    meta["version"] = version
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_manifest(out)
    return out


@pytest.fixture(scope="module")
def models(volume: ModelVolume) -> dict[str, str]:
    disagreeing_copy(train(volume.path / "iris-v1", seed=0), volume.path / "iris-shadow")
    chown_tree(volume.path)
    return {name: f"pvc://models/{name}" for name in ("iris-v1", "iris-shadow")}


def mirroring(cluster: Cluster, namespace: str, shadow_uri: str, name: str = NAME) -> bool:
    """Ready, comparing, and the one stable pod is one that mirrors (no old one left)."""
    status = cluster.status(MD, namespace, name)
    if status.get("phase") != "Ready" or (status.get("shadow") or {}).get("state") is None:
        return False
    if status["shadow"].get("modelUri") != shadow_uri:
        return False
    pods = pods_of(cluster, namespace, f"kubeloop.io/model-deployment={name}")
    return len(pods) == 1 and all(
        p["metadata"]["annotations"].get("kubeloop.io/shadow-model-uri") == shadow_uri
        and not p["metadata"].get("deletionTimestamp")
        for p in pods
    ) and status["shadow"]["state"] in ("Comparing", "Compared")


def wait_shadow(cluster: Cluster, namespace: str, done: Callable[[dict[str, Any]], bool],
                what: str, name: str = NAME) -> dict[str, Any]:
    """status.shadow once `done` holds; else fail with it and the operator's words."""
    seen: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        seen.clear()
        seen.update(cluster.status(MD, namespace, name).get("shadow") or {})
        return dict(seen) if done(seen) else None

    try:
        return wait_for(check, 60, f"status.shadow with {what}")
    except AssertionError as err:
        log = cluster.kubectl("logs", "-n", "kubeloop-system", "deploy/kubeloop", "--tail=30",
                              check=False).stdout
        raise AssertionError(f"{err}\nstatus.shadow: {seen}\noperator log:\n{log}") from None


@pytest.mark.timeout(400)
def test_the_shadow_disagrees_on_live_traffic_unseen_by_clients(
    cluster: Cluster, namespace: str, models: dict[str, str], volume: ModelVolume
) -> None:
    cluster.create(MD, namespace, NAME, {
        "model": {"uri": models["iris-v1"]}, "replicas": 1, "scheduling": ON_REAL_NODE,
        "resources": SMALL, "runtime": {"workers": 1},
        "shadow": {"model": {"uri": models["iris-shadow"]}, "resources": SMALL,
                   "minSamples": 100},
    })
    wait_for(lambda: mirroring(cluster, namespace, models["iris-shadow"]), 240,
             "the stable mirroring to a ready shadow")
    url = service_url(cluster, namespace, NAME)
    reachable(url, NAME)
    # The copies go through the shadow's own Service: a copy sent before kube-proxy knows
    # it would fail, and the pause after a failure would drop the next ones.
    reachable(service_url(cluster, namespace, f"{NAME}-shadow"), NAME)

    iris = load_iris()
    stable = load_model(volume.path / "iris-v1")
    shadow = load_model(volume.path / "iris-shadow")
    ids, got = [], []
    for row in iris.data:
        body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                            "data": [row.tolist()]}]}
        answer = requests.post(f"{url}/v2/models/{NAME}/infer", json=body,
                               headers={"Connection": "close"}, timeout=10).json()
        assert answer["model_version"] == stable.metadata.version, answer
        ids.append(answer["id"])
        got.append(answer["outputs"][0]["data"][0])
    # The clients got the stable's answers only.
    champion = stable.estimator.predict(iris.data)
    challenger = shadow.estimator.predict(iris.data)
    assert got == champion.tolist()
    # Every copy answered by the shadow and compared (the operator reads every 15 s),
    # before the labels: a label counts once both answers are there.
    wait_shadow(cluster, namespace, lambda s: s.get("samples") == len(ids), "every answer")
    records = [{"id": i, "label": int(label), "prediction": int(p),
                "model_version": stable.metadata.version}
               for i, label, p in zip(ids, iris.target, champion, strict=True)]
    fed = requests.post(f"{url}/v2/models/{NAME}/feedback", json={"records": records},
                        timeout=10)
    assert fed.status_code == 200, fed.text
    figures = wait_shadow(
        cluster, namespace, lambda s: (s.get("labelled") or {}).get("samples") == len(ids),
        "every label")
    right_c, right_s = champion == iris.target, challenger == iris.target
    b, c = int((right_c & ~right_s).sum()), int((~right_c & right_s).sum())
    assert (champion != challenger).sum() >= 10  # the part of the space it differs on
    assert figures["state"] == "Compared"
    assert figures["mirrored"] == len(ids) and figures["dropped"] == 0
    assert figures["shadowErrorPercent"] == 0 and figures["shadowLatencyP99Ms"] > 0
    assert figures["agreement"] == round(float((champion == challenger).mean()), 6)
    labelled = figures["labelled"]
    assert (labelled["championOnlyRight"], labelled["shadowOnlyRight"]) == (b, c)
    assert labelled["test"] == "mcnemar-exact"
    assert labelled["pValue"] == pytest.approx(sp.binomtest(min(b, c), b + c, 0.5).pvalue)
    assert labelled["pValue"] < 0.05  # the worse shadow, on the same labelled requests
    record("shadow_figures", figures)
    cluster.await_events(namespace, NAME, {"ShadowCompared"}, kind=MD)
    listed = cluster.kubectl("get", "mdep", NAME, "-n", namespace).stdout
    assert f"agree {100 * figures['agreement']:.1f}% n={len(ids)}" in listed, listed


GATED, GATE = "iris-gated", "iris-gate"
# The retrain "trains" by copying the candidate the test put on the volume.
COPY = ["python", "-c", "import os, shutil; shutil.copytree("
        "os.environ['KUBELOOP_DATASET_URI'][7:], os.environ['KUBELOOP_OUTPUT_URI'][7:])"]


def _labelled_trial(cluster: Cluster, namespace: str, url: str, uri: str,
                    champion: Any) -> None:
    """The retrain `uri` on trial: once the stable mirrors to it, every iris row through
    the Service (clients get the champion's answers), then their true labels."""
    wait_for(lambda: mirroring(cluster, namespace, uri, GATED), 240,
             f"the stable mirroring to the challenger {uri}")
    reachable(service_url(cluster, namespace, f"{GATED}-shadow"), GATED)
    iris = load_iris()
    ids, got = [], []
    for row in iris.data:
        body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                            "data": [row.tolist()]}]}
        answer = requests.post(f"{url}/v2/models/{GATED}/infer", json=body,
                               headers={"Connection": "close"}, timeout=10).json()
        ids.append(answer["id"])
        got.append(answer["outputs"][0]["data"][0])
    assert got == champion.estimator.predict(iris.data).tolist()
    wait_shadow(cluster, namespace, lambda s: (s.get("samples") or 0) >= 140,
                "the answers compared", GATED)
    records = [{"id": i, "label": int(label), "prediction": int(p),
                "model_version": champion.metadata.version}
               for i, label, p in zip(ids, iris.target, got, strict=True)]
    fed = requests.post(f"{url}/v2/models/{GATED}/feedback", json={"records": records},
                        timeout=10)
    assert fed.status_code == 200, fed.text


def _retrain(cluster: Cluster, namespace: str, name: str, result: str) -> Any:
    last = cluster.status("DriftMonitor", namespace, GATE).get("lastRetrain") or {}
    return last if (last.get("trainingJob"), last.get("result")) == (name, result) else None


def _drift_until_on_trial(cluster: Cluster, namespace: str, url: str, name: str) -> None:
    """Traffic two standard deviations off the reference until the monitor has seen
    drift and its retrain `name` is on trial (each check judges the samples since the
    last one, on the pods that serve now)."""
    iris = load_iris()
    rows = (iris.data + 2.0 * iris.data.std(axis=0)).tolist()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if _retrain(cluster, namespace, name, "Shadowing"):
            return
        if not _retrain(cluster, namespace, name, "Running"):
            for start in range(0, 150, 50):
                infer(url, GATED, rows[start:start + 50])
        time.sleep(3)
    status = cluster.status("DriftMonitor", namespace, GATE)
    raise AssertionError(f"{name} not on trial: {status.get('message')}; "
                         f"lastRetrain {status.get('lastRetrain')}")


def _one_plain_pod(cluster: Cluster, namespace: str) -> bool:
    """The stable rolled back from mirroring: one ready pod, none mirroring or leaving."""
    pods = pods_of(cluster, namespace, f"kubeloop.io/model-deployment={GATED}")
    return len(pods) == 1 and all(
        "kubeloop.io/shadow-model-uri" not in p["metadata"]["annotations"]
        and not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions") or [])
        for p in pods)


@pytest.mark.timeout(600)
def test_a_gate_that_needs_the_shadow_to_win_rejects_a_worse_challenger_and_promotes_a_better(
    cluster: Cluster, namespace: str, models: dict[str, str], volume: ModelVolume
) -> None:
    started = time.monotonic()
    if or_none(cluster.get, MD, namespace, NAME):
        cluster.delete(MD, namespace, NAME)  # the scenario above: its pods free the CPU
    flawed = disagreeing_copy(volume.path / "iris-v1", volume.path / "iris-flawed", "flawed")
    worse = disagreeing_copy(volume.path / "iris-v1", volume.path / "iris-worse", "worse",
                             also_wrong=True)
    better = disagreeing_copy(volume.path / "iris-v1", volume.path / "iris-better", "better",
                              right=True)
    shutil.copytree(worse, volume.path / "candidate")
    chown_tree(volume.path)
    cluster.create(MD, namespace, GATED, {
        "model": {"uri": "pvc://models/iris-flawed"}, "replicas": 1,
        "scheduling": ON_REAL_NODE, "resources": SMALL, "runtime": {"workers": 1},
    })
    cluster.create("DriftMonitor", namespace, GATE, {
        "modelDeployment": GATED, "method": "psi", "threshold": 0.2, "interval": "3s",
        "minSamples": 200,
        "onDrift": {
            "promote": True,
            "retrain": {"cooldown": "1s", "template": {
                "image": IMAGE, "command": COPY, "scheduling": ON_REAL_NODE,
                "dataset": {"uri": "pvc://models/candidate"},
                "output": {"uri": "pvc://models/{trainingJob}"}}},
            "shadow": {"minLabelled": 140, "require": "Better", "timeout": "5m"},
        },
    })
    cluster.wait_phase(MD, namespace, GATED, "Ready", 240)
    url = service_url(cluster, namespace, GATED)
    reachable(url, GATED)
    wait_for(lambda: cluster.status("DriftMonitor", namespace, GATE).get("window"), 120,
             "the monitor's baseline")
    champion = load_model(flawed)

    # The first retrain is worse than the champion on the labelled requests: rejected.
    first, second = f"{GATE}-retrain-1", f"{GATE}-retrain-2"
    _drift_until_on_trial(cluster, namespace, url, first)
    shutil.rmtree(volume.path / "candidate")  # retrain-1 copied it: the next one is better
    shutil.copytree(better, volume.path / "candidate")
    chown_tree(volume.path / "candidate")
    assert "shadow" not in cluster.get(MD, namespace, GATED)["spec"]
    _labelled_trial(cluster, namespace, url, f"pvc://models/{first}", champion)
    rejected = wait_for(lambda: _retrain(cluster, namespace, first, "Rejected"), 60,
                        "the worse challenger rejected")
    trial = rejected["shadow"]
    assert trial["reason"] == "NotBetter" and trial["challenger"] < trial["champion"], trial
    wait_for(lambda: not pods_of(cluster, namespace, f"kubeloop.io/shadow-of={GATED}"), 120,
             "the rejected shadow's pods gone")
    wait_for(lambda: _one_plain_pod(cluster, namespace), 120, "the stable no more mirroring")
    reachable(url, GATED)
    assert cluster.status(MD, namespace, GATED)["activeModelUri"] == "pvc://models/iris-flawed"
    assert served(url, GATED, load_iris().data.tolist(), 4) == {
        (200, "flawed", tuple(champion.estimator.predict(load_iris().data).tolist()))}
    record("shadow_gate_rejected_seconds", round(time.monotonic() - started, 1))

    # The second retrain is better: promoted, and clients get its answers.
    _drift_until_on_trial(cluster, namespace, url, second)
    cluster.patch_spec("DriftMonitor", namespace, GATE,
                       {"onDrift": {"retrain": {"cooldown": "1h"}}})
    _labelled_trial(cluster, namespace, url, f"pvc://models/{second}", champion)
    promoted = wait_for(lambda: _retrain(cluster, namespace, second, "Promoted"), 60,
                        "the better challenger promoted")
    assert promoted["shadow"]["reason"] == "Improved", promoted
    assert promoted["shadow"]["pValue"] < 0.05
    answers = load_model(better).estimator.predict(load_iris().data)
    assert (answers != champion.estimator.predict(load_iris().data)).sum() >= 30
    new_answers = {(200, "better", tuple(int(a) for a in answers))}
    wait_for(lambda: served(url, GATED, load_iris().data.tolist(), 4) == new_answers, 240,
             "clients answered by the promoted model")
    md = cluster.get(MD, namespace, GATED)
    assert md["spec"]["model"]["uri"] == f"pvc://models/{second}"
    assert "kubeloop.io/shadow-trial" not in md["metadata"].get("annotations", {})
    history = cluster.status("DriftMonitor", namespace, GATE)["retrains"]
    assert [(r["trainingJob"], r["result"]) for r in history][:2] == [
        (second, "Promoted"), (first, "Rejected")]
    record("shadow_gate_seconds", round(time.monotonic() - started, 1))
