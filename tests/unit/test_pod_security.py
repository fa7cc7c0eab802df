"""Pod security: every pod the operator renders by default keeps to Pod Security
"restricted" (checked here by an independent reading of its rules; the API server's own
check is tests/integration/test_pod_security.py), and what a spec asks for beyond it is
refused unless the ComputeTemplate it names allows it in its namespace."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.api.computetemplate import ComputeTemplateSpec
from kubeloop.api.driftmonitor import Evaluate
from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.podsecurity_policy import TEMPLATE, rules
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.podsecurity import allowance, serving, training
from kubeloop.render import evaluation
from kubeloop.render.modeldeployment import pod_template
from kubeloop.render.trainingjob import render_job

# Pod Security Standards, "restricted" (Kubernetes 1.30), read from the documentation.
VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
SECCOMP = {"RuntimeDefault", "Localhost"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Why a pod spec would be refused in a namespace that enforces restricted."""
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(field)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if kinds - VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    pod_ctx = pod.get("securityContext") or {}
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for c in containers:
        ctx = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if ctx.get("privileged"):
            found.append(f"{where}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation != false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: capabilities added")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            found.append(f"{where}: runAsNonRoot != true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile")) or {}
        if seccomp.get("type") not in SECCOMP:
            found.append(f"{where}: seccompProfile {seccomp.get('type')}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{where}: hostPort")
    return found


OWNER = {"apiVersion": "kubeloop.io/v1alpha1", "kind": "X", "name": "x", "uid": "u"}


def tj_pod(**spec: Any) -> dict[str, Any]:
    parsed = TrainingJobSpec.model_validate({"image": "img:1", **spec})
    pod: dict[str, Any] = render_job(parsed, "t", "ns", 0, OWNER)["spec"]["template"]["spec"]
    return pod


def md_pod(**spec: Any) -> dict[str, Any]:
    parsed = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m/1"}, **spec})
    pod: dict[str, Any] = pod_template(parsed, "m", "stable", "pvc://models/m/1", "img:1")["spec"]
    return pod


def eval_pod() -> dict[str, Any]:
    job = evaluation.render_job(
        Evaluate.model_validate({"data": {"uri": "pvc://data/holdout.csv"}, "metric": "f1"}),
        name="m-retrain-1-eval",
        namespace="ns",
        monitor="m",
        champion="pvc://models/a",
        challenger="s3://b/models/b",
        image="img",
        owner=OWNER,
        fallback_scheduling=None,
    )
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize(
    "pod",
    [
        tj_pod(),
        tj_pod(
            workers=4,
            gpu={"count": 8},
            dataset={"uri": "pvc://data/train.csv"},
            output={"uri": "pvc://models/out"},
            volumes=[
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "key", "secret": {"secretName": "s"}},
            ],
            volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
        ),
        md_pod(),
        md_pod(runtime={"image": "other:1", "env": [{"name": "A", "value": "1"}]}),
        eval_pod(),
    ],
    ids=["tj", "tj-volumes", "md", "md-runtime", "evaluation"],
)
def test_every_rendered_pod_keeps_to_restricted(pod: dict[str, Any]) -> None:
    assert restricted_violations(pod) == []


def test_the_checker_sees_what_restricted_refuses() -> None:
    """The check above is only worth what it notices."""
    found = restricted_violations(
        tj_pod(runAsRoot=True, volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    )
    assert "volume h: ['hostPath']" in found
    assert "container worker: runAsNonRoot != true" in found
    no_seccomp = md_pod()
    del no_seccomp["securityContext"]["seccompProfile"]
    assert "container server: seccompProfile None" in restricted_violations(no_seccomp)


def template(**pod_security: Any) -> ComputeTemplateSpec:
    return ComputeTemplateSpec.model_validate({"podSecurity": pod_security})


def tj(**spec: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate({"image": "img:1", **spec})


HOST = {"name": "data", "hostPath": {"path": "/data"}}


def test_a_plain_spec_asks_for_nothing_more() -> None:
    plain = tj(
        volumes=[{"name": "p", "persistentVolumeClaim": {"claimName": "c"}}, {"name": "e"}],
        serviceAccountName="default",
    )
    assert training(plain, "spec", "ns", None) == []
    md = ModelDeploymentSpec.model_validate({"model": {"uri": "s3://m"}})
    assert serving(md, "ns", None) == []


def test_without_a_template_only_restricted() -> None:
    spec = tj(volumes=[HOST], serviceAccountName="admin", runAsRoot=True)
    assert training(spec, "spec", "ns", None) == [
        "spec.volumes: data is a hostPath volume, which Pod Security restricted does not "
        "allow: name a ComputeTemplate that allows it in spec.compute "
        "(podSecurity.volumeTypes)",
        "spec.serviceAccountName is admin, which Pod Security restricted does not allow: "
        "name a ComputeTemplate that allows it in spec.compute "
        "(podSecurity.serviceAccountNames)",
        "spec.runAsRoot is true, which Pod Security restricted does not allow: name a "
        "ComputeTemplate that allows it in spec.compute (podSecurity.runAsRoot)",
    ]
    md = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://m"}, "serviceAccountName": "admin"}
    )
    assert serving(md, "ns", None) == [
        "spec.serviceAccountName is admin, which Pod Security restricted does not allow: "
        "name a ComputeTemplate that allows it in spec.compute "
        "(podSecurity.serviceAccountNames)"
    ]


def test_a_named_template_allows_what_it_lists_in_its_namespaces() -> None:
    t = template(
        namespaces=["team-a"], volumeTypes=["hostPath"], serviceAccountNames=["trainer"],
        runAsRoot=True,
    )
    spec = tj(compute="wide", volumes=[HOST], serviceAccountName="trainer", runAsRoot=True)
    assert training(spec, "spec", "team-a", allowance("wide", t, "team-a")) == []
    # Elsewhere the template allows nothing more.
    assert allowance("wide", t, "team-b") is None
    assert training(spec, "spec", "team-b", allowance("wide", t, "team-b")) == [
        "spec.volumes: data is a hostPath volume, which ComputeTemplate wide does not "
        "allow in namespace team-b (podSecurity.volumeTypes)",
        "spec.serviceAccountName is trainer, which ComputeTemplate wide does not allow in "
        "namespace team-b (podSecurity.serviceAccountNames)",
        "spec.runAsRoot is true, which ComputeTemplate wide does not allow in namespace "
        "team-b (podSecurity.runAsRoot)",
    ]
    # Another account, another volume kind: not listed.
    other = tj(compute="wide", volumes=[{"name": "n", "nfs": {}}], serviceAccountName="admin")
    assert len(training(other, "spec", "team-a", allowance("wide", t, "team-a"))) == 2


def test_star_allows_any_and_a_default_template_allows_nothing() -> None:
    t = template(namespaces=["*"], volumeTypes=["*"], serviceAccountNames=["*"])
    spec = tj(compute="any", volumes=[HOST, {"name": "n", "nfs": {}}], serviceAccountName="x")
    assert training(spec, "spec", "ns", allowance("any", t, "ns")) == []
    # Used as the default (not named), a template's allowances do not apply.
    assert allowance(None, t, "ns") is None
    assert allowance("any", ComputeTemplateSpec(), "ns") is None


def test_an_apparmor_annotation_may_only_tighten() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/worker"
    wide = template(namespaces=["*"], volumeTypes=["*"], serviceAccountNames=["*"],
                    runAsRoot=True)
    for profile in ("runtime/default", "localhost/train"):
        spec = tj(podMetadata={"annotations": {key: profile}})
        assert training(spec, "spec", "ns", None) == []
    spec = tj(compute="w", podMetadata={"annotations": {key: "unconfined", "team": "a"}})
    assert training(spec, "spec", "ns", allowance("w", wide, "ns")) == [
        f"spec.podMetadata.annotations: {key} is unconfined, which Pod Security restricted "
        "does not allow (runtime/default or localhost/<profile>)"
    ]


def test_a_retrain_template_is_named_by_its_path() -> None:
    prefix = "spec.onDrift.retrain.template"
    (message,) = training(tj(runAsRoot=True), prefix, "ns", None)
    assert message.startswith(f"{prefix}.runAsRoot is true,")
    assert message.endswith(f"in {prefix}.compute (podSecurity.runAsRoot)")


def test_the_policy_says_what_the_operator_says() -> None:
    """The CEL messages are built from the same words as podsecurity.py's (the API
    server evaluates them: tests/integration/test_pod_security.py)."""
    volumes, account, apparmor, root = rules("spec", True, TEMPLATE)
    assert "'spec.podMetadata.annotations: '" in apparmor.message
    assert "' volume'" in volumes.message and "(podSecurity.volumeTypes)" in volumes.message
    assert "'spec.serviceAccountName is '" in account.message
    assert "'spec.runAsRoot is true'" in root.message
    assert "does not allow in namespace" in root.message
    (md_account,) = rules("spec", False, TEMPLATE)
    assert md_account == account
