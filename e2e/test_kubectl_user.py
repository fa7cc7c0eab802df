"""What a user does with kubectl: apply the examples, wait on conditions, read the
columns, the explain text and the events, delete, and find nothing left behind."""

from __future__ import annotations

import json

from tests.kubetest import ROOT, Cluster, wait_for

EXAMPLES = ROOT / "examples"


def test_examples_reach_their_state_and_read_well_in_kubectl(
    cluster: Cluster, namespace: str
) -> None:
    # The volume for examples/storage.yaml's claim, reserved for this namespace's.
    pv = (EXAMPLES / "local" / "models-pv.yaml").read_text().replace(
        "name: kubeloop-example-models", f"name: models-{namespace}").replace(
        "  capacity:", f"  claimRef: {{namespace: {namespace}, name: models}}\n  capacity:")
    cluster.kubectl("apply", "-f", "-", input=pv)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cluster.kubectl("apply", "-n", namespace, "-f", str(path))

    cluster.kubectl("wait", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded",
                    "--timeout=60s", "tj/iris-train", "tj/iris-train-v2", "tj/pretrain-2x8",
                    "tj/finetune-1gpu")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s",
                    "mdep/iris", "mdep/iris-static", "mdep/iris-canary")

    table = cluster.kubectl("get", "kubeloop", "-n", namespace).stdout
    assert "trainingjob.kubeloop.io/iris-train" in table
    assert "modeldeployment.kubeloop.io/iris" in table
    assert "driftmonitor.kubeloop.io/iris-drift" in table
    header = cluster.kubectl("get", "tj", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "REASON", "WORKERS", "ACTIVE", "RESTARTS", "PROGRESS",
                      "METRIC", "AGE"]
    wide = cluster.kubectl("get", "mdep", "iris", "-n", namespace, "-o", "wide").stdout
    assert "pvc://models/iris/v1" in wide and f"http://iris.{namespace}.svc:8080" in wide

    explain = cluster.kubectl("explain", "tj.spec.maxRestarts").stdout
    assert "Gang restarts" in explain
    describe = cluster.kubectl("describe", "tj", "pretrain-2x8", "-n", namespace).stdout
    assert "Succeeded" in describe and "all 2 workers succeeded" in describe

    mdep = json.loads(cluster.kubectl("get", "mdep", "iris", "-n", namespace, "-o",
                                      "json").stdout)
    assert mdep["status"]["sourceTrainingJob"] == "iris-train"
    assert mdep["status"]["activeModelUri"] == "pvc://models/iris/v1"
    assert [(h["uri"], h["changedBy"], h["trainingJob"]) for h in mdep["status"]["history"]] == [
        ("pvc://models/iris/v1", "user", "iris-train")]

    for path in sorted(EXAMPLES.glob("*.yaml")):
        # The claim goes when no pod uses it any more (pvc-protection): do not wait on it.
        wait = "--wait=false" if path.name == "storage.yaml" else "--wait=true"
        cluster.kubectl("delete", "-n", namespace, "-f", str(path), wait)

    def nothing_left() -> bool:
        left = cluster.kubectl("get", "deploy,svc,hpa,jobs", "-n", namespace,
                               "-l", "app.kubernetes.io/managed-by=kubeloop", "-o",
                               "name").stdout.split()
        return not left

    wait_for(nothing_left, 60, "every child garbage-collected")
    cluster.kubectl("delete", "pv", f"models-{namespace}", "--wait=false", check=False)
