"""examples/ as a user applies it: unchanged, all at once, into one namespace, and every
resource reaches its good state. The CPU examples run for real on the real node (the
simulated CPU nodes are closed to new pods for the test, the real node opened); the GPU
examples land on the simulated GPU nodes, the only nodes with GPUs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.real.conftest import REAL_NODE, record
from tests.kubetest import Cluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOST_DIR = Path("/tmp/kubeloop-example-models")  # examples/local/models-pv.yaml
LOCAL_PV = "kubeloop-example-models"
CLOSED = "kubeloop.io/e2e-examples"
REAL_TAINT = "kubeloop.io/real-node"


def objects(cluster: Cluster, files: list[Path]) -> list[tuple[str, str]]:
    """(kind, name) of every object in the files, as kubectl reads them."""
    args = [a for f in files for a in ("-f", str(f))]
    out = cluster.kubectl("create", "--dry-run=client", "-o", "name", *args).stdout
    return [tuple(line.split("/", 1)) for line in out.split()]  # type: ignore[misc]


@pytest.fixture
def nodes_for_examples(cluster: Cluster) -> Iterator[None]:
    """New CPU pods go to the real node: the simulated nodes without GPUs are tainted,
    the real node's own taint lifted; both undone afterwards."""
    cpu_only = "type=kwok,nvidia.com/gpu.present!=true"
    cluster.kubectl("taint", "nodes", "-l", cpu_only, f"{CLOSED}=true:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "nodes", REAL_NODE, f"{REAL_TAINT}-", check=False)
    try:
        yield
    finally:
        cluster.kubectl("taint", "nodes", REAL_NODE, f"{REAL_TAINT}=true:NoSchedule",
                        "--overwrite")
        cluster.kubectl("taint", "nodes", "-l", cpu_only, f"{CLOSED}-", check=False)


@pytest.fixture
def local_volume(cluster: Cluster) -> Iterator[None]:
    cluster.kubectl("delete", "pv", LOCAL_PV, "--ignore-not-found", "--wait=true")
    shutil.rmtree(HOST_DIR, ignore_errors=True)
    HOST_DIR.mkdir(parents=True)
    os.chmod(HOST_DIR, 0o1777)  # what the file's comment tells the user to do
    cluster.kubectl("apply", "-f", str(EXAMPLES / "local"))
    # The data examples/batchprediction.yaml scores, where its comment says to put it.
    subprocess.run([sys.executable, str(EXAMPLES / "train" / "make_data.py"),
                    str(HOST_DIR / "data" / "iris.csv")], check=True)
    try:
        yield
    finally:
        cluster.kubectl("delete", "pv", LOCAL_PV, "--ignore-not-found", "--wait=false")
        shutil.rmtree(HOST_DIR, ignore_errors=True)


def good(cluster: Cluster, namespace: str, kind: str, name: str) -> str | None:
    """The good state each kind of example should reach, or None while it has not."""
    if kind == "persistentvolumeclaim":
        pvc = cluster.core.read_namespaced_persistent_volume_claim(name, namespace)
        return "Bound" if pvc.status.phase == "Bound" else None
    plural_kind = {"trainingjob.kubeloop.io": "TrainingJob",
                   "modeldeployment.kubeloop.io": "ModelDeployment",
                   "driftmonitor.kubeloop.io": "DriftMonitor",
                   "batchprediction.kubeloop.io": "BatchPrediction",
                   "experiment.kubeloop.io": "Experiment"}[kind]
    status = cluster.status(plural_kind, namespace, name)
    ready = cluster.condition(plural_kind, namespace, name, "Ready") or {}
    if plural_kind in ("TrainingJob", "BatchPrediction"):
        return "Succeeded" if status.get("phase") == "Succeeded" else None
    if plural_kind == "Experiment":
        # A search runs for minutes: good once a trial ran for real and reported its
        # objective (the search's end is the integration tests' and the bench's).
        done = [t for t in status.get("trials") or []
                if t.get("state") == "Succeeded" and t.get("value") is not None]
        return "TrialSucceeded" if done else None
    if plural_kind == "ModelDeployment":
        canary = status.get("canary")
        # A fixed canary serves its share; a progressive one without traffic holds its
        # first step (it is judged once requests come).
        if canary is not None and canary.get("state") not in ("Available", "Holding"):
            return None
        if canary is not None and canary.get("state") == "Holding":
            return "Holding" if canary.get("step") == 1 else None
        return "Ready" if status.get("phase") == "Ready" else None
    # A DriftMonitor with no traffic yet: checking, collecting samples.
    return ready.get("reason") if ready.get("status") == "True" else None


def where_each_is(
    cluster: Cluster, namespace: str, listed: list[tuple[str, str]],
    reached: dict[tuple[str, str], str],
) -> str:
    lines = []
    for kind, name in listed:
        if (kind, name) in reached:
            lines.append(f"  {kind}/{name}: {reached[(kind, name)]}")
            continue
        got = cluster.kubectl("get", "-n", namespace, f"{kind}/{name}", "-o", "json",
                              check=False).stdout
        status = json.loads(got).get("status", {}) if got else {}
        lines.append(f"  {kind}/{name}: NOT YET {json.dumps(status)[:1500]}")
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    return "\n".join(lines) + "\n" + pods


@pytest.mark.timeout(900)
def test_examples_apply_unchanged_and_reach_their_good_states(
    cluster: Cluster, namespace: str, nodes_for_examples: None, local_volume: None
) -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    listed = objects(cluster, files)
    assert len(listed) >= 9, listed
    cluster.kubectl("apply", "-n", namespace, *[a for f in files for a in ("-f", str(f))])

    reached: dict[tuple[str, str], str] = {}

    def all_good() -> bool:
        for kind, name in listed:
            if (kind, name) not in reached and (state := good(cluster, namespace, kind, name)):
                reached[(kind, name)] = state
        return len(reached) == len(listed)

    try:
        wait_for(all_good, 420, "every example in its good state")
    except AssertionError as err:
        where = where_each_is(cluster, namespace, listed, reached)
        raise AssertionError(f"{err}\n{where}") from None
    assert reached[("driftmonitor.kubeloop.io", "iris-drift")] == "Collecting"

    # What ran for real ran on the real node: the training scripts and model servers.
    pods = cluster.core.list_namespaced_pod(namespace).items
    cpu_pods = [p for p in pods if not any(
        "nvidia.com/gpu" in (c.resources.limits or {}) for c in p.spec.containers)]
    # A pod still waiting for room (an Experiment's next trial, an autoscaled replica)
    # has run nowhere; every CPU pod that was placed was placed on the real node.
    placed = [p for p in cpu_pods if p.spec.node_name]
    waiting = sorted(p.metadata.name for p in cpu_pods if not p.spec.node_name)
    assert placed and {p.spec.node_name for p in placed} == {REAL_NODE}, (
        {p.metadata.name: p.spec.node_name for p in placed}, waiting)
    ran = [p for p in placed if p.status.phase in ("Running", "Succeeded")]
    for key in ("kubeloop.io/training-job", "kubeloop.io/model-deployment",
                "kubeloop.io/batch-prediction"):
        assert any(key in (p.metadata.labels or {}) for p in ran), (key, waiting)
    gpu_pods = [p for p in pods if p not in cpu_pods]
    assert gpu_pods and REAL_NODE not in {p.spec.node_name for p in gpu_pods}
    # The models are on the volume, where the examples said they would be.
    for version in ("v1", "v2"):
        assert (HOST_DIR / "iris" / version / "manifest.json").is_file()
    # The batch run scored every row of the dataset once, with the deployment's model.
    batch = cluster.status("BatchPrediction", namespace, "iris-nightly")
    assert batch["output"]["rows"] == 150, batch
    assert batch["model"]["source"] == "ModelDeployment/iris", batch
    assert (HOST_DIR / "scores" / "iris-nightly" / "_manifest.json").is_file()
    canary: dict[str, Any] = cluster.status("ModelDeployment", namespace, "iris-canary")["canary"]
    assert canary["actualTrafficPercent"] == 33 and canary["trafficPercent"] == 10
    held = cluster.status("ModelDeployment", namespace, "iris-progressive")["canary"]
    assert (held["step"], held["actualTrafficPercent"]) == (1, 50), held
    assert "0 of 50 requests" in held["message"], held
    record("examples_good_states", len(reached))
