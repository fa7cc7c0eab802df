"""`pvc://CLAIM/PATH` locations in the pods the renderers make."""

from __future__ import annotations

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.render import storage
from kubeloop.render.modeldeployment import pod_template as md_pod
from kubeloop.render.trainingjob import pod_template as tj_pod


def test_parse_and_local_uri() -> None:
    assert storage.parse("pvc://models/iris/v1") == ("models", "iris/v1")
    assert storage.parse("file:///models/iris") is None
    assert storage.parse("s3://bucket/x") is None
    assert storage.local_uri("pvc://models/iris/v1") == "file:///mnt/pvc/models/iris/v1"
    assert storage.local_uri("pvc://models") == "file:///mnt/pvc/models"
    assert storage.local_uri("s3://bucket/x") == "s3://bucket/x"


def test_long_claim_names_give_dns_labels() -> None:
    long = "c" * 200
    name = storage.volume_name(long)
    assert len(name) <= 63 and name != storage.volume_name("c" * 199)


def env(container: dict[str, object]) -> dict[str, object]:
    return {e["name"]: e.get("value") for e in container["env"]}  # type: ignore[attr-defined,index]


def test_training_output_claim_is_mounted_writable_and_passed_as_file_uri() -> None:
    spec = TrainingJobSpec.model_validate({
        "image": "img",
        "dataset": {"uri": "pvc://data/iris.csv"},
        "output": {"uri": "pvc://models/iris/v2"},
    })
    pod = tj_pod(spec, "job", "ns", 0)["spec"]
    container = pod["containers"][0]
    assert env(container)["KUBELOOP_OUTPUT_URI"] == "file:///mnt/pvc/models/iris/v2"
    assert env(container)["KUBELOOP_DATASET_URI"] == "file:///mnt/pvc/data/iris.csv"
    mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"]}
    assert mounts == {"/mnt/pvc/models": False, "/mnt/pvc/data": True}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {"models", "data"}


def test_dataset_on_the_output_claim_is_mounted_once_writable() -> None:
    spec = TrainingJobSpec.model_validate({
        "image": "img",
        "dataset": {"uri": "pvc://models/data.csv"},
        "output": {"uri": "pvc://models/out"},
    })
    pod = tj_pod(spec, "job", "ns", 0)["spec"]
    assert [m["readOnly"] for m in pod["containers"][0]["volumeMounts"]] == [False]
    assert len(pod["volumes"]) == 1


def test_served_model_claim_is_read_only_in_the_fetch_container_only() -> None:
    spec = ModelDeploymentSpec.model_validate({
        "model": {"uri": "pvc://models/iris/v1"},
        "scheduling": {"nodeSelector": {"pool": "serve"},
                       "tolerations": [{"key": "dedicated", "operator": "Exists"}]},
    })
    pod = md_pod(spec, "iris", "stable", "pvc://models/iris/v1", "img")["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["args"] == ["fetch-model", "file:///mnt/pvc/models/iris/v1", "/mnt/models"]
    assert {"name": "pvc-models", "mountPath": "/mnt/pvc/models", "readOnly": True} in (
        fetch["volumeMounts"])
    assert all(m["name"] != "pvc-models" for m in pod["containers"][0]["volumeMounts"])
    assert {"name": "pvc-models",
            "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert pod["nodeSelector"] == {"pool": "serve"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
