"""The chart's RBAC is enough for every main path of the four kinds (the operator
runs as the chart's ServiceAccount: a refusal fails the session), a ServiceAccount
without the binding is refused, and with watchNamespaces the operator acts nowhere
else."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from e2e.conftest import SYSTEM_NS, OperatorProcess, helm, managers, token_kubeconfig
from kubeloop.api.crdgen import UNOBSERVED_STATUS
from kubeloop.names import API_VERSION, GROUP, VERSION
from tests.kubetest import ROOT, Cluster, stays, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train


def test_all_four_kinds_through_their_main_paths(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    # ComputeTemplate (cluster-scoped): counted in its status; a TrainingJob that names it.
    template = f"lp-{ns}"
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "computetemplates", {
        "apiVersion": API_VERSION, "kind": "ComputeTemplate", "metadata": {"name": template},
        "spec": {"cpu": "1", "maxWorkers": 1}})
    try:
        wait_for(lambda: "fitsNow" in (cluster.custom.get_cluster_custom_object(
            GROUP, VERSION, "computetemplates", template).get("status") or {}),
            60, "the template counted")
        cluster.create("TrainingJob", ns, "sized", {
            "image": "t:1", "compute": template, "output": {"uri": "s3://m/sized"}})
        sized = cluster.wait_phase("TrainingJob", ns, "sized", "Succeeded", 60)
        assert sized["compute"]["name"] == template
    finally:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "computetemplates", template)

    # TrainingJob: success, and a failing gang that restarts (Job delete + create).
    cluster.create("TrainingJob", ns, "ok", {"image": "t:1", "output": {"uri": "s3://m/ok"}})
    cluster.create("TrainingJob", ns, "bad", {
        "image": "t:1", "maxRestarts": 1,
        "podMetadata": {"annotations": {"kubeloop.io/fake-exit-code": "2"}}})
    cluster.wait_phase("TrainingJob", ns, "ok", "Succeeded", 60)
    failed = cluster.wait_phase("TrainingJob", ns, "bad", "Failed", 60)
    assert failed["restarts"] == 1

    # ModelDeployment: lineage, HPA, canary; then promotion (canary Deployment deleted).
    cluster.create("ModelDeployment", ns, "svc", {
        "model": {"fromTrainingJob": {"name": "ok"}},
        "autoscaling": {"maxReplicas": 4},
        "canary": {"model": {"uri": "s3://m/v2"}, "trafficPercent": 50}})
    cluster.wait_phase("ModelDeployment", ns, "svc", "Ready", 60)
    cluster.kubectl("patch", "mdep", "svc", "-n", ns, "--type=json", "-p", json.dumps([
        {"op": "remove", "path": "/spec/canary"}]))
    wait_for(lambda: not cluster.apps.list_namespaced_deployment(
        ns, label_selector="kubeloop.io/track=canary").items, 30, "canary removed")

    # DriftMonitor: reference from a ConfigMap, live source on loopback, retrain, promote.
    model = train(tmp_path / "v1")
    retrained = train(tmp_path / "dm-retrain-1", shift=2.0)
    cluster.kubectl("create", "configmap", "ref", "-n", ns,
                    f"--from-file=profile.json={model / 'profile.json'}")
    server = ModelServer(model, free_port(), name="live")
    server.start()
    try:
        cluster.create("ModelDeployment", ns, "live", {"model": {"uri": f"file://{model}"}})
        cluster.create("DriftMonitor", ns, "dm", {
            "modelDeployment": "live",
            "source": {"url": f"{server.url}/metrics"},
            "reference": {"configMap": {"name": "ref"}},
            "interval": "1s", "minSamples": 100,
            "onDrift": {"promote": True, "retrain": {"template": {
                "image": "t:1", "output": {"uri": f"file://{tmp_path}/{{trainingJob}}"}}}}})
        wait_for(lambda: cluster.status("DriftMonitor", ns, "dm").get("window"), 30, "baseline")
        server.send(shifted_rows(200, shift=2.0))
        wait_for(lambda: (r := cluster.status("DriftMonitor", ns, "dm").get("lastRetrain"))
                 and r["result"] == "Promoted", 60, "retrained and promoted")
        assert cluster.get("ModelDeployment", ns, "live")["spec"]["model"]["uri"] == (
            f"file://{retrained}")
    finally:
        server.stop()


def test_service_account_without_binding_is_refused(cluster: Cluster, namespace: str,
                                                    tmp_path: Path) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = token_kubeconfig(cluster, namespace, "nobody", tmp_path / "kubeconfig")
    result = cluster.kubectl("--kubeconfig", str(kubeconfig), "get", "trainingjobs", "-n",
                             namespace, check=False)
    assert result.returncode != 0 and "forbidden" in result.stderr.lower()
    result = cluster.kubectl("--kubeconfig", str(kubeconfig), "create", "job", "x", "-n",
                             namespace, "--image=busybox", check=False)
    assert "forbidden" in result.stderr.lower()


def test_watch_namespaces_confines_the_operator(
    cluster: Cluster, tmp_path: Path, alone: None
) -> None:
    """With no other operator running: the scoped one does the work inside (its own
    field manager is on the Job), and nothing at all happens outside."""
    inside, outside = cluster.new_namespace(), cluster.new_namespace()
    release = "scoped"
    helm(cluster, "install", release, str(ROOT / "charts" / "kubeloop"), "--namespace",
         SYSTEM_NS, "--create-namespace", "--set", f"watchNamespaces={{{inside}}}",
         "--set", "replicas=1",
         "--wait", "--timeout", "120s")
    op = None
    try:
        account = f"{release}-kubeloop"
        kubeconfig = token_kubeconfig(cluster, SYSTEM_NS, account, tmp_path / "kubeconfig")
        sa = f"system:serviceaccount:{SYSTEM_NS}:{account}"
        can = cluster.kubectl("auth", "can-i", "create", "jobs.batch", "-n", inside,
                              "--as", sa, check=False).stdout.strip()
        cannot = cluster.kubectl("auth", "can-i", "create", "jobs.batch", "-n", outside,
                                 "--as", sa, check=False).stdout.strip()
        assert (can, cannot) == ("yes", "no")
        assert cluster.kubectl("auth", "can-i", "get", "secrets", "-n", inside, "--as", sa,
                               check=False).stdout.strip() == "no"
        op = OperatorProcess(kubeconfig, tmp_path / "op.log", "--namespace", inside,
                             field_manager="kubeloop-scoped")
        cluster.create("TrainingJob", outside, "out", {"image": "t:1"})
        cluster.create("TrainingJob", inside, "in", {"image": "t:1"})
        cluster.wait_phase("TrainingJob", inside, "in", "Succeeded", 60)
        job = cluster.batch.read_namespaced_job("in-r0", inside)
        assert "kubeloop-scoped" in managers(job), managers(job)
        assert "kubeloop-scoped" in managers(cluster.get("TrainingJob", inside, "in"))

        def untouched() -> bool:
            # No status but the CRD's defaults: the operator never wrote one there.
            observed = cluster.status("TrainingJob", outside, "out").get("observedGeneration")
            return (observed == UNOBSERVED_STATUS["observedGeneration"]
                    and not cluster.batch.list_namespaced_job(outside).items)

        stays(untouched, 10, f"nothing done in {outside}")
        assert not op.forbidden(), op.forbidden()[:10]
    finally:
        if op is not None:
            op.stop()
        helm(cluster, "uninstall", release, "--namespace", SYSTEM_NS, "--wait", check=False)
        for ns in (inside, outside):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_rendered_chart_is_valid_for_the_api_server(cluster: Cluster, chart: str) -> None:
    for values in ([], ["--set", "replicas=3", "--set", "watchNamespaces={a,b}",
                        "--set", "driftSourceAllowlist={http://prometheus:9090}",
                        "--set", "metrics.service.enabled=false"]):
        rendered = helm(cluster, "template", "validate", str(ROOT / "charts" / "kubeloop"),
                        "--namespace", SYSTEM_NS, *values).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "ServiceAccount", "ClusterRole"} <= kinds
        for doc in docs:
            if doc["kind"] in ("CustomResourceDefinition", "ClusterKopfPeering", "KopfPeering"):
                continue  # checked by the API server when installed; peering needs its CRD
            ns_args = [] if doc["kind"].startswith("Cluster") else [
                "-n", doc["metadata"].get("namespace", SYSTEM_NS)]
            result = cluster.kubectl("create", "--dry-run=server", "-o", "name", *ns_args,
                                     "-f", "-", input=yaml.safe_dump(doc), check=False)
            ok = result.returncode == 0 or "already exists" in result.stderr or (
                "not found" in result.stderr and "namespaces" in result.stderr)
            assert ok, f"{doc['kind']} {doc['metadata']['name']}: {result.stderr}"


def test_bad_values_are_rejected_by_the_schema(cluster: Cluster) -> None:
    for bad, message in (
        (["--set", "replicas=0"], "minimum: got 0, want 1"),
        (["--set", "logLevel=LOUD"], "logLevel"),
        (["--set", "watchNamespaces={Bad_NS}"], "watchNamespaces"),
        (["--set", "driftSourceAllowlist={ftp://x}"], "driftSourceAllowlist"),
        (["--set", "surprise=1"], "additional properties 'surprise' not allowed"),
    ):
        result = helm(cluster, "template", "x", str(ROOT / "charts" / "kubeloop"), *bad,
                      check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_upgrade_then_uninstall_leaves_nothing_behind(cluster: Cluster) -> None:
    release, ns = "lifecycle", "kubeloop-lifecycle"
    chart = str(ROOT / "charts" / "kubeloop")
    helm(cluster, "install", release, chart, "--namespace", ns, "--create-namespace",
         "--wait", "--timeout", "120s")
    helm(cluster, "upgrade", release, chart, "--namespace", ns, "--set", "logLevel=DEBUG",
         "--set", "metrics.service.enabled=false", "--wait", "--timeout", "120s")
    dep = cluster.apps.read_namespaced_deployment(f"{release}-kubeloop", ns)
    assert "--log-level=DEBUG" in dep.spec.template.spec.containers[0].args
    assert not cluster.core.list_namespaced_service(
        ns, label_selector=f"app.kubernetes.io/instance={release}").items
    helm(cluster, "uninstall", release, "--namespace", ns, "--wait")
    selector = f"app.kubernetes.io/instance={release}"
    left = cluster.kubectl("get", "all,sa,role,rolebinding", "-n", ns, "-l", selector,
                           "-o", "name").stdout.split()
    left += [r for r in cluster.kubectl("get", "clusterrole,clusterrolebinding", "-l",
                                        selector, "-o", "name").stdout.split()]
    assert left == []
    # CRDs stay (Helm never deletes them) so that no user's resources are lost.
    assert cluster.kubectl("get", "crd", "trainingjobs.kubeloop.io", check=False).returncode == 0
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
