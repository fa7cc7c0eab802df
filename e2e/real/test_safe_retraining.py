"""Safe retraining, for real: a training run reports its progress and metrics onto the
TrainingJob while its pod runs; a retrain worse than the serving model (on mislabelled
data) is rejected by the evaluation gate (an evaluation Job in a real pod) and the
champion's answers are still what clients get; a retrain on the new data beats it and
is promoted, its answers are then what clients get, and the deployment's history says
who changed the model and on what scores."""

from __future__ import annotations

import contextlib
import csv
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import watch
from sklearn.datasets import load_iris
from urllib3.exceptions import ProtocolError

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
TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"
# Shifted iris rows (one of each species, the new world's traffic) on which the champion,
# the mislabelled retrain and the retrain on the new data all answer differently.
PROBE_INDEXES = (0, 50, 100)
PROBE_REQUESTS = 10


class StatusLog:
    """Every status the API server stores for one TrainingJob, from a watch."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(cluster, namespace, name), daemon=True
        )
        self._thread.start()

    def _run(self, cluster: Cluster, namespace: str, name: str) -> None:
        # The API server may end the watch (the cluster going down after the test).
        with contextlib.suppress(ProtocolError):
            self._watch(cluster, namespace, name)

    def _watch(self, cluster: Cluster, namespace: str, name: str) -> None:
        w = watch.Watch()
        last = None
        for event in w.stream(
            cluster.custom.list_namespaced_custom_object,
            "kubeloop.io",
            "v1alpha1",
            namespace,
            "trainingjobs",
            field_selector=f"metadata.name={name}",
            timeout_seconds=600,
        ):
            status = event["object"].get("status") or {}
            if status != last:
                self.seen.append((time.monotonic(), status))
                last = status
            if self._stop.is_set():
                w.stop()

    def stop(self) -> None:
        self._stop.set()


# A run that reports a step every 0.2 s through kubeloop.train until the test lets it
# finish (a file in its output directory), then writes its final message. Its length is
# the test's to decide, not the machine's speed: a fast CI machine once finished 6000
# boosting stages before the operator's first read, 10 s after the pod ran.
GATED_RUN = """
import os, pathlib, time, urllib.parse
import kubeloop.train as train
gate = pathlib.Path(urllib.parse.urlsplit(os.environ["KUBELOOP_OUTPUT_URI"]).path) / "finish"
deadline = time.monotonic() + 400
step = 0
while not gate.exists() and time.monotonic() < deadline:
    step = min(step + 1, 999)
    train.report(step=step, total_steps=1000, metrics={"accuracy": 0.5})
    time.sleep(0.2)
train.report(step=1000)
train.finish({"accuracy": 0.97})
"""


@pytest.mark.timeout(600)
def test_progress_and_metrics_of_a_running_job(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    write_iris_csv(volume.path / "data" / "iris.csv", shift=0.0)
    gate = volume.path / "long-run" / "finish"
    gate.parent.mkdir()
    log = StatusLog(cluster, namespace, "long-run")
    cluster.create(TJ, namespace, "long-run", {
        "image": IMAGE, "command": ["python", "-c", GATED_RUN],
        "output": {"uri": "pvc://models/long-run"},
        "scheduling": ON_REAL_NODE,
    })
    # The example training script, in a pod beside it: its final words reach the status.
    cluster.create(TJ, namespace, "example-run", {
        "image": IMAGE, "command": TRAIN_COMMAND,
        "dataset": {"uri": "pvc://models/data/iris.csv"},
        "output": {"uri": "pvc://models/example-run"},
        "scheduling": ON_REAL_NODE,
    })

    def live(after: int) -> Any:
        def check() -> dict[str, Any] | None:
            status = cluster.status(TJ, namespace, "long-run")
            step = (status.get("progress") or {}).get("step") or 0
            if status.get("phase") not in (None, "Pending", "Running"):
                raise AssertionError(f"the run ended before the test let it: {status}")
            return status if status.get("phase") == "Running" and step > after else None
        return check

    first = wait_for(live(0), 240, "progress read from worker 0 while it runs")
    progress = first["progress"]
    assert 0 < progress["step"] < 1000 and progress["totalSteps"] == 1000
    assert 0 < progress["percent"] < 100
    assert progress["lastUpdateTime"]
    assert first["metrics"] == {"accuracy": 0.5} and first["metric"] == "accuracy=0.5"
    # Read again while it still runs, not once: the step moves on.
    second = wait_for(live(progress["step"]), 60, "a later step read while it runs")
    assert second["progress"]["step"] > progress["step"]

    gate.touch()
    done = cluster.wait_phase(TJ, namespace, "long-run", "Succeeded", 120)
    log.stop()
    # The final metrics come from the container's termination message.
    assert done["progress"]["percent"] == 100 and done["progress"]["step"] == 1000
    assert done["metrics"] == {"accuracy": 0.97}, done["metrics"]

    # Progress is written at most every 10 s: count the statuses stored while Running.
    running_statuses = [(t, s) for t, s in log.seen if s.get("phase") == "Running"]
    steps = {s.get("progress", {}).get("step") for _, s in running_statuses} - {None}
    assert len(steps) >= 2, steps
    span = running_statuses[-1][0] - running_statuses[0][0]
    assert len(running_statuses) <= span / 10 + 3, (len(running_statuses), span)
    record("progress_statuses_while_running", len(running_statuses))

    example = cluster.wait_phase(TJ, namespace, "example-run", "Succeeded", 240)
    assert example["progress"]["percent"] == 100, example
    assert example["metrics"]["accuracy"] >= 0.9, example["metrics"]
    assert example["metric"].startswith("accuracy=")


def iris_rows(count: int, shift: float, seed: int) -> list[list[float]]:
    data = load_iris().data
    rng = np.random.default_rng(seed)
    return (data[rng.integers(0, len(data), count)] + shift * data.std(axis=0)).tolist()


def write_mislabelled_csv(path: Path, source: Path) -> None:
    """`source` with every row's species replaced by the next one (setosa -> versicolor
    -> virginica -> setosa): a labelling pipeline gone wrong, whose model is worse than
    any on every species."""
    species = ["setosa", "versicolor", "virginica"]
    with source.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows([*row[:-1], species[(species.index(row[-1]) + 1) % 3]] for row in rows)


def probe_rows() -> list[list[float]]:
    data = load_iris().data
    return (data[list(PROBE_INDEXES)] + SHIFT * data.std(axis=0)).tolist()


def model_answers(path: Path, rows: list[list[float]]) -> tuple[int, str, tuple[int, ...]]:
    """What a client gets from the model in `path` for `rows` (status, version, classes),
    by the model files themselves."""
    model = load_model(path)
    return 200, model.metadata.version, tuple(
        int(c) for c in model.estimator.predict(np.asarray(rows)))


def monitor(name: str, data: str, min_improvement: float) -> dict[str, Any]:
    return {
        "modelDeployment": "gated",
        "method": "psi",
        "interval": "3s",
        "minSamples": 200,
        "onDrift": {
            "promote": True,
            "retrain": {"cooldown": "1h", "template": {
                "image": IMAGE, "command": TRAIN_COMMAND,
                "dataset": {"uri": f"pvc://models/data/{data}"},
                "output": {"uri": "pvc://models/{trainingJob}"},
                "scheduling": ON_REAL_NODE,
            }},
            "evaluate": {
                "data": {"uri": "pvc://models/data/holdout.csv"},
                "metric": "accuracy",
                "minImprovement": min_improvement,
            },
        },
    }


def drift(cluster: Cluster, namespace: str, name: str, url: str, seed: int) -> None:
    """Shifted traffic through the Service, once the monitor has its baseline."""
    wait_for(lambda: cluster.status(DM, namespace, name).get("window"), 120, "a baseline")
    rows = iris_rows(300, SHIFT, seed)
    for start in range(0, len(rows), 50):
        infer(url, "gated", rows[start:start + 50])


def final_result(cluster: Cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        last = cluster.status(DM, namespace, name).get("lastRetrain") or {}
        return last if last.get("result") not in (None, "Running", "Evaluating") else None

    return wait_for(ended, timeout, f"the retrain of {name} decided")


@pytest.mark.timeout(900)
def test_gate_rejects_a_worse_model_and_promotes_a_better_one(
    cluster: Cluster, namespace: str, volume: ModelVolume
) -> None:
    data = volume.path / "data"
    write_iris_csv(data / "same.csv", shift=0.0)
    write_iris_csv(data / "shifted.csv", shift=SHIFT)
    write_mislabelled_csv(data / "mislabelled.csv", data / "shifted.csv")
    # The labelled holdout: recent data, after the world moved.
    write_iris_csv(data / "holdout.csv", shift=SHIFT)
    cluster.create(TJ, namespace, "champion", {
        "image": IMAGE, "command": TRAIN_COMMAND,
        "dataset": {"uri": "pvc://models/data/same.csv"},
        "output": {"uri": "pvc://models/champion"},
        "scheduling": ON_REAL_NODE,
    })
    cluster.wait_phase(TJ, namespace, "champion", "Succeeded", 240)
    champion = "pvc://models/champion"
    cluster.create(MD, namespace, "gated", {
        "model": {"uri": champion},
        "resources": {"cpu": "100m", "memory": "256Mi"},
        "scheduling": ON_REAL_NODE,
    })
    cluster.wait_phase(MD, namespace, "gated", "Ready", 240)
    url = service_url(cluster, namespace, "gated")
    reachable(url, "gated")
    probe = probe_rows()
    champion_answers = model_answers(volume.path / "champion", probe)
    assert served(url, "gated", probe, PROBE_REQUESTS) == {champion_answers}

    # A retrain on mislabelled new data is worse on the new holdout: Rejected.
    started = time.monotonic()
    cluster.create(DM, namespace, "mislabelled", monitor("mislabelled", "mislabelled.csv", 0.01))
    drift(cluster, namespace, "mislabelled", url, seed=1)
    rejected = final_result(cluster, namespace, "mislabelled", 300)
    record("gate_reject_seconds", round(time.monotonic() - started, 1))
    ev = rejected["evaluation"]
    assert rejected["result"] == "Rejected", rejected
    assert ev["passed"] is False and ev["reason"] == "NotBetter"
    assert ev["championUri"] == champion
    assert ev["challenger"] < ev["champion"], ev
    accepted = cluster.condition(DM, namespace, "mislabelled", "RetrainAccepted")
    assert accepted and (accepted["status"], accepted["reason"]) == ("False", "NotBetter")
    reasons = cluster.await_events(namespace, "mislabelled", {"Rejected"})
    assert "Promoted" not in reasons
    stays(
        lambda: cluster.get(MD, namespace, "gated")["spec"]["model"].get("uri") == champion,
        5,
        "the champion kept after the rejection",
    )
    # The rejected model answers otherwise; the clients still get the champion's answers.
    rejected_answers = model_answers(volume.path / "mislabelled-retrain-1", probe)
    assert rejected_answers[2] != champion_answers[2], (rejected_answers, champion_answers)
    assert served(url, "gated", probe, PROBE_REQUESTS) == {champion_answers}
    cluster.delete(DM, namespace, "mislabelled")

    # A retrain on the new data beats the champion on the holdout: promoted.
    started = time.monotonic()
    cluster.create(DM, namespace, "new-data", monitor("new-data", "shifted.csv", 0.01))
    drift(cluster, namespace, "new-data", url, seed=2)
    promoted = final_result(cluster, namespace, "new-data", 300)
    record("gate_promote_seconds", round(time.monotonic() - started, 1))
    ev = promoted["evaluation"]
    assert promoted["result"] == "Promoted", promoted
    assert ev["passed"] is True and ev["challenger"] >= ev["champion"] + 0.01
    new_uri = promoted["modelUri"]
    assert new_uri == "pvc://models/new-data-retrain-1"
    record("gate_scores", {"rejected": [rejected["evaluation"]["champion"],
                                        rejected["evaluation"]["challenger"]],
                           "promoted": [ev["champion"], ev["challenger"]]})

    def history() -> list[dict[str, Any]] | None:
        entries = cluster.status(MD, namespace, "gated").get("history") or []
        if entries and entries[0]["uri"] == new_uri and entries[0].get("manifestSha256"):
            return entries
        return None

    entries = wait_for(history, 240, "the new model in the deployment's history, fetched")
    assert [(h["uri"], h["changedBy"]) for h in entries] == [
        (new_uri, "DriftMonitor/new-data"),
        (champion, "user"),
    ]
    assert entries[0]["evaluation"] == {
        "metric": "accuracy", "champion": ev["champion"], "challenger": ev["challenger"]}
    assert entries[1]["manifestSha256"] and entries[1]["to"]

    # Rolled out: every pod of the champion gone, the new model's Ready; what the clients
    # get through the Service is then the promoted model's answers only.
    promoted_answers = model_answers(volume.path / "new-data-retrain-1", probe)
    assert promoted_answers[2] not in (champion_answers[2], rejected_answers[2])

    def rolled_out() -> bool:
        pods = pods_of(cluster, namespace, "kubeloop.io/model-deployment=gated")
        return bool(pods) and all(
            p["metadata"]["annotations"]["kubeloop.io/model-uri"] == new_uri for p in pods
        ) and cluster.status(MD, namespace, "gated").get("phase") == "Ready"

    wait_for(rolled_out, 240, "the champion's pods replaced by the new model's, Ready")
    assert served(url, "gated", probe, PROBE_REQUESTS) == {promoted_answers}
    record("gate_probe", {
        "rows": [[round(v, 3) for v in row] for row in probe], "requests": PROBE_REQUESTS,
        "champion": list(champion_answers[2]), "rejected": list(rejected_answers[2]),
        "promoted": list(promoted_answers[2])})
