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

    # The batch run scores with the model the deployment serves (simulated pods here).
    cluster.kubectl("wait", "-n", namespace, "--for=jsonpath={.status.phase}=Succeeded",
                    "--timeout=60s", "bp/iris-nightly")
    bp = json.loads(cluster.kubectl("get", "bp", "iris-nightly", "-n", namespace, "-o",
                                    "json").stdout)
    assert bp["status"]["model"] == {"uri": "pvc://models/iris/v1",
                                     "source": "ModelDeployment/iris"}
    header = cluster.kubectl("get", "bp", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "REASON", "ROWS", "PROGRESS", "ROWS/S", "PODS", "AGE"]

    # The search's trials are TrainingJobs the operator creates; `kubectl get exp` is the
    # leaderboard (the simulated runs report no loss here: no best value).
    def trials_created() -> int | None:
        exp = json.loads(cluster.kubectl("get", "exp", "quadratic", "-n", namespace, "-o",
                                         "json").stdout)
        return ((exp.get("status") or {}).get("counts") or {}).get("total") or None

    wait_for(trials_created, 60, "the Experiment's first trials")
    assert cluster.kubectl("get", "tj", "quadratic-trial-0", "-n", namespace).returncode == 0
    header = cluster.kubectl("get", "exp", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "PHASE", "REASON", "METRIC", "BEST", "BEST", "TRIAL",
                              "TRIALS", "RUNNING", "AGE"]

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


def test_users_get_the_kinds_through_the_built_in_edit_and_view_roles(
    cluster: Cluster, chart: str, namespace: str
) -> None:
    """By Kubernetes' convention: a RoleBinding of the built-in `edit` in a namespace
    lets its user create, change and delete every namespaced kind there, `view` lets
    them read; ComputeTemplates are readable by every signed-in user and written by
    cluster administrators only. Asked of the real API server as those users
    (impersonation)."""
    ns = namespace
    cluster.kubectl("create", "rolebinding", "ml-edit", "--clusterrole=edit",
                    "--group=ml-team", "-n", ns)
    cluster.kubectl("create", "rolebinding", "bob-view", "--clusterrole=view",
                    "--user=bob", "-n", ns)
    alice = ["--as=alice", "--as-group=ml-team"]
    bob, carol = ["--as=bob"], ["--as=carol"]  # carol has no binding at all

    def can(who: list[str], *what: str) -> str:
        return cluster.kubectl("auth", "can-i", *what, "-n", ns, *who,
                               check=False).stdout.strip()

    # The aggregation controller copies the chart's rules into edit and view.
    wait_for(lambda: can(alice, "create", "driftmonitors.kubeloop.io") == "yes"
             and can(bob, "list", "driftmonitors.kubeloop.io") == "yes", 30,
             "the chart's rules aggregated into edit and view")

    specs = {
        "TrainingJob": {"image": "t:1", "suspend": True},
        "ModelDeployment": {"model": {"uri": "s3://m/v1"}},
        "DriftMonitor": {"modelDeployment": "by-alice"},
    }

    def manifest(kind: str, name: str, spec: dict[str, object]) -> str:
        return json.dumps({"apiVersion": "kubeloop.io/v1alpha1", "kind": kind,
                           "metadata": {"name": name}, "spec": spec})

    def as_user(who: list[str], *args: str, input: str | None = None) -> tuple[int, str]:
        done = cluster.kubectl(*who, *args, "-n", ns, input=input, check=False)
        return done.returncode, done.stdout + done.stderr

    for kind, spec in specs.items():
        code, out = as_user(alice, "create", "-f", "-", input=manifest(kind, "by-alice", spec))
        assert code == 0, f"edit cannot create a {kind}: {out}"
        code, out = as_user(bob, "create", "-f", "-", input=manifest(kind, "by-bob", spec))
        assert code != 0 and "forbidden" in out, f"view created a {kind}: {out}"
        for who in (alice, bob):
            code, out = as_user(who, "get", kind.lower(), "by-alice", "-o", "name")
            assert code == 0 and "by-alice" in out, out
        code, out = as_user(carol, "get", kind.lower())
        assert code != 0 and "forbidden" in out, f"anyone may list {kind}s: {out}"
    code, out = as_user(alice, "patch", "trainingjob", "by-alice", "--type=merge",
                        "-p", '{"spec": {"suspend": false}}')
    assert code == 0, out
    # Status is the operator's: not even edit writes it.
    code, out = as_user(alice, "patch", "trainingjob", "by-alice", "--subresource=status",
                        "--type=merge", "-p", '{"status": {"phase": "Succeeded"}}')
    assert code != 0 and "forbidden" in out, out
    code, out = as_user(bob, "get", "kubeloop", "-o", "name")
    assert code == 0 and "trainingjob.kubeloop.io/by-alice" in out, out

    template = json.dumps({"apiVersion": "kubeloop.io/v1alpha1", "kind": "ComputeTemplate",
                           "metadata": {"name": f"by-user-{ns}"},
                           "spec": {"description": "not allowed"}})
    for who in (alice, bob, carol):
        code, out = as_user(who, "get", "computetemplates")
        assert code == 0, f"{who} cannot read the ComputeTemplates: {out}"
        code, out = as_user(who, "create", "-f", "-", input=template)
        assert code != 0 and "forbidden" in out, f"{who} created a ComputeTemplate: {out}"
    code, out = as_user(alice, "delete", "driftmonitor", "by-alice")
    assert code == 0, out


def test_a_user_who_cannot_make_pods_gets_no_more_through_the_operator(
    cluster: Cluster, chart: str, namespace: str
) -> None:
    """The confused deputy: dave may create TrainingJobs (the chart's own role, bound
    alone) but no pods. The chart's pod-security policies refuse, at apply time, the
    hostPath volume, the namespace's other service account and root he asks for, naming
    each; the same run without them is accepted (docs/operations.md, "Pod security")."""
    ns = namespace
    cluster.kubectl("create", "rolebinding", "dave-kubeloop", f"--clusterrole={chart}-edit",
                    "--user=dave", "-n", ns)
    cluster.kubectl("create", "serviceaccount", "deployer", "-n", ns)
    dave = ["--as=dave"]

    def can(*what: str) -> str:
        return cluster.kubectl("auth", "can-i", *what, "-n", ns, *dave,
                               check=False).stdout.strip()

    wait_for(lambda: can("create", "trainingjobs.kubeloop.io") == "yes", 30, "dave's binding")
    assert can("create", "pods") == "no"

    def apply(spec: dict[str, object]) -> tuple[int, str]:
        text = json.dumps({"apiVersion": "kubeloop.io/v1alpha1", "kind": "TrainingJob",
                           "metadata": {"name": "by-dave"}, "spec": spec})
        done = cluster.kubectl(*dave, "create", "-f", "-", "-n", ns, input=text, check=False)
        return done.returncode, done.stdout + done.stderr

    plain: dict[str, object] = {"image": "t:1", "suspend": True}
    code, out = apply({**plain, "runAsRoot": True, "serviceAccountName": "deployer",
                       "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
                       "volumeMounts": [{"name": "host", "mountPath": "/host"}]})
    assert code != 0, f"dave got a hostPath, root and another account: {out}"
    assert f"ValidatingAdmissionPolicy '{chart}-pod-security-trainingjobs'" in out, out
    for words in ("spec.volumes: host is a hostPath volume",
                  "spec.serviceAccountName is deployer", "spec.runAsRoot is true"):
        assert f"{words}, which Pod Security restricted does not allow" in out, out
    code, out = apply(plain)
    assert code == 0, out
