"""BatchPrediction on the local control plane (kwok pods), operator in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubeloop.drift.profile import FeatureProfile, Profile, bins_hash
from tests.kubetest import Cluster, stays, wait_for

BP = "BatchPrediction"
MD = "ModelDeployment"


def spec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"uri": "s3://models/iris/v1"},
        "input": {"uri": "pvc://data/events", "passThrough": ["user_id"]},
        "output": {"uri": "pvc://scores/events"},
    }
    base.update(extra)
    return base


def claim(cluster: Cluster, ns: str, name: str) -> None:
    """A claim bound to a volume made for it (no provisioner on this cluster)."""
    cluster.core.create_persistent_volume({
        "metadata": {"name": f"{ns}-{name}"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "static",
            "hostPath": {"path": f"/tmp/{ns}-{name}"},
            "claimRef": {"namespace": ns, "name": name},
        },
    })
    cluster.core.create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "static",
            "volumeName": f"{ns}-{name}",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    })


def condition(cluster: Cluster, ns: str, name: str, ctype: str) -> dict[str, Any] | None:
    return cluster.condition(BP, ns, name, ctype)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"model": {"uri": "s3://m/1", "fromTrainingJob": {"name": "t"}}},
            "set exactly one of uri, fromTrainingJob, fromModelDeployment or fromExperiment",
        ),
        ({"input": {"uri": "https://host/in"}}, "must be pvc://CLAIM/PATH, s3://BUCKET/PREFIX"),
        ({"input": {"uri": "s3://Bad_Bucket/in"}}, "an s3:// bucket name is 3-63 lowercase"),
        ({"output": {"uri": "s3://scores//out"}}, "its key has no empty segment"),
        ({"output": {"uri": "s3://"}}, "an s3:// location names its bucket"),
        ({"s3": {"endpoint": "minio:9000"}}, "must be http(s)://HOST[:PORT], with no path"),
        ({"s3": {"endpoint": "http://minio:9000/data"}}, "must be http(s)://HOST[:PORT]"),
        ({"s3": {"credentialsSecret": "Not_A_Name"}}, "spec.s3.credentialsSecret"),
        ({"output": {"uri": "pvc://data/events"}}, "output.uri must differ from input.uri"),
        (
            {"output": {"uri": "pvc://s/o", "predictions": False, "probabilities": False,
                        "passThrough": False}},
            "the output would hold no column",
        ),
        ({"parallelism": 0}, "should be greater than or equal to 1"),
    ],
)
def test_bad_specs_are_refused_at_apply_time(
    cluster: Cluster, namespace: str, bad: dict[str, Any], message: str
) -> None:
    manifest = yaml.safe_dump({
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": BP,
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": spec(**bad),
    })
    out = cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_from_model_deployment_records_the_served_model(cluster: Cluster, namespace: str) -> None:
    claim(cluster, namespace, "data")
    claim(cluster, namespace, "scores")
    cluster.create(BP, namespace, "nightly", spec(
        model={"fromModelDeployment": {"name": "web"}}, parallelism=2,
        resources={"cpu": "2", "memory": "1Gi"},
    ))
    waiting = wait_for(
        lambda: (c := condition(cluster, namespace, "nightly", "Ready"))
        and c["reason"] == "ModelDeploymentNotFound" and c,
        30, "the ModelDeployment to be waited for",
    )
    assert "web" in waiting["message"]
    assert cluster.batch.list_namespaced_job(namespace).items == []

    cluster.create(MD, namespace, "web", {"model": {"uri": "https://models.local/iris/v1"}})
    status = wait_for(
        lambda: cluster.status(BP, namespace, "nightly").get("model"), 30, "model recorded"
    )
    assert status == {"uri": "https://models.local/iris/v1", "source": "ModelDeployment/web"}

    job = wait_for(
        lambda: cluster.batch.list_namespaced_job(
            namespace, label_selector="kubeloop.io/batch-prediction=nightly").items,
        30, "the Job",
    )[0]
    assert job.spec.completion_mode == "Indexed"
    assert job.spec.completions == job.spec.parallelism == 2
    assert job.spec.pod_replacement_policy == "Failed"
    assert job.metadata.owner_references[0].kind == BP
    pod = job.spec.template.spec
    assert pod.security_context.run_as_non_root and pod.automount_service_account_token is False
    scorer = pod.containers[0]
    assert scorer.args[:2] == ["batch", "score"]
    assert "file:///mnt/pvc/data/events" in scorer.args
    assert scorer.args[scorer.args.index("--workers") + 1] == "2"
    assert scorer.security_context.read_only_root_filesystem
    assert scorer.security_context.capabilities.drop == ["ALL"]
    mounts = {m.mount_path: m.read_only for m in scorer.volume_mounts}
    assert mounts["/mnt/pvc/data"] is True and not mounts["/mnt/pvc/scores"]
    assert pod.init_containers[0].args[:2] == ["fetch-model", "https://models.local/iris/v1"]

    # The deployment moves on; the run keeps the model it started with.
    cluster.patch_spec(MD, namespace, "web", {"model": {"uri": "https://models.local/iris/v2"}})
    wait_for(
        lambda: cluster.status(MD, namespace, "web").get("activeModelUri")
        == "https://models.local/iris/v2",
        30, "the deployment serves v2",
    )
    done = cluster.wait_phase(BP, namespace, "nightly", "Succeeded", 60)
    assert done["model"]["uri"] == "https://models.local/iris/v1"
    assert [s["state"] for s in done["shards"]] == ["Succeeded", "Succeeded"]


def test_s3_credentials_reach_the_pods_by_reference_only(
    cluster: Cluster, namespace: str
) -> None:
    """The Secret's keys become the scorer's environment through secretKeyRef: the Job
    names the Secret, never holds a value, and mounts no claim for s3:// data."""
    values = {"AWS_ACCESS_KEY_ID": "AKIDINTEGRATION", "AWS_SECRET_ACCESS_KEY": "s3cr3t-v4lue"}
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "lake"}, "stringData": values}
    )
    cluster.create(BP, namespace, "lake", spec(
        input={"uri": "s3://lake/events/**/*.parquet", "passThrough": ["user_id"]},
        output={"uri": "s3://lake/scores/"},
        s3={"endpoint": "http://minio.storage:9000", "region": "eu-west-1",
            "credentialsSecret": "lake"},
    ))
    job = wait_for(
        lambda: cluster.batch.list_namespaced_job(
            namespace, label_selector="kubeloop.io/batch-prediction=lake").items,
        30, "the Job",
    )[0]
    scorer = job.spec.template.spec.containers[0]
    env = {e.name: e for e in scorer.env}
    assert env["AWS_ENDPOINT_URL"].value == "http://minio.storage:9000"
    assert env["AWS_REGION"].value == "eu-west-1"
    for key in (*values, "AWS_SESSION_TOKEN"):
        ref = env[key].value_from.secret_key_ref
        assert (ref.name, ref.key, env[key].value) == ("lake", key, None)
    assert env["AWS_SESSION_TOKEN"].value_from.secret_key_ref.optional is True
    assert "s3://lake/events/**/*.parquet" in scorer.args and "s3://lake/scores/" in scorer.args
    text = json.dumps(cluster.batch.api_client.sanitize_for_serialization(job))
    assert not [v for v in values.values() if v in text], "a secret value is in the Job"
    assert not [v for v in job.spec.template.spec.volumes if v.persistent_volume_claim]


def test_a_failed_index_shows_its_cause_with_its_error(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(BP, namespace, "broken", spec(
        input={"uri": "file:///data/in"},
        output={"uri": "file:///data/out"},
        backoffLimit=0,
        podMetadata={"annotations": {
            "kubeloop.io/fake-exit-code": "2",
            "kubeloop.io/fake-message": "kubeloop batch: /mnt/pvc/data/x.parquet: missing "
            "columns: petal_width_cm",
        }},
    ))
    cluster.wait_phase(BP, namespace, "broken", "Failed", 60)
    ready = condition(cluster, namespace, "broken", "Ready")
    assert ready is not None and ready["reason"] == "ColumnsMissing"
    assert "index 0 failed: exit code 2" in ready["message"]
    assert "missing columns: petal_width_cm" in ready["message"]
    assert condition(cluster, namespace, "broken", "Stalled")["status"] == "True"  # type: ignore[index]


def test_progress_and_output_rows_add_the_pods_up(cluster: Cluster, namespace: str) -> None:
    # Each simulated pod ends with the final report a scoring pod writes (its rows, its
    # rate, the model's sha256; the output's manifest from the last pod, here both) as its
    # termination message.
    manifest = {"rows": 300, "files": 2, "sha256": "ab" * 32}
    final = json.dumps({"step": 150, "totalSteps": 150, "metrics": {"rows_per_second": 75.0},
                        "batch": {"model": "cd" * 32, "output": manifest}})
    cluster.create(BP, namespace, "counted", spec(
        input={"uri": "file:///data/in"}, output={"uri": "file:///data/out"}, parallelism=2,
        podMetadata={"annotations": {"kubeloop.io/fake-message": final}},
    ))
    done = cluster.wait_phase(BP, namespace, "counted", "Succeeded", 60)
    assert done["progress"]["rowsDone"] == done["progress"]["rowsTotal"] == 300
    assert done["progress"]["percent"] == 100.0
    assert done["progress"]["rowsPerSecond"] == 150.0
    assert done["output"] == {"uri": "file:///data/out", **manifest}
    assert done["model"]["sha256"] == "cd" * 32
    assert [(s["index"], s["rows"]) for s in done["shards"]] == [(0, 150), (1, 150)]
    row = cluster.kubectl("get", "bp", "counted", "-n", namespace, "--no-headers").stdout.split()
    assert row[:6] == ["counted", "Succeeded", "Succeeded", "300", "100", "150"]


def batch_report(counts: list[int]) -> str:
    """The final message of a scoring pod that wrote the output's manifest."""
    rows = sum(counts)
    return json.dumps({"step": rows, "totalSteps": rows, "batch": {
        "model": "cd" * 32, "output": {"rows": rows, "files": 1, "sha256": "ab" * 32},
        "drift": {"rows": rows, "reference": bins_hash(PROFILE), "features": {"x": counts}}}})


PROFILE = Profile(rows=100, features=[FeatureProfile(
    name="x", kind="numeric", edges=[0.0, 1.0, 2.0], counts=[25, 25, 25, 25])])


def test_a_drift_monitor_judges_each_run_of_a_schedule_once(
    cluster: Cluster, namespace: str
) -> None:
    """The counts a run's last pod reports (kubeloop/batch/drift.py) reach
    status.drift; a DriftMonitor with source batchPrediction waits for a run with its
    labels, judges the newest that succeeded against the reference once, keeps that
    verdict, and judges the next run of the schedule when it succeeds."""
    cluster.core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "reference"},
        "data": {"profile.json": PROFILE.model_dump_json()},
    })
    cluster.create(MD, namespace, "web", {"model": {"uri": "https://models.local/iris/v1"}})
    cluster.create("DriftMonitor", namespace, "nightly-drift", {
        "modelDeployment": "web", "interval": "2s",
        "source": {"type": "batchPrediction", "batchPredictionLabels": {"schedule": "nightly"}},
        "reference": {"configMap": {"name": "reference"}},
    })
    waiting = wait_for(
        lambda: (c := cluster.condition("DriftMonitor", namespace, "nightly-drift", "Ready"))
        and c["reason"] == "BatchPending" and c, 30, "the monitor to wait for a run")
    assert "a BatchPrediction labelled schedule=nightly" in waiting["message"]

    def run(name: str, counts: list[int]) -> dict[str, Any]:
        cluster.create(BP, namespace, name, spec(
            input={"uri": f"file:///data/{name}"}, output={"uri": f"file:///scores/{name}"},
            podMetadata={"annotations": {"kubeloop.io/fake-message": batch_report(counts)}},
        ), labels={"schedule": "nightly"})
        done = cluster.wait_phase(BP, namespace, name, "Succeeded", 60)
        assert done["drift"]["features"] == {"x": counts} and done["drift"]["rows"] == 1000
        return dict(cluster.get(BP, namespace, name)["metadata"])

    # The first night every row landed in the last bin: drifted.
    first = run("night-1", [0, 0, 30, 970])
    judged = cluster.wait_phase("DriftMonitor", namespace, "nightly-drift", "Drifted", 30)
    assert judged["judgedBatch"] == f"night-1/{first['uid']}" and judged["samples"] == 1000
    # Judged once: the finished run is not judged again at every interval.
    stays(lambda: cluster.status("DriftMonitor", namespace, "nightly-drift")["lastCheckTime"]
          == judged["lastCheckTime"], 5, "the verdict of the one run")

    # The next night looks like the reference: judged when it succeeds.
    second = run("night-2", [250, 250, 250, 250])
    healthy = cluster.wait_phase("DriftMonitor", namespace, "nightly-drift", "Healthy", 30)
    assert healthy["judgedBatch"] == f"night-2/{second['uid']}"
