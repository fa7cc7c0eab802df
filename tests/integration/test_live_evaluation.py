"""The evaluation gate learns from live labels (`onDrift.evaluate.live`): a challenger
that wins on the holdout file but loses on the labelled rows the serving pods keep is
refused in Beside mode, and the status says how many live rows it was judged on.

On the simulated nodes the evaluation pod runs nothing: the test runs the pod's own
command line (`kubeloop evaluate` with the Job's args, which read the model server on
loopback as the pod would read the serving pods) and hands its termination message to
kwok, which ends the pod with it. The pod is held Pending (its node selector matches no
node) until the message is on it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from sklearn.datasets import load_iris

from tests.integration.test_drift_loop import (  # noqa: F401  (fixtures)
    DM,
    MD,
    _retrain_record,
    model_v1,
    monitor_spec,
    server,
)
from tests.kubetest import Cluster, stays, wait_for
from tests.modelserver import ModelServer, shifted_rows, train

IRIS = load_iris()
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
NODE = "cpu-node-1"


def shifted_holdout(path: Path) -> Path:
    """Iris two standard deviations away, with its true species: where a model trained
    on shifted data wins."""
    rows = IRIS.data + 2.0 * IRIS.data.std(axis=0)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*FEATURES, "species"])
        for x, y in zip(rows.tolist(), IRIS.target.tolist(), strict=True):
            out.writerow([*x, IRIS.target_names[y]])
    return path


def label_live_traffic(model_server: ModelServer) -> None:
    """Labels for plain iris requests, sent back with their inputs: the world as it is,
    where the serving model is right."""
    records = [
        {"label": IRIS.target_names[y], "prediction": int(y), "inputs": x}
        for x, y in zip(IRIS.data.tolist(), IRIS.target.tolist(), strict=True)
    ]
    for start in (0, 75):  # two requests: with two workers, each may keep some
        answer = requests.post(
            f"{model_server.url}/v2/models/iris/feedback",
            json={"model_version": "v1", "records": records[start : start + 75]},
            headers={"Connection": "close"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text


def run_pod(args: list[str], tmp_path: Path) -> str:
    """The evaluation container's command, here; its termination message."""
    log = tmp_path / "termination-log"
    args = list(args)
    args[args.index("--termination-log") + 1] = str(log)
    done = subprocess.run(
        [sys.executable, "-m", "kubeloop", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    return log.read_text()


def test_a_challenger_that_loses_on_live_labels_is_refused_beside_the_holdout(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path  # noqa: F811
) -> None:
    train(tmp_path / "live-retrain-1", shift=2.0)
    holdout = shifted_holdout(tmp_path / "holdout.csv")
    champion = f"file://{model_v1}"
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    spec: dict[str, Any] = monitor_spec(server, tmp_path)
    selector = {"kubeloop.io/live-evaluation": namespace}
    spec["onDrift"]["evaluate"] = {
        "data": {"uri": f"file://{holdout}"},
        "metric": "accuracy",
        "labelColumn": "species",
        "live": {"minRows": 100},
        "scheduling": {"nodeSelector": selector},
    }
    cluster.create(DM, namespace, "live", spec)
    wait_for(lambda: cluster.status(DM, namespace, "live").get("window"), 20, "baseline")
    label_live_traffic(server)
    server.send(shifted_rows(300, shift=2.0))

    def pending_pod() -> Any:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector="kubeloop.io/evaluation-of=live"
        ).items
        return pods[0] if pods else None

    pod = wait_for(pending_pod, 60, "the evaluation pod")
    args = pod.spec.containers[0].args
    assert [args[i + 1] for i, a in enumerate(args) if a == "--live-rows"] == [
        f"{server.url}/v2/models/iris/feedback/rows"
    ]
    assert args[args.index("--live-mode") + 1] == "beside"
    message = run_pod(args, tmp_path)
    cluster.core.patch_namespaced_pod(
        pod.metadata.name,
        namespace,
        {"metadata": {"annotations": {"kubeloop.io/fake-message": message}}},
    )
    cluster.core.patch_node(NODE, {"metadata": {"labels": selector}})
    try:
        record = _retrain_record(cluster, namespace, "live", "Rejected")
    finally:
        cluster.core.patch_node(NODE, {"metadata": {"labels": dict.fromkeys(selector)}})
    ev = record["evaluation"]
    # Better on the holdout, worse on what the pods were told is true.
    assert ev["challenger"] > 0.9 > 0.5 > ev["champion"], ev
    assert ev["live"]["rows"] == 150, ev
    assert ev["live"]["champion"] > 0.9 > 0.5 > ev["live"]["challenger"], ev
    assert ev["live"]["passed"] is False and ev["reason"] == "NotBetter"
    assert "live labels (150 rows)" in ev["message"]
    accepted = cluster.condition(DM, namespace, "live", "RetrainAccepted")
    assert accepted and accepted["status"] == "False" and accepted["reason"] == "NotBetter"
    stays(
        lambda: cluster.get(MD, namespace, "iris")["spec"]["model"].get("uri") == champion,
        3,
        "the champion kept",
    )
