"""The closed loop on the local control plane: a real model server on loopback gets
shifted traffic, the DriftMonitor sees drift, retrains once, and the ModelDeployment is
moved to the new model; the cooldown holds; an unreachable source is reported and
recovers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kubetest import HOLD, Cluster, or_none, stays, wait_for
from tests.modelserver import ModelServer, free_port, shifted_rows, train

DM, MD, TJ = "DriftMonitor", "ModelDeployment", "TrainingJob"


@pytest.fixture(scope="module")
def model_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("models") / "v1")


@pytest.fixture
def server(model_v1: Path) -> Iterator[ModelServer]:
    srv = ModelServer(model_v1, free_port())
    srv.start()
    yield srv
    srv.stop()


def monitor_spec(server: ModelServer, out_dir: Path, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "modelDeployment": "iris",
        "source": {"url": f"{server.url}/metrics"},
        # The server's own profile route: no pod of the ModelDeployment runs a server
        # on the simulated nodes, so the monitor reads the reference where it reads
        # the metrics.
        "reference": {"url": f"{server.url}/v2/models/iris/profile"},
        "method": "psi",
        "interval": "1s",
        "minSamples": 200,
        "onDrift": {
            "promote": True,
            "retrain": {
                "cooldown": "1h",
                "template": {
                    "image": "registry.local/train:1",
                    "output": {"uri": f"file://{out_dir}/{{trainingJob}}"},
                    "podMetadata": {"annotations": {"kubeloop.io/fake-duration": "1s"}},
                },
            },
        },
    }
    spec.update(extra)
    return spec


def test_drift_retrains_once_and_promotes(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    # What the retrain job writes: a model trained on the drifted data. The nodes are
    # simulated, so the test writes it where the job's output points.
    retrained = train(tmp_path / "watch-retrain-1", shift=2.0)
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    cluster.create(DM, namespace, "watch", monitor_spec(server, tmp_path))
    wait_for(lambda: cluster.status(DM, namespace, "watch").get("window"), 20, "baseline")

    server.send(shifted_rows(300, shift=2.0))
    status = wait_for(
        lambda: (s := cluster.status(DM, namespace, "watch")).get("drifted") and s,
        30,
        "drift detected",
    )
    assert status["samples"] >= 200
    names = {f["name"] for f in status["features"]}
    assert names == {"sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"}
    assert any(f["drifted"] and f["score"] > 0.2 for f in status["features"])
    drifted = cluster.condition(DM, namespace, "watch", "Drifted")
    assert drifted and drifted["status"] == "True" and drifted["reason"] == "DriftDetected"

    # One TrainingJob, owned by the monitor; kwok completes it; the model is promoted.
    tj = wait_for(lambda: cluster.get(TJ, namespace, "watch-retrain-1"), 20, "retrain job")
    assert tj["metadata"]["ownerReferences"][0]["kind"] == DM
    new_uri = f"file://{retrained}"
    assert tj["spec"]["output"]["uri"] == new_uri
    wait_for(
        lambda: cluster.get(MD, namespace, "iris")["spec"]["model"].get("uri") == new_uri,
        40,
        "ModelDeployment moved to the retrained model",
    )
    record = wait_for(
        lambda: (
            (r := cluster.status(DM, namespace, "watch").get("lastRetrain"))
            and r["result"] == "Promoted"
            and r
        ),
        20,
        "retrain recorded",
    )
    assert record["modelUri"] == new_uri
    wait_for(
        lambda: cluster.status(MD, namespace, "iris").get("activeModelUri") == new_uri,
        20,
        "the new model active",
    )

    # The rollout, as the new Deployment's pods would do it: the server now serves the
    # retrained model. Traffic like the new training data is no drift any more.
    server.stop()
    server.model_dir = retrained
    server.start()
    wait_for(
        lambda: (
            cluster.status(DM, namespace, "watch").get("window", {}).get("time")
            and cluster.status(DM, namespace, "watch").get("phase") == "Collecting"
        ),
        30,
        "a new window on the new reference",
    )
    server.send(shifted_rows(300, shift=2.0, seed=1))
    healthy = wait_for(
        lambda: (s := cluster.status(DM, namespace, "watch")).get("phase") == "Healthy" and s,
        30,
        "no drift against the retrained model",
    )
    assert healthy["drifted"] is False

    # Drift again, further away: detected, but the cooldown holds: no second job.
    server.send(shifted_rows(300, shift=5.0, seed=2))
    again = wait_for(
        lambda: (s := cluster.status(DM, namespace, "watch")).get("drifted") and s,
        30,
        "drift again",
    )
    assert "cooldown" in again["message"]
    jobs = cluster.custom.list_namespaced_custom_object(
        "kubeloop.io", "v1alpha1", namespace, "trainingjobs"
    )["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["watch-retrain-1"]
    assert again["retrainCount"] == 1
    # The audit trail: the monitor's retrains, and who changed the deployment's model.
    assert [(r["trainingJob"], r["result"]) for r in again["retrains"]] == [
        ("watch-retrain-1", "Promoted")
    ]
    served = cluster.status(MD, namespace, "iris")["history"]
    assert [(h["uri"], h["changedBy"]) for h in served] == [
        (new_uri, "DriftMonitor/watch"),
        (f"file://{model_v1}", "user"),
    ]
    assert served[1]["to"] == served[0]["from"] and "to" not in served[0]
    cluster.await_events(
        namespace, "watch", {"DriftDetected", "RetrainStarted", "Promoted", "DriftReset"}
    )

    # Deleting the monitor does not delete the ModelDeployment.
    cluster.delete(DM, namespace, "watch")
    wait_for(
        lambda: (
            not cluster.custom.list_namespaced_custom_object(
                "kubeloop.io", "v1alpha1", namespace, "driftmonitors"
            )["items"]
        ),
        20,
        "monitor gone",
    )
    assert cluster.get(MD, namespace, "iris")["spec"]["model"]["uri"] == new_uri


def test_no_drift_on_reference_like_traffic(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    cluster.create(DM, namespace, "calm", monitor_spec(server, tmp_path, minSamples=150))
    wait_for(lambda: cluster.status(DM, namespace, "calm").get("window"), 20, "baseline")
    server.send(shifted_rows(600, shift=0.0))
    status = wait_for(
        lambda: (s := cluster.status(DM, namespace, "calm")).get("phase") == "Healthy" and s,
        30,
        "a judgement",
    )
    assert status["drifted"] is False and status["samples"] == 600
    # No more traffic: the checks go on (every second) and the verdict stands, rather
    # than the phase falling back to Collecting while the next window fills.
    judged_at = status["lastCheckTime"]

    def collecting_events() -> int:
        return [e.reason for e in cluster.events_for(namespace, "calm")].count("Collecting")

    # (The Event for the move to Healthy may still be on its way: only falling back to
    # Collecting is counted.)
    collecting = collecting_events()
    stays(
        lambda: (
            (s := cluster.status(DM, namespace, "calm"))["phase"] == "Healthy"
            and s["samples"] == 600
        ),
        5,
        "the verdict",
    )
    quiet = cluster.status(DM, namespace, "calm")
    assert quiet["lastCheckTime"] != judged_at, "no check ran in the window"
    assert "next window: 0 of 150 samples" in quiet["message"]
    assert collecting_events() == collecting, "the phase went back to Collecting"
    assert not cluster.custom.list_namespaced_custom_object(
        "kubeloop.io", "v1alpha1", namespace, "trainingjobs"
    )["items"]


def test_too_few_samples_is_collecting(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    cluster.create(DM, namespace, "few", monitor_spec(server, tmp_path, minSamples=1000))
    wait_for(lambda: cluster.status(DM, namespace, "few").get("window"), 20, "baseline")
    server.send(shifted_rows(50, shift=3.0))
    wait_for(lambda: cluster.status(DM, namespace, "few").get("samples") == 50, 20, "50 samples")
    status = cluster.status(DM, namespace, "few")
    assert status["phase"] == "Collecting" and "need 1000" in status["message"]
    assert not status.get("drifted")


def test_unreachable_source_is_reported_and_recovers(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    cluster.create(DM, namespace, "flaky", monitor_spec(server, tmp_path))
    wait_for(lambda: cluster.status(DM, namespace, "flaky").get("window"), 20, "baseline")
    server.stop()
    cond = wait_for(
        lambda: (
            (c := cluster.condition(DM, namespace, "flaky", "Ready"))
            and c["reason"] == "SourceUnavailable"
            and c
        ),
        40,
        "SourceUnavailable",
    )
    assert cond["status"] == "False"
    server.start()
    wait_for(
        lambda: (cluster.condition(DM, namespace, "flaky", "Ready") or {}).get("status") == "True",
        40,
        "recovered",
    )


def test_url_outside_the_allowlist_is_refused(
    cluster: Cluster, namespace: str, model_v1: Path, tmp_path: Path
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    spec = monitor_spec(ModelServer(model_v1, 1), tmp_path)
    spec["source"] = {"url": "http://169.254.169.254/latest/meta-data"}
    cluster.create(DM, namespace, "nosy", spec)
    cond = wait_for(
        lambda: (
            (c := cluster.condition(DM, namespace, "nosy", "Ready"))
            and c["reason"] == "SourceNotAllowed"
            and c
        ),
        20,
        "SourceNotAllowed",
    )
    assert "driftSourceAllowlist" in cond["message"]


def test_waiting_is_not_stalled_and_says_so_in_events(
    cluster: Cluster, namespace: str, model_v1: Path, tmp_path: Path
) -> None:
    # Applied before its ModelDeployment: a wait, with its own reason and an Event.
    spec = monitor_spec(ModelServer(model_v1, 1), tmp_path)
    del spec["reference"]  # the default: from a ready serving pod
    cluster.create(DM, namespace, "early", spec)

    def reason(wanted: str) -> dict[str, Any] | None:
        cond = cluster.condition(DM, namespace, "early", "Ready")
        return cond if cond and cond["reason"] == wanted else None

    wait_for(lambda: reason("TargetNotFound"), 20, "TargetNotFound")
    assert not cluster.condition(DM, namespace, "early", "Stalled")
    # The ModelDeployment comes: its pods are simulated and serve nothing, so the
    # reference is on its way for as long as they do. Waiting, never Stalled.
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    # (kwok marks the pods ready at addresses this machine routes nowhere.)
    wait_for(
        lambda: (p := reason("ReferencePending")) and "/v2/models/iris/profile" in p["message"],
        20,
        "ReferencePending on the serving pods' profile route",
    )
    reconciling = cluster.condition(DM, namespace, "early", "Reconciling")
    assert reconciling and reconciling["status"] == "True"
    assert not cluster.condition(DM, namespace, "early", "Stalled")
    assert cluster.status(DM, namespace, "early")["phase"] == "Pending"
    events = wait_for(
        lambda: (
            (e := {ev.reason: ev for ev in cluster.events_for(namespace, "early")})
            and "ReferencePending" in e
            and e
        ),
        20,
        "a ReferencePending Event",
    )
    assert "TargetNotFound" in events
    assert events["ReferencePending"].type == "Normal"
    # A wait writes its status once, not at every retry.
    version = cluster.get(DM, namespace, "early")["metadata"]["resourceVersion"]
    stays(
        lambda: cluster.get(DM, namespace, "early")["metadata"]["resourceVersion"] == version,
        5,
        "the pending status unchanged",
    )


def test_a_stalled_monitor_writes_its_status_once(
    cluster: Cluster, namespace: str, model_v1: Path, tmp_path: Path
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    spec = monitor_spec(ModelServer(model_v1, 1), tmp_path)  # interval 1s
    spec["reference"] = {"url": "http://10.0.0.1/profile.json"}  # not allowed
    cluster.create(DM, namespace, "refused", spec)
    stalled = wait_for(
        lambda: cluster.condition(DM, namespace, "refused", "Stalled"), 20, "Stalled"
    )
    assert stalled["reason"] == "SourceNotAllowed" and "reference.url" in stalled["message"]
    # The Event follows the status write: wait for it, do not expect it at once.
    events = wait_for(
        lambda: [
            e for e in cluster.events_for(namespace, "refused") if e.reason == "SourceNotAllowed"
        ],
        10,
        "the Warning Event",
    )
    assert events[0].type == "Warning"
    version = cluster.get(DM, namespace, "refused")["metadata"]["resourceVersion"]
    stays(
        lambda: cluster.get(DM, namespace, "refused")["metadata"]["resourceVersion"] == version,
        6,
        "the stalled status unchanged over six intervals",
    )
    # A change of spec is looked at at once.
    cluster.patch_spec(DM, namespace, "refused", {"reference": {"url": None}})
    wait_for(
        lambda: (
            (c := cluster.condition(DM, namespace, "refused", "Ready"))
            and c["reason"] == "ReferencePending"
        ),
        20,
        "the new spec checked",
    )


def test_an_unavailable_source_is_checked_once_an_interval(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    spec = monitor_spec(server, tmp_path, interval="4s")
    spec["source"] = {"url": "http://127.0.0.1:9/metrics"}  # nothing listens
    cluster.create(DM, namespace, "down", spec)
    wait_for(
        lambda: (
            (c := cluster.condition(DM, namespace, "down", "Ready"))
            and c["reason"] == "SourceUnavailable"
        ),
        20,
        "SourceUnavailable",
    )
    # Each check writes its time; a status write must not trigger the next check.
    seen: set[str] = set()

    def record() -> bool:
        seen.add(cluster.status(DM, namespace, "down").get("lastCheckTime", ""))
        return True

    stays(record, 10, "polling the check times")
    assert 2 <= len(seen) <= 4, sorted(seen)  # 10 s at one check per 4 s


def test_evaluation_without_a_verdict_is_never_a_promotion(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """With a gate, a succeeded retrain is scored by an evaluation Job first. On the
    simulated nodes that Job's pod runs nothing and so leaves no verdict: the operator
    must say so (which pod, on which node, how it ended) and keep the champion, never
    promote on a verdict it did not read. The evaluation pod is placed like the retrain:
    by the ComputeTemplate the retrain's template names. A deleted monitor leaves nothing
    behind in the operator's memory."""
    train(tmp_path / "gated-retrain-1", shift=2.0)
    champion = f"file://{model_v1}"
    placement = f"cpu1-{namespace}"
    toleration = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    cluster.custom.create_cluster_custom_object(
        "kubeloop.io",
        "v1alpha1",
        "computetemplates",
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "ComputeTemplate",
            "metadata": {"name": placement},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": "cpu-node-1"},
                "tolerations": [toleration],
            },
        },
    )
    try:
        _no_verdict_on(cluster, namespace, server, tmp_path, champion, placement, toleration)
    finally:
        cluster.custom.delete_cluster_custom_object(
            "kubeloop.io", "v1alpha1", "computetemplates", placement
        )


def _no_verdict_on(
    cluster: Cluster,
    namespace: str,
    server: ModelServer,
    tmp_path: Path,
    champion: str,
    placement: str,
    toleration: dict[str, str],
) -> None:
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    spec = _gated(server, tmp_path)
    spec["onDrift"]["retrain"]["template"]["compute"] = placement
    cluster.create(DM, namespace, "gated", spec)
    wait_for(lambda: cluster.status(DM, namespace, "gated").get("window"), 20, "baseline")
    server.send(shifted_rows(300, shift=2.0))

    job = wait_for(
        lambda: _job(cluster, namespace, "gated-retrain-1-eval"), 40, "the evaluation Job"
    )
    pod = job.spec.template.spec
    (container,) = pod.containers
    args = container.args
    assert args[args.index("--champion") + 1] == champion
    assert args[args.index("--challenger") + 1] == f"file://{tmp_path}/gated-retrain-1"
    assert args[args.index("--data") + 1] == "file:///data/holdout.csv"
    assert args[args.index("--metric") + 1] == "accuracy"
    assert pod.automount_service_account_token is False
    assert container.security_context.run_as_non_root is True
    assert job.metadata.owner_references[0].kind == DM
    # Placed as the retrain's ComputeTemplate places its pods.
    assert pod.node_selector == {"kubernetes.io/hostname": "cpu-node-1"}
    assert [cluster.api_client.sanitize_for_serialization(t) for t in pod.tolerations] == [
        toleration
    ]

    record = _retrain_record(cluster, namespace, "gated", "EvaluationFailed")
    assert record["evaluation"]["passed"] is False
    message = record["evaluation"]["message"]
    assert "without a verdict" in message
    # Which pod, where, and how it ended.
    assert "on node cpu-node-1" in message and "exit code 0 (Completed)" in message, message
    assert "pod gated-retrain-1-eval-" in message, message
    accepted = cluster.condition(DM, namespace, "gated", "RetrainAccepted")
    assert accepted and accepted["status"] == "False"
    assert accepted["reason"] == "EvaluationFailed"
    status = cluster.status(DM, namespace, "gated")
    assert [(r["trainingJob"], r["result"]) for r in status["retrains"]] == [
        ("gated-retrain-1", "EvaluationFailed")
    ]
    reasons = cluster.await_events(namespace, "gated", {"EvaluationStarted", "EvaluationFailed"})
    assert "Promoted" not in reasons
    stays(
        lambda: cluster.get(MD, namespace, "iris")["spec"]["model"].get("uri") == champion,
        5,
        "the champion kept",
    )
    assert cluster.status(MD, namespace, "iris")["activeModelUri"] == champion

    # Deleted: the operator keeps nothing of it in memory.
    from kubeloop.controllers import driftmonitor

    assert driftmonitor.remembered(namespace, "gated")
    cluster.delete(DM, namespace, "gated")
    wait_for(
        lambda: not driftmonitor.remembered(namespace, "gated"),
        20,
        "the deleted monitor's state pruned",
    )


def _job(cluster: Cluster, namespace: str, name: str) -> Any:
    return or_none(cluster.batch.read_namespaced_job, name, namespace)


def test_a_deleted_retrain_is_failed_not_created_again(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """Deleting the retrain's TrainingJob stops the retrain: the monitor records it as
    Failed and does not create it again (a crash before the create, by contrast, is
    followed by the create)."""
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    spec = monitor_spec(server, tmp_path)
    template = spec["onDrift"]["retrain"]["template"]
    template["podMetadata"]["annotations"]["kubeloop.io/fake-duration"] = "120s"
    cluster.create(DM, namespace, "stop", spec)
    wait_for(lambda: cluster.status(DM, namespace, "stop").get("window"), 20, "baseline")
    server.send(shifted_rows(300, shift=2.0))
    wait_for(lambda: cluster.get(TJ, namespace, "stop-retrain-1"), 30, "the retrain")
    wait_for(
        lambda: (cluster.status(DM, namespace, "stop").get("lastRetrain") or {}).get("created"),
        20,
        "the creation recorded",
    )
    cluster.delete(TJ, namespace, "stop-retrain-1")
    record = wait_for(
        lambda: (
            (r := cluster.status(DM, namespace, "stop").get("lastRetrain"))
            and r["result"] == "Failed"
            and r
        ),
        30,
        "the deleted retrain recorded as Failed",
    )
    assert record["finishTime"]
    cluster.await_events(namespace, "stop", {"RetrainFailed"})
    reasons = [
        e.message for e in cluster.events_for(namespace, "stop") if e.reason == "RetrainFailed"
    ]
    assert any("was deleted before it ended" in m for m in reasons), reasons

    def gone() -> bool:
        return or_none(cluster.get, TJ, namespace, "stop-retrain-1") is None

    stays(gone, 5, "the deleted retrain not created again")


def _gated(server: ModelServer, tmp_path: Path, **evaluate: Any) -> dict[str, Any]:
    spec = monitor_spec(server, tmp_path)
    spec["onDrift"]["evaluate"] = {
        "data": {"uri": "file:///data/holdout.csv"},
        "metric": "accuracy",
        "minImprovement": 0.01,
        **evaluate,
    }
    return spec


def _retrain_record(cluster: Cluster, namespace: str, name: str, result: str) -> Any:
    return wait_for(
        lambda: (
            (r := cluster.status(DM, namespace, name).get("lastRetrain"))
            and r["result"] == result
            and r
        ),
        60,
        f"the retrain recorded as {result}",
    )


def test_a_promotion_survives_an_api_error_that_passes(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """A retrain whose promotion meets a 500 from the API server (here: an admission
    webhook it cannot reach, which fails closed) is promoted once the API server
    answers again. Only a refusal of the change itself is final."""
    retrained = f"file://{train(tmp_path / 'flaky-retrain-1', shift=2.0)}"
    champion = f"file://{model_v1}"
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    hook = f"itest-unreachable-{namespace}"
    admission.create_validating_webhook_configuration(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": hook},
            "webhooks": [
                {
                    "name": "unreachable.itest.kubeloop.io",
                    "clientConfig": {"url": "https://127.0.0.1:1/refuse"},
                    "rules": [
                        {
                            "apiGroups": ["kubeloop.io"],
                            "apiVersions": ["v1alpha1"],
                            "operations": ["UPDATE"],
                            "resources": ["modeldeployments"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 2,
                }
            ],
        }
    )
    try:
        # The webhook is in force: a change of the deployment's spec is a 500.
        def refused_by_hook() -> bool:
            try:
                cluster.patch_spec(MD, namespace, "iris", {"replicas": 1})
            except client.ApiException as err:
                return err.status == 500
            return False

        wait_for(refused_by_hook, 20, "the unreachable webhook in force")
        cluster.create(DM, namespace, "flaky", monitor_spec(server, tmp_path))
        wait_for(lambda: cluster.status(DM, namespace, "flaky").get("window"), 20, "baseline")
        server.send(shifted_rows(300, shift=2.0))
        wait_for(
            lambda: cluster.status(TJ, namespace, "flaky-retrain-1").get("phase") == "Succeeded",
            40,
            "the retrain succeeded",
        )
        # Its promotion meets the 500 meanwhile: the deployment keeps its model.
        stays(
            lambda: cluster.get(MD, namespace, "iris")["spec"]["model"]["uri"] == champion,
            4,
            "the champion kept while the API server fails the change",
        )
    finally:
        admission.delete_validating_webhook_configuration(hook)
    wait_for(
        lambda: cluster.get(MD, namespace, "iris")["spec"]["model"]["uri"] == retrained,
        60,
        "the promotion made once the API server takes it",
    )
    record = _retrain_record(cluster, namespace, "flaky", "Promoted")
    assert record["modelUri"] == retrained
    assert "PromotionFailed" not in cluster.event_reasons(namespace, "flaky")


def test_a_verdict_is_read_only_from_the_evaluation_jobs_own_pod(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """A pod that only carries the evaluation Job's labels (anyone allowed to create pods
    can make one) does not give the verdict: only a pod the Job owns, by its UID. The
    evaluation's own pod cannot be placed here, so its Job fails on its deadline, and
    the monitor says why there is no verdict."""
    train(tmp_path / "planted-retrain-1", shift=2.0)
    champion = f"file://{model_v1}"
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    nowhere = {"nodeSelector": {"kubeloop.io/no-such-node": "true"}}
    spec = _gated(server, tmp_path, scheduling=nowhere, activeDeadlineSeconds=10)
    cluster.create(DM, namespace, "planted", spec)
    labels = {
        "app.kubernetes.io/managed-by": "kubeloop",
        "kubeloop.io/evaluation-of": "planted",
        "job-name": "planted-retrain-1-eval",
        "batch.kubernetes.io/job-name": "planted-retrain-1-eval",
    }
    cluster.core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "planted-verdict", "labels": labels},
            "spec": {
                **nowhere,
                "containers": [{"name": "evaluate", "image": "registry.local/x:1"}],
            },
        },
    )
    verdict = {
        "metric": "accuracy",
        "champion": 0.1,
        "challenger": 0.99,
        "passed": True,
        "reason": "Improved",
        "message": "a planted verdict",
    }
    cluster.core.patch_namespaced_pod_status(
        "planted-verdict",
        namespace,
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "evaluate",
                        "image": "registry.local/x:1",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": 0,
                                "reason": "Completed",
                                "message": json.dumps(verdict),
                            }
                        },
                    }
                ]
            }
        },
    )
    wait_for(lambda: cluster.status(DM, namespace, "planted").get("window"), 20, "baseline")
    server.send(shifted_rows(300, shift=2.0))
    record = _retrain_record(cluster, namespace, "planted", "EvaluationFailed")
    message = record["evaluation"]["message"]
    assert "a planted verdict" not in message and "DeadlineExceeded" in message, message
    assert record["evaluation"]["passed"] is False
    assert cluster.get(MD, namespace, "iris")["spec"]["model"]["uri"] == champion


def test_a_monitor_made_again_under_its_name_does_not_adopt_the_old_retrain(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """A DriftMonitor deleted and created again under the same name starts afresh: its
    retrain runs (a Job of its own TrainingJob, started after the monitor was made),
    whether the old retrain was garbage-collected with the old monitor or left behind
    (orphaned): the new monitor never counts a TrainingJob another owns as its own."""
    for n in (1, 2):
        train(tmp_path / f"again-retrain-{n}", shift=2.0)
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    spec = monitor_spec(server, tmp_path)
    spec["onDrift"]["promote"] = False

    def retrain_once(expected: str) -> tuple[dict[str, Any], dict[str, Any]]:
        monitor = cluster.create(DM, namespace, "again", spec)
        wait_for(lambda: cluster.status(DM, namespace, "again").get("window"), 20, "baseline")
        server.send(shifted_rows(300, shift=2.0))
        record = _retrain_record(cluster, namespace, "again", "Succeeded")
        assert record["trainingJob"] == expected
        return monitor, cluster.get(TJ, namespace, expected)

    def delete_monitor(policy: str) -> None:
        cluster.custom.delete_namespaced_custom_object(
            "kubeloop.io",
            "v1alpha1",
            namespace,
            "driftmonitors",
            "again",
            propagation_policy=policy,
        )
        wait_for(lambda: or_none(cluster.get, DM, namespace, "again") is None, 20, "monitor gone")

    def ran_for(monitor: dict[str, Any], tj: dict[str, Any]) -> None:
        owners = [r["uid"] for r in tj["metadata"]["ownerReferences"]]
        assert owners == [monitor["metadata"]["uid"]]
        assert tj["status"]["startTime"] >= monitor["metadata"]["creationTimestamp"]
        job = _job(cluster, namespace, tj["status"]["jobName"])
        assert job is not None, "the retrain's Job never ran"
        assert [r.uid for r in job.metadata.owner_references] == [tj["metadata"]["uid"]]

    retrain_once("again-retrain-1")
    # Deleted as kubectl does (in the background): the garbage collector removes the
    # retrain and its Job.
    delete_monitor("Background")
    wait_for(lambda: or_none(cluster.get, TJ, namespace, "again-retrain-1") is None, 30, "GC")
    second, tj = retrain_once("again-retrain-1")
    ran_for(second, tj)
    # Orphaned: the old retrain stays, with no owner; the new monitor takes the next name.
    delete_monitor("Orphan")
    third, tj = retrain_once("again-retrain-2")
    ran_for(third, tj)
    assert not cluster.get(TJ, namespace, "again-retrain-1")["metadata"].get("ownerReferences")


def test_a_promotion_the_api_server_refuses_is_final(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """A promotion refused by an admission policy (the model of the deployment frozen)
    ends the retrain: Succeeded, not promoted, Warning PromotionFailed with the API
    server's words; never retried for ever."""
    train(tmp_path / "frozen-retrain-1", shift=2.0)
    champion = f"file://{model_v1}"
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    name = f"itest-frozen-{namespace}"
    admission.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["kubeloop.io"],
                            "apiVersions": ["v1alpha1"],
                            "operations": ["UPDATE"],
                            "resources": ["modeldeployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.spec.model.uri == oldObject.spec.model.uri",
                        "message": "the model of this deployment is frozen",
                    },
                    {
                        # The test's probe of whether the policy is in force yet.
                        "expression": "!has(object.metadata.annotations) || "
                        "!('itest-probe' in object.metadata.annotations)",
                        "message": "probe refused",
                    },
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    try:

        def frozen() -> bool:
            def annotate(value: str | None) -> None:
                cluster.custom.patch_namespaced_custom_object(
                    "kubeloop.io",
                    "v1alpha1",
                    namespace,
                    "modeldeployments",
                    "iris",
                    {"metadata": {"annotations": {"itest-probe": value}}},
                )

            try:
                annotate("1")
            except client.ApiException as err:
                return err.status in (400, 403, 422)
            annotate(None)
            return False

        wait_for(frozen, 30, "the admission policy in force")
        cluster.create(DM, namespace, "frozen", monitor_spec(server, tmp_path))
        wait_for(lambda: cluster.status(DM, namespace, "frozen").get("window"), 20, "baseline")
        server.send(shifted_rows(300, shift=2.0))
        record = _retrain_record(cluster, namespace, "frozen", "Succeeded")
        assert record["modelUri"] == f"file://{tmp_path}/frozen-retrain-1"
        cluster.await_events(namespace, "frozen", {"RetrainStarted", "PromotionFailed"})
        failed = [
            e.message
            for e in cluster.events_for(namespace, "frozen")
            if e.reason == "PromotionFailed"
        ]
        assert any("frozen" in m for m in failed), failed
        assert "Promoted" not in cluster.event_reasons(namespace, "frozen")
        assert cluster.get(MD, namespace, "iris")["spec"]["model"]["uri"] == champion
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


def test_a_retrain_the_api_server_refuses_is_failed_and_says_why(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """The retrain's TrainingJob refused (an admission policy allows none here): the
    retrain was counted first, then ends Failed with the API server's words, in its
    status, its message and a RetrainFailed Event after RetrainStarted."""
    cluster.create(MD, namespace, "iris", {"model": {"uri": f"file://{model_v1}"}})
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    name = f"itest-no-training-{namespace}"
    admission.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["kubeloop.io"],
                            "apiVersions": ["v1alpha1"],
                            "operations": ["CREATE"],
                            "resources": ["trainingjobs"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "no training here"}],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    try:

        def refused() -> bool:
            try:
                cluster.create(TJ, namespace, "probe", {"image": "registry.local/x:1"})
            except client.ApiException as err:
                return err.status in (400, 403, 422)
            cluster.delete(TJ, namespace, "probe")
            return False

        wait_for(refused, 30, "the admission policy in force")
        cluster.create(DM, namespace, "nope", monitor_spec(server, tmp_path))
        wait_for(lambda: cluster.status(DM, namespace, "nope").get("window"), 20, "baseline")
        server.send(shifted_rows(300, shift=2.0))
        record = _retrain_record(cluster, namespace, "nope", "Failed")
        assert record["trainingJob"] == "nope-retrain-1" and not record.get("created")
        status = cluster.status(DM, namespace, "nope")
        assert status["retrainCount"] == 1
        assert record["message"].startswith("refused by the API server: ")
        assert "no training here" in record["message"]
        # Told at once ("retrain ... refused by ..."), and by every later check until
        # the cooldown ends ("retrain ... failed (refused by ...)").
        assert "retrain nope-retrain-1 " in status["message"]
        assert "refused by the API server" in status["message"]
        reasons = cluster.await_events(namespace, "nope", {"RetrainStarted", "RetrainFailed"})
        failed = [
            e.message for e in cluster.events_for(namespace, "nope") if e.reason == "RetrainFailed"
        ]
        assert any("no training here" in m for m in failed), failed
        assert "Promoted" not in reasons
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


def _end_trial(cluster: Cluster, namespace: str, trial: str, loss: float) -> None:
    """End the held pod of an Experiment's trial, reporting `loss` as its final metric."""

    def held() -> list[Any] | None:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector=f"kubeloop.io/training-job={trial}"
        ).items
        return [p for p in pods if set(HOLD) <= set(p.metadata.annotations or {})] or None

    annotations: dict[str, str | None] = dict.fromkeys(HOLD)
    annotations["kubeloop.io/fake-message"] = json.dumps({"metrics": {"loss": loss}})
    for pod in wait_for(held, 30, f"a held pod of {trial}"):
        cluster.core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": annotations}}
        )


def test_a_retrain_that_is_a_search_puts_its_best_trial_before_the_gate(
    cluster: Cluster, namespace: str, server: ModelServer, model_v1: Path, tmp_path: Path
) -> None:
    """onDrift.retrain.experiment: on drift the monitor creates one Experiment (owned by
    it); when the search ends, its best trial's model is the challenger that the
    evaluation Job scores against the serving model, as one run's would be. On the
    simulated nodes the Job leaves no verdict: EvaluationFailed, the champion kept."""
    champion = f"file://{model_v1}"
    cluster.create(MD, namespace, "iris", {"model": {"uri": champion}})
    cluster.wait_phase(MD, namespace, "iris", "Ready", 30)
    spec = _gated(server, tmp_path)
    spec["onDrift"]["retrain"] = {
        "cooldown": "1h",
        "experiment": {
            "trainingJob": {
                "image": "registry.local/train:1",
                "output": {"uri": f"file://{tmp_path}/{{trainingJob}}"},
                "maxRestarts": 0,
                "podMetadata": {"annotations": HOLD},
            },
            "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 1, "log": True}],
            "objective": {"metric": "loss", "direction": "minimize"},
            "algorithm": {"name": "random", "seed": 1},
            "maxTrials": 2,
            "parallelTrials": 2,
        },
    }
    cluster.create(DM, namespace, "search", spec)
    wait_for(lambda: cluster.status(DM, namespace, "search").get("window"), 20, "baseline")
    server.send(shifted_rows(300, shift=2.0))

    exp = wait_for(
        lambda: cluster.get("Experiment", namespace, "search-retrain-1"),
        30,
        "the retrain's Experiment",
    )
    assert exp["metadata"]["ownerReferences"][0]["kind"] == DM
    running = cluster.status(DM, namespace, "search")["lastRetrain"]
    assert running["experiment"] == "search-retrain-1" and running["result"] == "Running"
    _end_trial(cluster, namespace, "search-retrain-1-trial-0", 0.5)
    _end_trial(cluster, namespace, "search-retrain-1-trial-1", 0.2)

    job = wait_for(
        lambda: _job(cluster, namespace, "search-retrain-1-trial-1-eval"),
        40,
        "the evaluation Job of the best trial",
    )
    args = job.spec.template.spec.containers[0].args
    assert args[args.index("--champion") + 1] == champion
    assert args[args.index("--challenger") + 1] == f"file://{tmp_path}/search-retrain-1-trial-1"
    record = _retrain_record(cluster, namespace, "search", "EvaluationFailed")
    assert record["experiment"] == "search-retrain-1"
    assert record["trainingJob"] == "search-retrain-1-trial-1"
    assert record["modelUri"] == f"file://{tmp_path}/search-retrain-1-trial-1"
    reasons = cluster.await_events(
        namespace, "search", {"RetrainStarted", "RetrainSearched", "EvaluationStarted"}
    )
    assert "Promoted" not in reasons
    assert cluster.get(MD, namespace, "iris")["spec"]["model"].get("uri") == champion
    tjs = cluster.custom.list_namespaced_custom_object(
        "kubeloop.io", "v1alpha1", namespace, "trainingjobs"
    )["items"]
    assert sorted(t["metadata"]["name"] for t in tjs) == [
        "search-retrain-1-trial-0",
        "search-retrain-1-trial-1",
    ]
