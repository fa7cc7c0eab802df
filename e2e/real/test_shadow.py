"""A shadow challenger for real: the stable and the shadow in real pods, clients through
the Service (kube-proxy), the stable's pods mirroring every answered request to the
shadow's own Service, and the operator pod comparing them from the stable's /metrics.

The shadow is the stable's model retrained with virginica relabelled versicolor where
the petals are longer than 5 cm: it disagrees on that part of the input space only.
Clients get the stable's answers alone; status.shadow shows the disagreement, and with
the late labels, McNemar's test on the same requests, both equal to a direct
computation on the two model files over the rows the clients sent."""

from __future__ import annotations

import json
import shutil
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

from e2e.real.conftest import ON_REAL_NODE, ModelVolume, pods_of, reachable, record, service_url
from e2e.real.test_progressive import chown_tree, train
from kubeloop.modeldir import load_model, write_manifest
from tests.kubetest import Cluster, wait_for

MD = "ModelDeployment"
NAME = "iris-shadowed"
SMALL = {"cpu": "100m", "memory": "512Mi"}


def disagreeing_copy(source: Path, out: Path) -> None:
    """`source`'s directory with a tree trained on iris where virginica with petals
    longer than 5 cm is labelled versicolor (scikit-learn only: the image loads it)."""
    shutil.copytree(source, out)
    x, y = load_iris(return_X_y=True)
    y = np.where((y == 2) & (x[:, 2] > 5.0), 1, y)
    joblib.dump(DecisionTreeClassifier(random_state=0).fit(x, y), out / "model.joblib")
    meta = json.loads((out / "model.json").read_text())
    meta["version"] = "shadow"
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_manifest(out)


@pytest.fixture(scope="module")
def models(volume: ModelVolume) -> dict[str, str]:
    disagreeing_copy(train(volume.path / "iris-v1", seed=0), volume.path / "iris-shadow")
    chown_tree(volume.path)
    return {name: f"pvc://models/{name}" for name in ("iris-v1", "iris-shadow")}


def mirroring(cluster: Cluster, namespace: str, shadow_uri: str) -> bool:
    """Ready, comparing, and the one stable pod is one that mirrors (no old one left)."""
    status = cluster.status(MD, namespace, NAME)
    if status.get("phase") != "Ready" or (status.get("shadow") or {}).get("state") is None:
        return False
    pods = pods_of(cluster, namespace, f"kubeloop.io/model-deployment={NAME}")
    return len(pods) == 1 and all(
        p["metadata"]["annotations"].get("kubeloop.io/shadow-model-uri") == shadow_uri
        and not p["metadata"].get("deletionTimestamp")
        for p in pods
    ) and status["shadow"]["state"] in ("Comparing", "Compared")


def wait_shadow(cluster: Cluster, namespace: str, done: Callable[[dict[str, Any]], bool],
                what: str) -> dict[str, Any]:
    """status.shadow once `done` holds; else fail with it and the operator's words."""
    seen: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        seen.clear()
        seen.update(cluster.status(MD, namespace, NAME).get("shadow") or {})
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
