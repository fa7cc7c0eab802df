"""The operator never writes the spec of an object a user (or Git) applied: after every
kind has gone through its main paths, the API server's managedFields show the
operator's field manager only on the status subresource. The one exception is the
documented promotion of a retrained model (DriftMonitor onDrift.promote), under its own
field manager and only on spec.model / spec.canary of the target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.kubetest import HOLD, Cluster, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train

PROMOTER = "kubeloop-promoter"
# What the API server records for the test's own writes (the Python client's agent).
USER_MANAGERS = {"OpenAPI-Generator"}


def managers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["metadata"].get("managedFields") or [])


def test_operator_writes_only_status_of_users_objects(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    cluster.create(
        "TrainingJob",
        ns,
        "t",
        {
            "image": "t:1",
            "output": {"uri": "s3://m/t"},
            "maxRestarts": 1,
            # Runs until released, so that the suspend lands while it runs.
            "podMetadata": {"annotations": HOLD},
        },
    )
    cluster.wait_phase("TrainingJob", ns, "t", "Running", 30)
    cluster.patch_spec("TrainingJob", ns, "t", {"suspend": True})
    cluster.wait_phase("TrainingJob", ns, "t", "Suspended", 30)
    cluster.patch_spec("TrainingJob", ns, "t", {"suspend": False})
    cluster.wait_phase("TrainingJob", ns, "t", "Running", 30)
    cluster.release(ns, "t")
    cluster.wait_phase("TrainingJob", ns, "t", "Succeeded", 60)
    cluster.create(
        "ModelDeployment",
        ns,
        "m",
        {
            "model": {"fromTrainingJob": {"name": "t"}},
            "autoscaling": {"maxReplicas": 3},
            "canary": {"model": {"uri": "s3://m/c"}, "trafficPercent": 20},
        },
    )
    cluster.wait_phase("ModelDeployment", ns, "m", "Ready", 30)

    model = train(tmp_path / "v1")
    train(tmp_path / "d-retrain-1", shift=2.0)
    server = ModelServer(model, free_port(), name="live")
    server.start()
    try:
        cluster.create("ModelDeployment", ns, "live", {"model": {"uri": f"file://{model}"}})
        cluster.create(
            "DriftMonitor",
            ns,
            "d",
            {
                "modelDeployment": "live",
                "source": {"url": f"{server.url}/metrics"},
                "reference": {"url": f"{server.url}/v2/models/live/profile"},
                "interval": "1s",
                "minSamples": 100,
                "onDrift": {
                    "promote": True,
                    "retrain": {
                        "template": {
                            "image": "t:1",
                            "output": {"uri": f"file://{tmp_path}/{{trainingJob}}"},
                        }
                    },
                },
            },
        )
        wait_for(lambda: cluster.status("DriftMonitor", ns, "d").get("window"), 30, "baseline")
        server.send(shifted_rows(200, shift=2.0))
        wait_for(
            lambda: (
                (r := cluster.status("DriftMonitor", ns, "d").get("lastRetrain"))
                and r["result"] == "Promoted"
            ),
            60,
            "promoted",
        )
    finally:
        server.stop()

    users_objects = [
        ("TrainingJob", "t"),
        ("ModelDeployment", "m"),
        ("ModelDeployment", "live"),
        ("DriftMonitor", "d"),
    ]
    for kind, name in users_objects:
        for entry in managers(cluster.get(kind, ns, name)):
            if entry["manager"] == "kubeloop":
                assert entry.get("subresource") == "status", (kind, name, entry)
                assert set(json.loads(json.dumps(entry["fieldsV1"]))) == {"f:status"}
            elif entry["manager"] == PROMOTER:
                assert (kind, name) == ("ModelDeployment", "live"), entry
                assert set(entry["fieldsV1"]) == {"f:spec", "f:metadata"}, entry
                assert set(entry["fieldsV1"]["f:spec"]) <= {"f:model", "f:canary"}, entry
                # The promotion note for the deployment's history, and nothing else.
                assert entry["fieldsV1"]["f:metadata"] == {
                    "f:annotations": {".": {}, "f:kubeloop.io/promotion": {}}
                }, entry
            else:
                # The only other writer is the test itself, acting as the user, through
                # the Python client: an unknown manager is a writer nobody accounts for.
                assert entry["manager"] in USER_MANAGERS, (kind, name, entry)
                assert entry.get("subresource") != "status", (kind, name, entry)
    # The TrainingJob the monitor created is the operator's own object: it may own all.
    retrain = cluster.get("TrainingJob", ns, "d-retrain-1")
    assert retrain["metadata"]["ownerReferences"][0]["kind"] == "DriftMonitor"
