"""The BatchPrediction's Job, rendered without a cluster."""

from __future__ import annotations

from typing import Any

from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.render.batchprediction import render_job

OWNER = {"apiVersion": "kubeloop.io/v1alpha1", "kind": "BatchPrediction", "name": "n", "uid": "u"}


def job(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"uri": "pvc://models/iris/v1"},
        "input": {"uri": "pvc://data/events", "passThrough": ["user_id"]},
        "output": {"uri": "pvc://scores/events"},
        **extra,
    }
    spec = BatchPredictionSpec.model_validate(raw)
    return render_job(spec, "nightly", "ns", "pvc://models/iris/v1", "img:1", OWNER)


def test_an_indexed_job_of_parallelism_pods_one_per_index_at_a_time() -> None:
    spec = job(parallelism=4, backoffLimit=1, activeDeadlineSeconds=600)["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] == 1
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["activeDeadlineSeconds"] == 600
    fail_index = spec["podFailurePolicy"]["rules"][0]
    assert fail_index["action"] == "FailIndex" and fail_index["onExitCodes"]["values"] == [2]
    env = {e["name"]: e["value"] for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBELOOP_BATCH_COUNT"] == "4"


def test_the_command_states_the_spec() -> None:
    args = job(
        output={"uri": "pvc://scores/e", "format": "csv", "probabilities": False,
                "ifExists": "overwrite"},
        resources={"cpu": "3", "memory": "2Gi"},
        batchRows=1000,
    )["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["batch", "score", "--model-dir", "/mnt/model"]
    pairs = dict(zip(args[2::2], args[3::2], strict=False))
    assert "--input" in args and args[args.index("--input") + 1] == "file:///mnt/pvc/data/events"
    assert args[args.index("--output") + 1] == "file:///mnt/pvc/scores/e"
    assert args[args.index("--format") + 1] == "csv"
    assert args[args.index("--if-exists") + 1] == "overwrite"
    assert args[args.index("--workers") + 1] == "3"
    assert args[args.index("--passthrough") + 1] == "user_id"
    assert "--no-probabilities" in args and "--no-predictions" not in args
    assert args[args.index("--batch-rows") + 1] == "1000"
    assert pairs  # the flags come in pairs after the subcommand


def test_one_scoring_process_per_cpu_requested_a_part_counting_as_one() -> None:
    def workers(cpu: str | None) -> str:
        resources = {"resources": {"cpu": cpu}} if cpu else {}
        args = job(**resources)["spec"]["template"]["spec"]["containers"][0]["args"]
        return str(args[args.index("--workers") + 1])

    assert workers(None) == "1"
    assert workers("500m") == "1"
    assert workers("1") == "1"
    # A 2-core node offers 1800m at most: a pod asking for 1700m scores on both cores.
    assert workers("1700m") == "2"
    assert workers("2") == "2"


def test_restricted_pod_security_and_mounts() -> None:
    pod = job()["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True
    }
    assert pod["automountServiceAccountToken"] is False
    for container in [*pod["initContainers"], *pod["containers"]]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"]
    scorer, fetch = pod["containers"][0], pod["initContainers"][0]
    mounts = {m["mountPath"]: m.get("readOnly") for m in scorer["volumeMounts"]}
    assert mounts == {"/mnt/model": True, "/tmp": None, "/mnt/pvc/scores": False,
                      "/mnt/pvc/data": True}
    assert fetch["args"] == ["fetch-model", "file:///mnt/pvc/models/iris/v1", "/mnt/model"]
    assert {m["mountPath"] for m in fetch["volumeMounts"]} == {"/mnt/model", "/mnt/pvc/models"}
    assert len({v["name"] for v in pod["volumes"]}) == len(pod["volumes"])


def test_one_claim_for_input_and_output_is_mounted_once_writable() -> None:
    pod = job(output={"uri": "pvc://data/scores"})["spec"]["template"]["spec"]
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert [(v["persistentVolumeClaim"]["claimName"], v["persistentVolumeClaim"]["readOnly"])
            for v in claims] == [("data", False), ("models", True)]


def test_s3_settings_are_the_scorers_environment_the_secret_by_reference() -> None:
    pod = job(
        input={"uri": "s3://lake/events/"},
        output={"uri": "s3://lake/scores/"},
        s3={"endpoint": "https://minio.storage:9000/", "region": "eu-west-1",
            "credentialsSecret": "lake-keys"},
    )["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://minio.storage:9000"
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "lake-keys",
                                                                         "key": key}}}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # No claim for s3:// data; the model's claim is the fetch container's only.
    assert [v["name"] for v in pod["volumes"]] == ["model", "tmp", "pvc-models"]
    assert not [m for m in pod["containers"][0]["volumeMounts"] if m["name"].startswith("pvc-")]
    # Without spec.s3 the pods get no AWS setting (the SDK's default chain).
    plain = job(input={"uri": "s3://lake/events/"}, output={"uri": "s3://lake/scores/"})
    names = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not {n for n in names if n.startswith("AWS_")}
