"""Pod security on the local control plane (docs/operations.md, "Pod security"):

- the admission policies refuse, at apply time, a TrainingJob, a ModelDeployment or a
  DriftMonitor's retrain template that asks for more than Pod Security restricted
  (other volume kinds, another service account, root), unless the ComputeTemplate it
  names allows it in its namespace;
- the operator refuses to run what the policies could not see (a template that did not
  exist yet at apply time) and runs it once the template allows it;
- every pod the operator makes by default is accepted in a namespace that enforces
  restricted (`pod-security.kubernetes.io/enforce=restricted`): the API server's own
  Pod Security admission checks each pod as the Job and ReplicaSet controllers create
  it, and a pod it refuses shows as the Job's `FailedCreate` Event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kubeloop.api.driftmonitor import Evaluate
from kubeloop.render import evaluation
from tests.kubetest import GROUP, HOLD, ROOT, VERSION, Cluster, wait_for

TJ, MD, DM, CT = "TrainingJob", "ModelDeployment", "DriftMonitor", "ComputeTemplate"
POLICIES = ROOT / "admission" / "kubeloop-pod-security.yaml"
PREFIX = "itest-pod-security-"
HOST = {"name": "data", "hostPath": {"path": "/data"}}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
APPARMOR = "container.apparmor.security.beta.kubernetes.io/worker"


def manifest(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def apply(cluster: Cluster, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply", "-f", "-", input=manifest(kind, namespace, name, spec), check=False
    )


def create_template(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": CT, "metadata": {"name": name},
            "spec": spec}
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "computetemplates", body)


def delete_template(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "computetemplate", name, "--ignore-not-found", check=False)


def tj(**extra: Any) -> dict[str, Any]:
    return {"image": "registry.local/train:1", **extra}


def retrain(**extra: Any) -> dict[str, Any]:
    return {"modelDeployment": "m", "onDrift": {"retrain": {"template": tj(**extra)}}}


@pytest.fixture(scope="module", autouse=True)
def admission_policies(cluster: Cluster) -> Iterator[None]:
    """The policies as the chart installs them, under this module's own names; enforced
    once a server-side dry run of each kind's probe is refused (a new policy takes a
    moment to be enforced)."""
    text = POLICIES.read_text().replace("kubeloop-pod-security-", PREFIX)
    cluster.kubectl("apply", "-f", "-", input=text)
    probe = "itest-ps-probe"
    create_template(cluster, probe, {"cpu": "1"})
    probes = [
        (TJ, tj(volumes=[HOST])),
        (TJ, tj(compute=probe, volumes=[HOST])),
        (MD, {"model": {"uri": "s3://m/1"}, "serviceAccountName": "admin"}),
        (MD, {"model": {"uri": "s3://m/1"}, "compute": probe, "serviceAccountName": "admin"}),
        (DM, retrain(runAsRoot=True)),
        (DM, retrain(compute=probe, runAsRoot=True)),
    ]

    def refused(kind: str, spec: dict[str, Any]) -> bool:
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-",
            input=manifest(kind, "default", "probe", spec), check=False,
        )
        return result.returncode != 0 and PREFIX in result.stderr

    try:
        for kind, spec in probes:
            wait_for(lambda k=kind, s=spec: refused(k, s), 30, f"the {kind} policy enforced")
    finally:
        delete_template(cluster, probe)
    yield
    cluster.kubectl("delete", "-f", "-", input=text, check=False)


def restricted_says(prefix: str, what: str, field: str) -> str:
    return (
        f"{prefix}.{what}, which Pod Security restricted does not allow: name a "
        f"ComputeTemplate that allows it in {prefix}.compute (podSecurity.{field})"
    )


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        (TJ, tj(volumes=[HOST]),
         restricted_says("spec", "volumes: data is a hostPath volume", "volumeTypes")),
        (TJ, tj(serviceAccountName="admin"),
         restricted_says("spec", "serviceAccountName is admin", "serviceAccountNames")),
        (TJ, tj(runAsRoot=True), restricted_says("spec", "runAsRoot is true", "runAsRoot")),
        (TJ, tj(podMetadata={"annotations": {APPARMOR: "unconfined", "team": "a"}}),
         f"spec.podMetadata.annotations: {APPARMOR} is unconfined, which Pod Security "
         "restricted does not allow (runtime/default or localhost/<profile>)"),
        (MD, {"model": {"uri": "s3://m/1"}, "serviceAccountName": "admin"},
         restricted_says("spec", "serviceAccountName is admin", "serviceAccountNames")),
        (DM, retrain(volumes=[HOST]),
         restricted_says("spec.onDrift.retrain.template", "volumes: data is a hostPath volume",
                         "volumeTypes")),
    ],
    ids=["tj-hostpath", "tj-account", "tj-root", "tj-apparmor", "md-account", "dm-hostpath"],
)
def test_beyond_restricted_is_refused_at_apply_time(
    cluster: Cluster, namespace: str, kind: str, spec: dict[str, Any], message: str
) -> None:
    result = apply(cluster, namespace, kind, "wide", spec)
    assert result.returncode != 0, f"{kind} {spec} was accepted"
    assert f"ValidatingAdmissionPolicy '{PREFIX}" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    # What restricted allows passes: its volume kinds, the default account.
    plain = apply(cluster, namespace, TJ, "plain", tj(
        serviceAccountName="default",
        podMetadata={"annotations": {APPARMOR: "runtime/default"}},
        volumes=[{"name": "scratch", "emptyDir": {}},
                 {"name": "d", "persistentVolumeClaim": {"claimName": "d"}}],
    ))
    assert plain.returncode == 0, plain.stderr


def test_every_refusal_is_reported_in_one_apply(cluster: Cluster, namespace: str) -> None:
    result = apply(cluster, namespace, TJ, "wide", tj(
        volumes=[HOST, {"name": "n", "nfs": {"server": "s", "path": "/"}}],
        serviceAccountName="admin", runAsRoot=True,
    ))
    assert result.returncode != 0
    for message in (
        restricted_says("spec", "volumes: data is a hostPath volume", "volumeTypes"),
        restricted_says("spec", "volumes: n is a nfs volume", "volumeTypes"),
        restricted_says("spec", "serviceAccountName is admin", "serviceAccountNames"),
        restricted_says("spec", "runAsRoot is true", "runAsRoot"),
    ):
        assert message in result.stderr, (message, result.stderr)


def test_a_template_allows_more_in_its_namespaces_only(cluster: Cluster, namespace: str) -> None:
    name = f"wide-{namespace}"
    create_template(cluster, name, {"podSecurity": {
        "namespaces": [namespace], "volumeTypes": ["hostPath"],
        "serviceAccountNames": ["trainer"], "runAsRoot": True,
    }})
    other = cluster.new_namespace()
    try:
        wide = tj(compute=name, volumes=[HOST], serviceAccountName="trainer", runAsRoot=True)
        accepted = apply(cluster, namespace, TJ, "wide", wide)
        assert accepted.returncode == 0, accepted.stderr
        dm = apply(cluster, namespace, DM, "loop", retrain(**wide))
        assert dm.returncode == 0, dm.stderr
        elsewhere = apply(cluster, other, TJ, "wide", wide)
        assert elsewhere.returncode != 0, "the template's allowances held in another namespace"
        for what, field in (
            ("volumes: data is a hostPath volume", "volumeTypes"),
            ("serviceAccountName is trainer", "serviceAccountNames"),
            ("runAsRoot is true", "runAsRoot"),
        ):
            assert (
                f"spec.{what}, which ComputeTemplate {name} does not allow in namespace "
                f"{other} (podSecurity.{field})"
            ) in elsewhere.stderr, elsewhere.stderr
        # What the template does not list stays refused in its own namespace too.
        nfs = apply(cluster, namespace, TJ, "nfs", tj(
            compute=name, volumes=[{"name": "n", "nfs": {"server": "s", "path": "/"}}]
        ))
        assert nfs.returncode != 0 and "n is a nfs volume" in nfs.stderr, nfs.stderr
        # The operator agrees: the allowed run gets its Job, hostPath and all.
        job = wait_for(
            lambda: cluster.batch.list_namespaced_job(
                namespace, label_selector="kubeloop.io/training-job=wide").items,
            30, "the allowed run's Job",
        )[0]
        pod = job.spec.template.spec
        assert pod.volumes[0].host_path.path == "/data"
        assert pod.service_account_name == "trainer"
    finally:
        cluster.delete_namespace(other)
        delete_template(cluster, name)


def test_the_operator_refuses_what_the_policy_could_not_see(
    cluster: Cluster, namespace: str
) -> None:
    """A template named before it exists passes the policies (no parameter matches); the
    operator waits for it, then refuses what it does not allow, and runs what it
    allows once it does."""
    name = f"later-{namespace}"
    spec = tj(compute=name, volumes=[HOST])
    accepted = apply(cluster, namespace, TJ, "early", spec)
    assert accepted.returncode == 0, accepted.stderr
    md = {"model": {"uri": "s3://m/1"}, "compute": name, "serviceAccountName": "admin"}
    assert apply(cluster, namespace, MD, "early", md).returncode == 0
    wait_for(
        lambda: (cluster.condition(TJ, namespace, "early", "Ready") or {}).get("reason")
        == "ComputeTemplateNotFound",
        30, "ComputeTemplateNotFound",
    )
    create_template(cluster, name, {"cpu": "1"})
    try:
        for kind, words in (
            (TJ, f"spec.volumes: data is a hostPath volume, which ComputeTemplate {name} "
                 f"does not allow in namespace {namespace} (podSecurity.volumeTypes)"),
            (MD, f"spec.serviceAccountName is admin, which ComputeTemplate {name} does not "
                 f"allow in namespace {namespace} (podSecurity.serviceAccountNames)"),
        ):
            ready = wait_for(
                lambda k=kind: (c := cluster.condition(k, namespace, "early", "Ready"))
                and c["reason"] == "PodSecurityRefused" and c,
                30, f"the {kind} refused",
            )
            assert ready["status"] == "False" and ready["message"] == words
            stalled = cluster.condition(kind, namespace, "early", "Stalled")
            assert stalled and stalled["status"] == "True"
        assert not cluster.batch.list_namespaced_job(namespace).items
        assert not cluster.apps.list_namespaced_deployment(namespace).items
        cluster.await_events(namespace, "early", {"PodSecurityRefused"}, kind=TJ)
        cluster.custom.patch_cluster_custom_object(
            GROUP, VERSION, "computetemplates", name,
            {"spec": {"podSecurity": {"namespaces": [namespace], "volumeTypes": ["hostPath"],
                                      "serviceAccountNames": ["admin"]}}},
        )
        # The ModelDeployment rolls out; the refused TrainingJob stays Failed (a finished
        # run's spec is immutable) and the same run created again gets its Job.
        wait_for(lambda: cluster.apps.list_namespaced_deployment(namespace).items, 30,
                 "the Deployment")
        assert cluster.status(TJ, namespace, "early")["phase"] == "Failed"
        again = apply(cluster, namespace, TJ, "again", spec)
        assert again.returncode == 0, again.stderr
        wait_for(lambda: cluster.batch.list_namespaced_job(namespace).items, 30, "the Job")
    finally:
        delete_template(cluster, name)


# --- The API server's Pod Security admission, enforcing restricted --------------------


@pytest.fixture
def restricted_namespace(cluster: Cluster, namespace: str) -> str:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    return namespace


def failed_creates(cluster: Cluster, namespace: str, job: str) -> list[str]:
    return [
        e.message for e in cluster.events_for(namespace, job)
        if e.reason == "FailedCreate" and e.involved_object.kind == "Job"
    ]


def pods_created(cluster: Cluster, namespace: str, job: str) -> list[Any]:
    return list(cluster.core.list_namespaced_pod(
        namespace, label_selector=f"job-name={job}").items)


def test_pods_made_by_default_are_accepted_where_restricted_is_enforced(
    cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.create(TJ, ns, "train", tj(
        workers=2, output={"uri": "s3://models/t"},
        volumes=[{"name": "scratch", "emptyDir": {}}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
        podMetadata={"annotations": {"kubeloop.io/fake-duration": "1s"}},
    ))
    cluster.create(MD, ns, "serve", {"model": {"uri": "https://models.local/iris/v1"}})
    # The evaluation Job of a DriftMonitor, as the operator renders it.
    owner = cluster.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "owner"}})
    job = evaluation.render_job(
        Evaluate.model_validate({"data": {"uri": "s3://d/holdout.csv"}, "metric": "f1"}),
        name="m-retrain-1-eval", namespace=ns, monitor="m", champion="s3://m/a",
        challenger="s3://m/b", image="kubeloop:test",
        owner={"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
               "uid": owner.metadata.uid},
        fallback_scheduling=None,
    )
    cluster.batch.create_namespaced_job(ns, job)

    done = cluster.wait_phase(TJ, ns, "train", "Succeeded", 60)
    assert done["workers"]["succeeded"] == 2
    wait_for(lambda: cluster.status(MD, ns, "serve").get("phase") == "Ready", 60, "MD Ready")
    wait_for(lambda: pods_created(cluster, ns, "m-retrain-1-eval"), 30, "the evaluation pod")
    for name in ("train-r0", "m-retrain-1-eval"):
        assert failed_creates(cluster, ns, name) == []


def test_the_namespace_really_enforces_restricted(
    cluster: Cluster, restricted_namespace: str
) -> None:
    """The control: a run the template lets run as root has its pods refused by the API
    server itself, and that shows as the Job's FailedCreate Event."""
    ns = restricted_namespace
    name = f"root-{ns}"
    create_template(cluster, name, {"podSecurity": {"namespaces": [ns], "runAsRoot": True}})
    try:
        cluster.create(TJ, ns, "root", tj(compute=name, runAsRoot=True, podMetadata={
            "annotations": HOLD}))
        refused = wait_for(lambda: failed_creates(cluster, ns, "root-r0"), 60,
                           "the Job's FailedCreate")
        assert any('violates PodSecurity "restricted' in m for m in refused), refused
        assert pods_created(cluster, ns, "root-r0") == []
    finally:
        delete_template(cluster, name)
