"""Kubeloop driven by Flux's real controllers from a git repository on loopback: Flux's
own health assessment (kstatus) of our statuses gates the Kustomization, a model that
cannot load makes it unhealthy with our message, prune removes the children, and the
closed loop runs under GitOps (`promoteWith: Annotation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.gitops.conftest import Repo
from tests.kubetest import Cluster, or_none, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train

API = "kubeloop.io/v1alpha1"
MD, TJ, DM = "ModelDeployment", "TrainingJob", "DriftMonitor"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def phase(cluster: Cluster, namespace: str, kind: str, name: str) -> str | None:
    found = or_none(cluster.get, kind, namespace, name)
    return ((found or {}).get("status") or {}).get("phase")


def serving(cluster: Cluster, namespace: str, name: str) -> str | None:
    dep = or_none(cluster.apps.read_namespaced_deployment, name, namespace)
    return (dep.metadata.annotations or {}).get("kubeloop.io/model-uri") if dep else None


def test_health_gates_the_sync_an_unloadable_model_fails_it_and_prune_removes_children(
    cluster: Cluster, namespace: str, repo: Repo
) -> None:
    ns = namespace
    training = obj(TJ, "t", {
        "image": "registry.local/train:1", "output": {"uri": "s3://m/t"},
        "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "5s"}},
    })
    served = obj(MD, "m", {"model": {"fromTrainingJob": {"name": "t"}},
                           "autoscaling": {"minReplicas": 1, "maxReplicas": 2}})
    revision = repo.commit("train and serve", train=[training], serve=[served])
    repo.connect()

    # Ready only once the ModelDeployment is Ready, which waits for the TrainingJob.
    seen: list[tuple[str | None, str | None, str | None]] = []

    def synced() -> bool:
        ks = repo.kustomization().get("status") or {}
        ready = repo.ready().get("status") if ks.get("lastAttemptedRevision") == revision \
            else None
        seen.append((ready, phase(cluster, ns, TJ, "t"), phase(cluster, ns, MD, "m")))
        return ready == "True"

    wait_for(synced, 120, "the Kustomization Ready")
    assert seen[-1][1:] == ("Succeeded", "Ready"), seen[-1]
    assert any(r != "True" and tj in ("Pending", "Running") for r, tj, _ in seen), seen
    assert repo.ready()["message"].startswith(f"Applied revision: {revision}")

    # A model that cannot load: the fetch fails in every pod (kwok's stage for this URI).
    broken = obj(MD, "broken", {"model": {"uri": "s3://kwok/broken-model"}, "replicas": 1})
    revision = repo.commit("a model that cannot load", broken=[broken])
    repo.reconcile()
    failed = repo.wait_applied(revision, "False")
    # Flux names the resource and kstatus' verdict (from our Stalled condition), failing
    # early rather than at its timeout; the why is in our status, where Flux points.
    assert failed["reason"] == "HealthCheckFailed", failed
    assert f"ModelDeployment/{ns}/broken status: 'Failed'" in failed["message"], failed
    assert "failed early due to stalled resources" in failed["message"], failed
    ours = cluster.condition(MD, ns, "broken", "Stalled")
    assert ours and ours["reason"] == "PodsCrashing", ours
    assert "fetch-model" in ours["message"] and "sha256 mismatch" in ours["message"], ours

    # The fix: healthy again.
    broken["spec"]["model"]["uri"] = "s3://m/fixed"
    revision = repo.commit("fix the model", broken=[broken])
    repo.reconcile()
    repo.wait_applied(revision, "True")

    # Prune: the ModelDeployment removed from Git goes, and its children with it.
    for name in ("m",):
        assert cluster.apps.read_namespaced_deployment(name, ns)
        assert cluster.core.read_namespaced_service(name, ns)
        assert cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, ns)
    revision = repo.commit("stop serving m", serve=None)
    repo.reconcile()
    repo.wait_applied(revision, "True")

    def gone() -> bool:
        return all(
            or_none(read, "m", ns) is None
            for read in (
                lambda n, s: cluster.get(MD, s, n),
                cluster.apps.read_namespaced_deployment,
                cluster.core.read_namespaced_service,
                cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            )
        )

    wait_for(gone, 60, "ModelDeployment m, its Deployment, Service and HPA gone")
    assert serving(cluster, ns, "broken") == "s3://m/fixed"


def test_the_closed_loop_runs_under_flux(
    cluster: Cluster, namespace: str, repo: Repo, tmp_path: Path
) -> None:
    ns = namespace
    model_v1 = train(tmp_path / "v1")
    retrained = f"file://{train(tmp_path / 'd-retrain-1', shift=2.0)}"
    git_v1, git_v3 = f"file://{model_v1}", f"file://{tmp_path}/v3"
    server = ModelServer(model_v1, free_port(), name="iris")
    server.start()

    def manifests(model: str) -> dict[str, list[dict[str, Any]]]:
        monitor = obj(DM, "d", {
            "modelDeployment": "iris",
            "source": {"url": f"{server.url}/metrics"},
            "reference": {"url": f"{server.url}/v2/models/iris/profile"},
            "interval": "1s", "minSamples": 200,
            "onDrift": {"promote": True, "promoteWith": "Annotation", "retrain": {
                "cooldown": "1h", "template": {
                    "image": "registry.local/train:1",
                    "output": {"uri": f"file://{tmp_path}/{{trainingJob}}"},
                    "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
                }}},
        })
        return {"serve": [obj(MD, "iris", {"model": {"uri": model}})], "monitor": [monitor]}

    try:
        revision = repo.commit("serve and watch", **manifests(git_v1))
        repo.connect()
        repo.wait_applied(revision, "True")
        assert serving(cluster, ns, "iris") == git_v1
        wait_for(lambda: cluster.status(DM, ns, "d").get("window"), 30, "baseline")

        server.send(shifted_rows(300, shift=2.0))
        wait_for(
            lambda: (r := cluster.status(DM, ns, "d").get("lastRetrain"))
            and r["result"] == "Promoted",
            60,
            "drift, retrain, promotion",
        )
        wait_for(lambda: serving(cluster, ns, "iris") == retrained, 30, "the retrained model")

        # A forced sync of Git's unchanged spec: the promoted model still serves, and the
        # Kustomization stays Ready (no drift to correct: the promotion is no field of Git's).
        token = repo.reconcile()
        wait_for(
            lambda: (repo.kustomization().get("status") or {}).get("lastHandledReconcileAt")
            == token,
            60,
            "the forced reconcile handled",
        )
        assert repo.ready()["status"] == "True", repo.ready()
        md = cluster.get(MD, ns, "iris")
        assert md["spec"]["model"]["uri"] == git_v1
        assert md["status"]["activeModelUri"] == retrained
        assert serving(cluster, ns, "iris") == retrained

        # A user's commit of a new model takes over.
        revision = repo.commit("a new model", **manifests(git_v3))
        repo.reconcile()
        repo.wait_applied(revision, "True")
        assert serving(cluster, ns, "iris") == git_v3
        history = cluster.status(MD, ns, "iris")["history"]
        assert [(h["uri"], h["changedBy"]) for h in history] == [
            (git_v3, "user"), (retrained, "DriftMonitor/d"), (git_v1, "user")]
    finally:
        server.stop()
