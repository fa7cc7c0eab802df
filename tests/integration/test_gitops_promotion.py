"""The closed loop under GitOps, against what Flux does: the ModelDeployment and the
DriftMonitor are applied as Flux's kustomize-controller applies them (server-side
apply, forced, field manager `kustomize-controller`). With `onDrift.promoteWith:
Annotation` a promotion leaves Git's spec alone; Git's next sync (the same manifest
forced again, with an unrelated change so that the deployment is reconciled anew)
leaves the promoted model serving; a commit of a new model takes over; the history
records all three."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.kubetest import Cluster, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train

DM, MD = "DriftMonitor", "ModelDeployment"
FLUX = "kustomize-controller"
PROMOTER = "kubeloop-promoter"


def git_manifests(
    namespace: str, model: str, server: ModelServer, out: Path, replicas: int = 1
) -> str:
    """What the Git repository holds: the deployment (its policy and baseline model)
    and the monitor that closes the loop over it."""
    deployment = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": MD,
        "metadata": {"name": "iris", "namespace": namespace},
        "spec": {"model": {"uri": model}, "replicas": replicas},
    }
    monitor = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": DM,
        "metadata": {"name": "d", "namespace": namespace},
        "spec": {
            "modelDeployment": "iris",
            "source": {"url": f"{server.url}/metrics"},
            "reference": {"url": f"{server.url}/v2/models/iris/profile"},
            "interval": "1s",
            "minSamples": 200,
            "onDrift": {
                "promote": True,
                "promoteWith": "Annotation",
                "retrain": {
                    "cooldown": "1h",
                    "template": {
                        "image": "registry.local/train:1",
                        "output": {"uri": f"file://{out}/{{trainingJob}}"},
                        "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
                    },
                },
            },
        },
    }
    return yaml.safe_dump_all([deployment, monitor])


def flux_apply(cluster: Cluster, manifests: str) -> None:
    """Server-side apply with force, as Flux's kustomize-controller does."""
    cluster.apply_as(FLUX, manifests)


def serving(cluster: Cluster, namespace: str) -> str | None:
    """The model the stable Deployment's pods load."""
    dep = cluster.apps.read_namespaced_deployment("iris", namespace)
    return (dep.metadata.annotations or {}).get("kubeloop.io/model-uri")


def reconciled(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    md = cluster.get(MD, namespace, "iris")
    status = md.get("status") or {}
    return status if status.get("observedGeneration") == md["metadata"]["generation"] else None


def test_a_promotion_survives_git_sync_and_a_git_commit_takes_over(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    model_v1 = train(tmp_path / "v1")
    retrained = f"file://{train(tmp_path / 'd-retrain-1', shift=2.0)}"
    git_v1, git_v3 = f"file://{model_v1}", f"file://{tmp_path}/v3"
    server = ModelServer(model_v1, free_port(), name="iris")
    server.start()
    try:
        flux_apply(cluster, git_manifests(ns, git_v1, server, tmp_path))
        wait_for(lambda: serving(cluster, ns) == git_v1, 30, "Git's model deployed")
        wait_for(lambda: cluster.status(DM, ns, "d").get("window"), 30, "baseline")
        server.send(shifted_rows(300, shift=2.0))
        wait_for(
            lambda: (
                (r := cluster.status(DM, ns, "d").get("lastRetrain")) and r["result"] == "Promoted"
            ),
            60,
            "drift, retrain, promotion",
        )
        wait_for(lambda: serving(cluster, ns) == retrained, 30, "the retrained model deployed")
        # The children are applied before the status is written: wait for that write.
        md = wait_for(
            lambda: (m := cluster.get(MD, ns, "iris"))["status"].get("activeModelUri") == retrained
            and m, 30, "the promoted model in the ModelDeployment's status")
        assert md["spec"]["model"] == {"uri": git_v1, "format": "sklearn"}, "Git's spec kept"
        resolved = cluster.condition(MD, ns, "iris", "ModelResolved")
        assert resolved and "promoted by DriftMonitor/d" in resolved["message"]
        # The promoter owns its annotation and nothing of the spec.
        owned = {e["manager"]: e["fieldsV1"] for e in md["metadata"]["managedFields"]}
        assert set(owned[PROMOTER]) == {"f:metadata"}, owned[PROMOTER]
        assert "f:spec" in owned[FLUX]

        # Git's next sync: the same manifest forced again, with a change elsewhere
        # (replicas), so that the deployment is reconciled on Git's spec anew.
        flux_apply(cluster, git_manifests(ns, git_v1, server, tmp_path, replicas=2))
        status = wait_for(lambda: reconciled(cluster, ns), 30, "the synced spec reconciled")
        assert status["activeModelUri"] == retrained and status["replicas"] == 2
        assert serving(cluster, ns) == retrained
        assert json.loads(
            cluster.get(MD, ns, "iris")["metadata"]["annotations"]["kubeloop.io/promotion"]
        )["uri"] == retrained

        # A user's commit of a new model: Git wins.
        flux_apply(cluster, git_manifests(ns, git_v3, server, tmp_path, replicas=2))
        wait_for(lambda: serving(cluster, ns) == git_v3, 30, "Git's new model deployed")
        status = wait_for(lambda: reconciled(cluster, ns), 30, "the commit reconciled")
        assert status["activeModelUri"] == git_v3
        assert [(h["uri"], h["changedBy"]) for h in status["history"]] == [
            (git_v3, "user"),
            (retrained, "DriftMonitor/d"),
            (git_v1, "user"),
        ]
        # The sync after the commit does not bring the old promotion back.
        flux_apply(cluster, git_manifests(ns, git_v3, server, tmp_path, replicas=1))
        status = wait_for(lambda: reconciled(cluster, ns), 30, "the next sync reconciled")
        assert status["activeModelUri"] == git_v3 and serving(cluster, ns) == git_v3
    finally:
        server.stop()
