"""Progressive delivery for real: model servers in real pods, traffic through the
Service (kube-proxy on this machine), and the operator pod judging each step on the
pods' own /metrics. A canary model that fails on part of its inputs is rolled back with
its figures while the stable keeps answering; a good one goes through its steps and is
promoted: the stable Deployment's pods then serve it. v1 and v2 are different models
(trained on different splits of the data), so what the clients get through the Service
says which one serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from e2e.real.conftest import (
    ON_REAL_NODE,
    ModelVolume,
    pods_of,
    reachable,
    record,
    served,
    service_url,
)
from kubeloop.modeldir import load_model, write_manifest
from tests.kubetest import ROOT, Cluster, wait_for

MD = "ModelDeployment"
NAME = "iris-steps"
ANALYSIS = {"interval": "10s", "minRequests": 30, "maxErrorPercent": 1}
# Iris rows on which v1 (split seed 0) and v2 (seed 1) disagree, the first two, and
# agree, the last two; the first one's sepal length, 4.9, is one the failing canary
# cannot score.
PROBE = [[4.9, 2.5, 4.5, 1.7], [7.2, 3.0, 5.8, 1.6], [5.1, 3.5, 1.4, 0.2],
         [7.0, 3.2, 4.7, 1.4]]
PROBE_REQUESTS = 20


def train(out: Path, seed: int) -> Path:
    """examples/train/train.py, its train/test split (and boosting) seeded with `seed`."""
    subprocess.run([sys.executable, str(ROOT / "examples" / "train" / "train.py"),
                    "--output", str(out), "--seed", str(seed)], check=True,
                   capture_output=True)
    return out


def chown_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        os.chown(root, 10001, 10001)
        for name in files:
            os.chown(os.path.join(root, name), 10001, 10001)


def failing_copy(source: Path, out: Path) -> None:
    """The model of `source`, but one that cannot score rows whose first feature is below
    5.0 (22 of iris' 150): its first step one-hot encodes that feature with the values
    it saw in training, and refuses an unknown one, so the server answers 500 for them.
    Built from scikit-learn parts only, so the server's image can load it."""
    shutil.copytree(source, out)
    x, y = load_iris(return_X_y=True)
    seen = x[:, 0] >= 5.0
    gate = ColumnTransformer([("known", OneHotEncoder(handle_unknown="error"), [0])],
                             remainder="passthrough")
    model = Pipeline([("gate", gate), ("clf", LogisticRegression(max_iter=1000))])
    joblib.dump(model.fit(x[seen], y[seen]), out / "model.joblib")
    # Its own version, so that its answers name it.
    meta = json.loads((out / "model.json").read_text())
    meta["version"] = "failing"
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_manifest(out)


@pytest.fixture(scope="module")
def models(volume: ModelVolume) -> dict[str, str]:
    v1 = train(volume.path / "iris-v1", seed=0)
    train(volume.path / "iris-v2", seed=1)
    failing_copy(v1, volume.path / "iris-failing")
    chown_tree(volume.path)
    return {name: f"pvc://models/{name}" for name in ("iris-v1", "iris-v2", "iris-failing")}


@pytest.fixture(scope="module")
def answers(volume: ModelVolume) -> dict[str, tuple[int, str, tuple[int, ...]]]:
    """What a client gets for the probe rows from v1 and from v2 (status, model version,
    predicted classes), by the model files themselves; they must differ for the checks
    through the Service to say which model serves."""
    expected = {}
    for name in ("iris-v1", "iris-v2"):
        model = load_model(volume.path / name)
        classes = tuple(int(c) for c in model.estimator.predict(np.asarray(PROBE)))
        expected[name] = (200, model.metadata.version, classes)
    v1, v2 = expected["iris-v1"], expected["iris-v2"]
    assert v1[1] != v2[1] and v1[2][:2] != v2[2][:2], expected
    return expected


class Traffic:
    """Single-row requests through the Service, each on a new connection, as many
    clients would send them: kube-proxy picks a pod per connection, so one keep-alive
    connection would reach one pod only (docs/progressive-delivery.md)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[int] = []
        self.versions: set[str] = set()
        self._rows = load_iris().data
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            row = self._rows[index % len(self._rows)].tolist()
            index += 7
            body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                                "data": [row]}]}
            try:
                answer = requests.post(f"{self.url}/v2/models/{NAME}/infer", json=body,
                                       headers={"Connection": "close"}, timeout=5)
                self.answers.append(answer.status_code)
                if answer.status_code == 200:
                    self.versions.add(answer.json()["model_version"])
            except requests.RequestException:
                self.answers.append(0)
            self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def canary_in(cluster: Cluster, ns: str, state: str) -> dict[str, Any] | None:
    status = cluster.status(MD, ns, NAME)
    return status if (status.get("canary") or {}).get("state") == state else None


def wait_canary(cluster: Cluster, ns: str, state: str, timeout: float) -> dict[str, Any]:
    """The status once the canary is in `state`; else fail with what it was and what the
    operator said."""
    try:
        return wait_for(lambda: canary_in(cluster, ns, state), timeout, f"canary {state}")
    except AssertionError as err:
        log = cluster.kubectl("logs", "-n", "kubeloop-system", "deploy/kubeloop", "--tail=40",
                              check=False).stdout
        pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
        raise AssertionError(f"{err}\nstatus: {cluster.status(MD, ns, NAME)}\n{pods}\n"
                             f"operator log:\n{log}") from None


@pytest.fixture(scope="module")
def stable(cluster: Cluster, namespace: str, models: dict[str, str]) -> Iterator[str]:
    cluster.create(MD, namespace, NAME, {
        "model": {"uri": models["iris-v1"]}, "replicas": 2, "scheduling": ON_REAL_NODE,
        "resources": {"cpu": "100m", "memory": "512Mi"},
        # Two server processes per pod: the analysis reads their summed /metrics.
        "runtime": {"workers": 2},
    })
    wait_for(lambda: cluster.status(MD, namespace, NAME).get("phase") == "Ready", 240,
             "stable Ready")
    url = service_url(cluster, namespace, NAME)
    reachable(url, NAME)
    # Two server processes in each pod, each on its own metrics socket.
    pod = pods_of(cluster, namespace, f"kubeloop.io/model-deployment={NAME}")[0]
    sockets = cluster.kubectl(
        "exec", "-n", namespace, pod["metadata"]["name"], "-c", "server", "--", "python", "-c",
        "import glob; print(len(glob.glob('/tmp/kubeloop-workers-*/worker-*.sock')))").stdout
    assert sockets.strip() == "2", sockets
    yield url


@pytest.mark.timeout(600)
def test_a_canary_failing_on_part_of_its_inputs_is_rolled_back(
    cluster: Cluster, namespace: str, models: dict[str, str], stable: str,
    answers: dict[str, tuple[int, str, tuple[int, ...]]],
) -> None:
    with Traffic(stable) as traffic:
        cluster.patch_spec(MD, namespace, NAME, {"canary": {
            "model": {"uri": models["iris-failing"]}, "steps": [50, 100],
            "analysis": ANALYSIS}})
        status = wait_canary(cluster, namespace, "RolledBack", 180)
        message = status["canary"]["message"]
        assert re.search(r"failed step 1 of 2 \(50% of traffic\): error rate [0-9.]+% > 1% "
                         r"over [0-9]+ requests", message), message
        judged = status["canary"]["analysis"]
        assert judged["canary"]["errorPercent"] > 1 and judged["stable"]["errorPercent"] == 0
        assert judged["canary"]["requests"] >= 30 and judged["stable"]["requests"] >= 30
        # The clients did see the canary's errors, through the Service, before the rollback.
        assert 500 in traffic.answers, "no request reached the failing canary"
        record("canary_rollback_figures", judged)
        record("canary_rollback_message", message)

        def canary_pods_gone() -> bool:
            return not pods_of(cluster, namespace,
                               f"kubeloop.io/model-deployment={NAME},kubeloop.io/track=canary")

        wait_for(canary_pods_gone, 90, "the canary's pods gone")
        after = len(traffic.answers)
        wait_for(lambda: len(traffic.answers) >= after + 100, 60, "100 more requests")
    # The stable serves everything again: every answer after the canary left is a 200.
    assert set(traffic.answers[after:]) == {200}, sorted(set(traffic.answers[after:]))
    assert cluster.status(MD, namespace, NAME)["activeModelUri"] == models["iris-v1"]
    # What the clients get is v1's answers only: the failing canary would refuse the
    # first probe row (500), and names itself "failing".
    assert served(stable, NAME, PROBE, PROBE_REQUESTS) == {answers["iris-v1"]}


@pytest.mark.timeout(600)
def test_a_good_canary_goes_through_its_steps_and_is_promoted(
    cluster: Cluster, namespace: str, models: dict[str, str], stable: str,
    answers: dict[str, tuple[int, str, tuple[int, ...]]],
) -> None:
    # Before: v1's answers only.
    assert served(stable, NAME, PROBE, PROBE_REQUESTS) == {answers["iris-v1"]}
    with Traffic(stable) as traffic:
        cluster.patch_spec(MD, namespace, NAME, {"canary": {
            "model": {"uri": models["iris-v2"]}, "steps": [50, 100], "analysis": ANALYSIS}})
        status = wait_canary(cluster, namespace, "Promoted", 240)
    assert status["promotion"]["uri"] == models["iris-v2"]
    assert status["promotion"]["replaces"] == models["iris-v1"]
    assert status["canary"]["analysis"]["decision"] == "Pass"
    assert set(traffic.answers) == {200}, sorted(set(traffic.answers))
    # The clients got answers from both models while the canary ran its steps.
    assert traffic.versions == {answers["iris-v1"][1], answers["iris-v2"][1]}, traffic.versions

    def stable_serves_v2() -> bool:
        pods = pods_of(cluster, namespace, f"kubeloop.io/model-deployment={NAME}")
        uris = {p["metadata"]["annotations"]["kubeloop.io/model-uri"] for p in pods}
        stable_pods = [p for p in pods if p["metadata"]["labels"].get("kubeloop.io/track")
                       == "stable" and not p["metadata"].get("deletionTimestamp")]
        # No pod of v1 left at all, terminating ones included.
        return bool(stable_pods) and uris == {models["iris-v2"]} and cluster.status(
            MD, namespace, NAME).get("phase") == "Ready"

    wait_for(stable_serves_v2, 120, "the stable's pods serving v2, Ready, v1's pods gone")
    # What the clients get through the Service now is v2's answers only.
    assert served(stable, NAME, PROBE, PROBE_REQUESTS) == {answers["iris-v2"]}
    record("canary_probe", {
        "rows": PROBE, "requests": PROBE_REQUESTS,
        "v1": list(answers["iris-v1"][2]), "v2": list(answers["iris-v2"][2])})
    cluster.await_events(
        namespace, NAME, {"CanaryStarted", "CanaryPromoting", "CanaryPromoted"}, kind=MD)
    listed = cluster.kubectl("get", "mdep", NAME, "-n", namespace).stdout
    record("canary_promoted_kubectl_get", listed)
