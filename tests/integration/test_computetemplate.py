"""ComputeTemplates on the local control plane: the admission policy refuses overreach
at apply time, each kind takes the template's settings, a missing template is a wait,
a running job keeps the template it started with, and the template counts what fits
on kwok's GPU nodes as jobs start and finish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kubetest import GROUP, ROOT, VERSION, Cluster, stays, wait_for

TJ, MD, DM, CT = "TrainingJob", "ModelDeployment", "DriftMonitor", "ComputeTemplate"
BP = "BatchPrediction"
H100 = "NVIDIA-H100-80GB-HBM3"


POLICIES = ROOT / "admission" / "kubeloop-compute-templates.yaml"


@pytest.fixture(scope="module", autouse=True)
def admission_policies(cluster: Cluster) -> Iterator[str]:
    """The policies as the chart installs them, under this module's own names."""
    text = POLICIES.read_text().replace("kubeloop-compute-template-", "itest-compute-template-")
    cluster.kubectl("apply", "-f", "-", input=text)
    # The API server enforces a new policy a moment after it is created: wait until a
    # probe template's limits are refused for each kind (a server-side dry run creates
    # nothing).
    probe = "itest-probe"
    create_template(cluster, probe, {"maxWorkers": 1, "cpu": "1"})
    over = {"image": "t:1", "compute": probe, "workers": 2}
    probes = [
        (TJ, over),
        (MD, {"model": {"uri": "s3://m/1"}, "compute": probe, "resources": {"cpu": "2"}}),
        (DM, {"modelDeployment": "m", "onDrift": {"retrain": {"template": over}}}),
        (BP, bp(probe, parallelism=2)),
    ]

    def refused(kind: str, spec: dict[str, Any]) -> bool:
        manifest = json.dumps(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": kind,
                "metadata": {"name": "probe", "namespace": "default"},
                "spec": spec,
            }
        )
        return (
            cluster.kubectl(
                "apply", "--dry-run=server", "-f", "-", input=manifest, check=False
            ).returncode
            != 0
        )

    try:
        for kind, spec in probes:
            wait_for(lambda k=kind, s=spec: refused(k, s), 30, f"the {kind} policy enforced")
    finally:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "computetemplates", probe)
    yield "itest-compute-template-"
    cluster.kubectl("delete", "-f", "-", input=text, check=False)


@pytest.fixture
def template(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A whole 8-GPU node per pod, at most 2 workers and an hour; cluster-scoped, so
    named after the test's namespace."""
    name = f"gpu8-{namespace}"
    create_template(
        cluster,
        name,
        {
            "description": "a whole H100 node",
            "cpu": "32",
            "memory": "256Gi",
            "gpu": {"count": 8, "type": H100},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "queueName": None,
            "maxWorkers": 2,
            "maxRunSeconds": 3600,
        },
    )
    yield name
    cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "computetemplates", name)


def create_template(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": CT,
        "metadata": {"name": name},
        "spec": {k: v for k, v in spec.items() if v is not None},
    }
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "computetemplates", body)


def template_status(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "computetemplates", name)
    return dict(obj.get("status") or {})


def apply(cluster: Cluster, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> Any:
    manifest = json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )
    return cluster.kubectl("apply", "-f", "-", input=manifest, check=False)


def bp(template: str, **extra: Any) -> dict[str, Any]:
    return {"model": {"uri": "s3://m/1"}, "input": {"uri": "file:///data/in"},
            "output": {"uri": "file:///data/out"}, "compute": template, **extra}


def tj(template: str, **extra: Any) -> dict[str, Any]:
    return {"image": "registry.local/train:1", "compute": template, **extra}


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        (
            TJ,
            {"workers": 3},
            "spec.workers is 3, more than ComputeTemplate {t} allows (maxWorkers 2)",
        ),
        (
            TJ,
            {"activeDeadlineSeconds": 7200},
            "spec.activeDeadlineSeconds is 7200, longer than ComputeTemplate {t} allows "
            "(maxRunSeconds 3600)",
        ),
        (
            TJ,
            {"gpu": {"count": 8, "type": "NVIDIA-A100"}},
            "spec.gpu.type is NVIDIA-A100, but ComputeTemplate {t} fixes it at " + H100,
        ),
        (
            TJ,
            {"gpu": {"count": 8, "resourceName": "amd.com/gpu"}},
            "spec.gpu.resourceName is amd.com/gpu, but ComputeTemplate {t} fixes it at "
            "nvidia.com/gpu",
        ),
        (TJ, {"gpu": {"count": 16}}, "spec.gpu.count is 16, but ComputeTemplate {t} fixes it at 8"),
        (
            TJ,
            {"resources": {"memory": "1Ti"}},
            "spec.resources.memory is 1Ti, but ComputeTemplate {t} fixes it at 256Gi",
        ),
        (
            TJ,
            {"scheduling": {"nodeSelector": {"kubernetes.io/os": "windows"}}},
            "spec.scheduling.nodeSelector changes a label that ComputeTemplate {t} fixes: "
            "kubernetes.io/os=linux",
        ),
        (
            MD,
            {"resources": {"cpu": "2"}},
            "spec.resources.cpu is 2, but ComputeTemplate {t} fixes it at 32",
        ),
        (
            DM,
            {"workers": 4},
            "spec.onDrift.retrain.template.workers is 4, more than "
            "ComputeTemplate {t} allows (maxWorkers 2)",
        ),
    ],
)
def test_overreach_is_refused_at_apply_time(
    cluster: Cluster,
    namespace: str,
    template: str,
    kind: str,
    spec: dict[str, Any],
    message: str,
) -> None:
    if kind == TJ:
        body = tj(template, **spec)
    elif kind == MD:
        body = {"model": {"uri": "s3://m/1"}, "compute": template, **spec}
    else:
        body = {"modelDeployment": "m", "onDrift": {"retrain": {"template": tj(template, **spec)}}}
    result = apply(cluster, namespace, kind, "greedy", body)
    assert result.returncode != 0, f"{kind} {spec} was accepted"
    assert "ValidatingAdmissionPolicy 'itest-compute-template-" in result.stderr
    assert message.format(t=template) in result.stderr, result.stderr
    # Within the limits, or without a template, the same kinds are accepted.
    within = apply(cluster, namespace, TJ, "modest", tj(template, workers=2))
    assert within.returncode == 0, within.stderr
    free = apply(cluster, namespace, TJ, "free", {"image": "t:1", "workers": 3})
    assert free.returncode == 0, free.stderr


def test_every_overreach_is_reported_in_one_apply(
    cluster: Cluster, namespace: str, template: str
) -> None:
    """The API server denies with the first failing validation of a policy only, so the
    policy's one validation lists every rule that fails: one apply, every fix."""
    body = tj(
        template,
        workers=3,
        activeDeadlineSeconds=7200,
        gpu={"count": 16},
        resources={"memory": "1Ti"},
        scheduling={"nodeSelector": {"kubernetes.io/os": "windows"}},
    )
    result = apply(cluster, namespace, TJ, "greedy", body)
    assert result.returncode != 0, "the overreach was accepted"
    for message in (
        "spec.resources.memory is 1Ti, but ComputeTemplate {t} fixes it at 256Gi",
        "spec.gpu.count is 16, but ComputeTemplate {t} fixes it at 8",
        "spec.scheduling.nodeSelector changes a label that ComputeTemplate {t} fixes: "
        "kubernetes.io/os=linux",
        "spec.workers is 3, more than ComputeTemplate {t} allows (maxWorkers 2)",
        "spec.activeDeadlineSeconds is 7200, longer than ComputeTemplate {t} allows "
        "(maxRunSeconds 3600)",
    ):
        assert message.format(t=template) in result.stderr, (message, result.stderr)


def test_a_job_runs_with_the_templates_settings_and_keeps_them(
    cluster: Cluster, namespace: str, template: str
) -> None:
    # kwok's two 8-GPU nodes, one pod each (once other tests' runs have ended).
    before = wait_for(
        lambda: (s := template_status(cluster, template)).get("fitsNow") == 2 and s,
        60,
        "the template's counts",
    )
    assert before["fitsMax"] == 2 and before["inUse"] == 0

    cluster.create(
        TJ,
        namespace,
        "big",
        tj(template, workers=2, podMetadata={"annotations": {"kubeloop.io/fake-duration": "8s"}}),
    )
    cluster.wait_phase(TJ, namespace, "big", "Running", 30)
    job = cluster.batch.list_namespaced_job(
        namespace, label_selector="kubeloop.io/training-job=big"
    ).items[0]
    pod = job.spec.template.spec
    (worker,) = pod.containers
    assert worker.resources.limits["nvidia.com/gpu"] == "8"
    assert worker.resources.requests["cpu"] == "32"
    assert worker.resources.limits["memory"] == "256Gi"
    assert pod.node_selector["nvidia.com/gpu.product"] == H100
    assert pod.node_selector["kubernetes.io/os"] == "linux"
    assert "dedicated" in [t.key for t in pod.tolerations]
    assert job.spec.active_deadline_seconds == 3600  # maxRunSeconds, the run set none
    status = cluster.status(TJ, namespace, "big")
    assert status["compute"]["name"] == template and status["compute"]["spec"]["maxWorkers"] == 2
    cond = cluster.condition(TJ, namespace, "big", "ComputeTemplate")
    assert cond and cond["status"] == "True"

    # Both GPU nodes are taken: nothing fits now; the template lists its user.
    busy = wait_for(
        lambda: (s := template_status(cluster, template)).get("fitsNow") == 0 and s,
        20,
        "fitsNow 0 while the job runs",
    )
    assert busy["inUse"] == 1
    assert busy["usedBy"] == [{"kind": TJ, "namespace": namespace, "name": "big"}]

    # The administrator changes the template: the running job keeps what it started with.
    cluster.custom.patch_cluster_custom_object(
        GROUP, VERSION, "computetemplates", template, {"spec": {"maxWorkers": 1}}
    )
    changed = wait_for(
        lambda: (
            (c := cluster.condition(TJ, namespace, "big", "ComputeTemplate"))
            and c["status"] == "False"
            and c
        ),
        20,
        "TemplateChanged",
    )
    assert changed["reason"] == "TemplateChanged"
    assert cluster.status(TJ, namespace, "big")["compute"]["spec"]["maxWorkers"] == 2

    cluster.wait_phase(TJ, namespace, "big", "Succeeded", 60)
    after = wait_for(
        lambda: (s := template_status(cluster, template)).get("fitsNow") == 2 and s,
        20,
        "fitsNow back to 2 after the job",
    )
    assert after["inUse"] == 0


def test_a_missing_template_is_a_wait_until_it_exists(cluster: Cluster, namespace: str) -> None:
    name = f"later-{namespace}"
    cluster.create(TJ, namespace, "early", tj(name))
    cond = wait_for(
        lambda: (
            (c := cluster.condition(TJ, namespace, "early", "Ready"))
            and c["reason"] == "ComputeTemplateNotFound"
            and c
        ),
        20,
        "NotFound",
    )
    assert name in cond["message"]
    reconciling = cluster.condition(TJ, namespace, "early", "Reconciling")
    assert reconciling and reconciling["status"] == "True"
    assert not cluster.condition(TJ, namespace, "early", "Stalled")
    stays(lambda: not cluster.batch.list_namespaced_job(namespace).items, 2, "no Job created")

    create_template(cluster, name, {"cpu": "1", "queueName": "team-a"})
    try:
        cluster.wait_phase(TJ, namespace, "early", "Queued", 30)
        # The template's Kueue queue reaches the Job, created suspended for Kueue.
        job = wait_for(lambda: cluster.batch.list_namespaced_job(namespace).items, 10, "Job")[0]
        assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a"
        assert job.spec.suspend is True
        assert job.spec.template.spec.containers[0].resources.requests["cpu"] == "1"
    finally:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "computetemplates", name)


def test_a_model_deployment_takes_the_template(
    cluster: Cluster, namespace: str, template: str
) -> None:
    cluster.create(MD, namespace, "served", {"model": {"uri": "s3://m/1"}, "compute": template})
    cluster.wait_phase(MD, namespace, "served", "Ready", 30)
    dep = cluster.apps.read_namespaced_deployment("served", namespace)
    (server,) = dep.spec.template.spec.containers
    assert server.resources.limits["nvidia.com/gpu"] == "8"
    assert server.resources.requests["cpu"] == "32"
    assert dep.spec.template.spec.node_selector["nvidia.com/gpu.product"] == H100
    users = wait_for(lambda: template_status(cluster, template).get("usedBy"), 40, "usedBy")
    assert {"kind": MD, "namespace": namespace, "name": "served"} in users


def test_a_batch_prediction_takes_the_template_and_may_not_exceed_it(
    cluster: Cluster, namespace: str
) -> None:
    name = f"cpu2-{namespace}"
    create_template(cluster, name, {"cpu": "2", "memory": "1Gi", "maxWorkers": 2,
                                    "maxRunSeconds": 600,
                                    "nodeSelector": {"kubernetes.io/os": "linux"}})
    try:
        refused = apply(cluster, namespace, BP, "wide", bp(name, parallelism=3,
                                                          resources={"cpu": "4"}))
        assert refused.returncode != 0
        assert "spec.parallelism is 3, more than ComputeTemplate" in refused.stderr
        assert "spec.resources.cpu is 4, but ComputeTemplate" in refused.stderr

        cluster.create(BP, namespace, "scored", bp(name, parallelism=2, podMetadata={
            "annotations": {"kubeloop.io/fake-duration": "4s"}}))
        job = wait_for(lambda: cluster.batch.list_namespaced_job(
            namespace, label_selector="kubeloop.io/batch-prediction=scored").items, 30, "Job")[0]
        (scorer,) = job.spec.template.spec.containers
        assert scorer.resources.requests["cpu"] == "2"
        assert scorer.resources.limits["memory"] == "1Gi"
        assert scorer.args[scorer.args.index("--workers") + 1] == "2"
        assert job.spec.template.spec.node_selector["kubernetes.io/os"] == "linux"
        assert job.spec.active_deadline_seconds == 600  # maxRunSeconds, the run set none
        # The Job can appear before the run's first status write: wait for that write.
        status = wait_for(lambda: (s := cluster.status(BP, namespace, "scored")).get("compute")
                          and s, 30, "the template named in the run's status")
        assert status["compute"]["name"] == name
        cond = cluster.condition(BP, namespace, "scored", "ComputeTemplate")
        assert cond and cond["status"] == "True"
        used = wait_for(lambda: (s := template_status(cluster, name)).get("inUse") == 1 and s,
                        20, "the template lists the run")
        assert used["usedBy"] == [{"kind": BP, "namespace": namespace, "name": "scored"}]
        cluster.wait_phase(BP, namespace, "scored", "Succeeded", 60)
    finally:
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "computetemplates", name)
