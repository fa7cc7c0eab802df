"""A DriftMonitor with spec.performance on the local control plane, a real model server
on loopback as its source: labels posted to the server's feedback route that disagree
with the answers (concept drift, inputs unchanged) degrade the performance and start a
retrain; a harmless input shift with the labels agreeing is reported, and retrains
nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.integration.test_drift_loop import monitor_spec
from tests.kubetest import Cluster, stays, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train

DM, MD, TJ = "DriftMonitor", "ModelDeployment", "TrainingJob"
PERFORMANCE = {"source": "labels", "minimum": 0.8, "minLabels": 50}


@pytest.fixture(scope="module")
def model_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("models") / "v1")


@pytest.fixture
def server(model_v1: Path) -> Iterator[ModelServer]:
    srv = ModelServer(model_v1, free_port())
    srv.start()
    yield srv
    srv.stop()


def answer(server: ModelServer, rows: np.ndarray) -> tuple[list[int], str]:
    """Served answers: the predicted classes and the version that gave them."""
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.tolist(),
            }
        ]
    }
    got = requests.post(f"{server.url}/v2/models/iris/infer", data=json.dumps(body), timeout=10)
    assert got.status_code == 200, got.text
    out = got.json()
    return [int(p) for p in out["outputs"][0]["data"]], out["model_version"]


def feedback(server: ModelServer, version: str, predictions: list[int], labels: list[int]) -> None:
    records = [{"label": y, "prediction": p} for p, y in zip(predictions, labels, strict=True)]
    got = requests.post(
        f"{server.url}/v2/models/iris/feedback",
        json={"model_version": version, "records": records},
        timeout=10,
    )
    assert got.status_code == 200, got.text


def start(cluster: Cluster, namespace: str, server: ModelServer, model: Path, out: Path) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model}"}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    spec = monitor_spec(server, out, performance=PERFORMANCE)
    cluster.create(DM, namespace, "watch", spec)
    wait_for(lambda: cluster.status(DM, namespace, "watch").get("window"), 20, "baseline")


def condition(cluster: Cluster, namespace: str, ctype: str) -> dict[str, Any] | None:
    return cluster.condition(DM, namespace, "watch", ctype)


def test_labels_that_disagree_degrade_performance_and_retrain(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    start(cluster, namespace, server, model_v1, tmp_path)
    # Inputs like the reference; the truth has moved: every label disagrees.
    predictions, version = answer(server, shifted_rows(100, shift=0.0, seed=3))
    feedback(server, version, predictions, [(p + 1) % 3 for p in predictions])
    server.send(shifted_rows(200, shift=0.0, seed=4))
    degraded = wait_for(
        lambda: (
            (d := condition(cluster, namespace, "PerformanceDegraded"))
            and d["status"] == "True"
            and d
        ),
        30,
        "performance degraded",
    )
    assert degraded["reason"] == "QualityDropped"
    assert "realised accuracy over 100 labels 0.0000 is below 0.8000" in degraded["message"]
    status = cluster.status(DM, namespace, "watch")
    perf = status["performance"]
    assert (perf["metric"], perf["labels"], perf["realised"], perf["version"]) == (
        "accuracy",
        100,
        0.0,
        version,
    )
    input_drift = condition(cluster, namespace, "InputDrift")
    assert input_drift is not None and input_drift["status"] == "False"
    wait_for(lambda: cluster.get(TJ, namespace, "watch-retrain-1"), 20, "retrain job")
    cluster.await_events(namespace, "watch", {"QualityDropped", "RetrainStarted"})


def test_a_harmless_input_shift_is_reported_and_retrains_nothing(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    start(cluster, namespace, server, model_v1, tmp_path)
    # The inputs move; the model's answers stay right: every label agrees.
    predictions, version = answer(server, shifted_rows(100, shift=2.0, seed=3))
    feedback(server, version, predictions, predictions)
    server.send(shifted_rows(200, shift=2.0, seed=4))
    drift = wait_for(
        lambda: (d := condition(cluster, namespace, "InputDrift")) and d["status"] == "True" and d,
        30,
        "input drift reported",
    )
    assert drift["reason"] == "DriftDetected"
    held = condition(cluster, namespace, "PerformanceDegraded")
    assert held is not None and (held["status"], held["reason"]) == ("False", "QualityHeld")
    assert "reported only" in cluster.status(DM, namespace, "watch")["message"]

    def no_retrain() -> bool:
        return not cluster.custom.list_namespaced_custom_object(
            "kubeloop.io", "v1alpha1", namespace, "trainingjobs"
        )["items"]

    stays(no_retrain, 5, "no retrain")
    assert cluster.status(DM, namespace, "watch")["retrainCount"] == 0
    cluster.await_events(namespace, "watch", {"QualityHeld", "DriftDetected"})
