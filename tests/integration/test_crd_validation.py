"""Bad input is rejected by the real API server at `kubectl apply` time, with a
message that names the field and says what is wrong."""

from __future__ import annotations

import pytest
import yaml

from tests.kubetest import Cluster

INVALID = [
    (
        "tj-missing-image",
        "TrainingJob",
        {"workers": 1},
        "spec.image: Required value",
    ),
    (
        "tj-workers-zero",
        "TrainingJob",
        {"image": "x", "workers": 0},
        "spec.workers: Invalid value: 0: spec.workers in body should be greater than or equal to 1",
    ),
    (
        "tj-workers-string",
        "TrainingJob",
        {"image": "x", "workers": "two"},
        'spec.workers: Invalid value: "string": spec.workers in body must be of type integer',
    ),
    (
        "tj-negative-gpus",
        "TrainingJob",
        {"image": "x", "gpu": {"count": -1}},
        "spec.gpu.count in body should be greater than or equal to 0",
    ),
    (
        "tj-gpu-type-without-count",
        "TrainingJob",
        {"image": "x", "gpu": {"type": "NVIDIA-H100-80GB-HBM3"}},
        "gpu.type needs gpu.count greater than 0",
    ),
    (
        "tj-bad-memory",
        "TrainingJob",
        {"image": "x", "resources": {"memory": "lots"}},
        'spec.resources.memory: Invalid value: "lots": must be a Kubernetes quantity',
    ),
    (
        "tj-zero-deadline",
        "TrainingJob",
        {"image": "x", "activeDeadlineSeconds": 0},
        "spec.activeDeadlineSeconds in body should be greater than or equal to 1",
    ),
    (
        "tj-bad-toleration-operator",
        "TrainingJob",
        {"image": "x", "scheduling": {"tolerations": [{"operator": "Maybe"}]}},
        'spec.scheduling.tolerations[0].operator: Unsupported value: "Maybe"',
    ),
    (
        "md-both-sources",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1", "fromTrainingJob": {"name": "t"}}},
        "exactly one of uri or fromTrainingJob must be set",
    ),
    (
        "md-no-source",
        "ModelDeployment",
        {"model": {"format": "sklearn"}},
        "exactly one of uri or fromTrainingJob must be set",
    ),
    (
        "md-min-over-max",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    (
        "md-traffic-over-100",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2"}, "trafficPercent": 150},
        },
        "spec.canary.trafficPercent in body should be less than or equal to 100",
    ),
    (
        "md-autoscaled-canary-at-100",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "autoscaling": {"maxReplicas": 3},
            "canary": {"model": {"uri": "s3://m/2"}, "trafficPercent": 100},
        },
        "spec.canary.trafficPercent: Invalid value: canary.trafficPercent 100 needs fixed replicas",
    ),
    (
        "tj-memory-in-gigabytes",
        "TrainingJob",
        {"image": "x", "resources": {"memory": "4GB"}},
        'spec.resources.memory: Invalid value: "4GB": must be a Kubernetes quantity: a number '
        "with an optional suffix m, k, Ki, M, Mi, G, Gi, T, Ti, P, Pi, E or Ei, for example "
        "500m, 2, 4Gi or 4G (4GB is not one)",
    ),
    (
        "md-steps-not-rising",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2"}, "steps": [50, 25, 100]},
        },
        "spec.canary.steps: Invalid value: canary.steps must rise strictly",
    ),
    (
        "md-steps-repeated",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2"}, "steps": [25, 25, 100]},
        },
        "spec.canary.steps[1]: Duplicate value: 25",
    ),
    (
        "md-steps-not-ending-at-100",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "canary": {"model": {"uri": "s3://m/2"}, "steps": [10, 50]}},
        "spec.canary.steps: Invalid value: canary.steps must end at 100",
    ),
    (
        "md-step-zero",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "canary": {"model": {"uri": "s3://m/2"}, "steps": [0, 100]}},
        "spec.canary.steps[0] in body should be greater than or equal to 1",
    ),
    (
        "md-analysis-zero-error-bound",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2"}, "analysis": {"maxErrorPercent": 0}},
        },
        "spec.canary.analysis.maxErrorPercent in body should be greater than 0",
    ),
    (
        "md-analysis-negative-latency",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2"}, "analysis": {"maxLatencyP99Ms": -5}},
        },
        "spec.canary.analysis.maxLatencyP99Ms in body should be greater than 0",
    ),
    (
        "md-analysis-bad-interval",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2"}, "analysis": {"interval": "soon"}},
        },
        'spec.canary.analysis.interval: Invalid value: "soon"',
    ),
    (
        "md-route-path-dot-segment",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "route": {"gateway": {"name": "g"}, "path": "/a/../b"}},
        "route.path must not contain //, /./ or /../",
    ),
    (
        "md-canary-both-sources",
        "ModelDeployment",
        {
            "model": {"uri": "s3://m/1"},
            "canary": {"model": {"uri": "s3://m/2", "fromTrainingJob": {"name": "t"}}},
        },
        "exactly one of uri or fromTrainingJob must be set",
    ),
    (
        "md-missing-model",
        "ModelDeployment",
        {"replicas": 2},
        "spec.model: Required value",
    ),
    (
        "dm-bad-method",
        "DriftMonitor",
        {"modelDeployment": "m", "method": "vibes"},
        'spec.method: Unsupported value: "vibes"',
    ),
    (
        "dm-negative-threshold",
        "DriftMonitor",
        {"modelDeployment": "m", "threshold": -0.1},
        "spec.threshold in body should be greater than 0",
    ),
    (
        "dm-prometheus-without-settings",
        "DriftMonitor",
        {"modelDeployment": "m", "source": {"type": "prometheus"}},
        "source.prometheus is required when source.type is prometheus",
    ),
    (
        "dm-bad-interval",
        "DriftMonitor",
        {"modelDeployment": "m", "interval": "every minute"},
        "spec.interval in body should match",
    ),
    (
        "dm-promote-without-retrain",
        "DriftMonitor",
        {"modelDeployment": "m", "onDrift": {"promote": True}},
        "onDrift.promote needs onDrift.retrain",
    ),
    (
        "dm-evaluate-without-retrain",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {"evaluate": {"data": {"uri": "pvc://d/holdout.csv"}, "metric": "accuracy"}},
        },
        "onDrift.evaluate needs onDrift.retrain",
    ),
    (
        "dm-evaluate-unknown-metric",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {
                "retrain": {"template": {"image": "x"}},
                "evaluate": {"data": {"uri": "pvc://d/h.csv"}, "metric": "precision"},
            },
        },
        'spec.onDrift.evaluate.metric: Unsupported value: "precision"',
    ),
    (
        "dm-evaluate-remote-data",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {
                "retrain": {"template": {"image": "x"}},
                "evaluate": {"data": {"uri": "s3://bucket/h.csv"}, "metric": "accuracy"},
            },
        },
        "onDrift.evaluate.data.uri must be pvc://CLAIM/PATH, file:// or a path",
    ),
    (
        "dm-evaluate-negative-improvement",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {
                "retrain": {"template": {"image": "x"}},
                "evaluate": {
                    "data": {"uri": "pvc://d/h.csv"},
                    "metric": "accuracy",
                    "minImprovement": -0.1,
                },
            },
        },
        "spec.onDrift.evaluate.minImprovement in body should be greater than or equal to 0",
    ),
    (
        "tj-negative-progress-port",
        "TrainingJob",
        {"image": "x", "progressPort": -1},
        "spec.progressPort in body should be greater than or equal to 0",
    ),
    (
        "dm-missing-target",
        "DriftMonitor",
        {"method": "psi"},
        "spec.modelDeployment: Required value",
    ),
]


@pytest.mark.parametrize(("name", "kind", "spec", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_manifest_is_rejected_with_a_clear_message(
    cluster: Cluster, name: str, kind: str, spec: dict, message: str
) -> None:
    manifest = yaml.safe_dump(
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )
    result = cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0, f"{name} was accepted"
    assert "is invalid" in result.stderr
    assert message in result.stderr, result.stderr


def test_valid_manifests_are_accepted_and_defaulted(cluster: Cluster) -> None:
    manifest = yaml.safe_dump(
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "defaults", "namespace": "default"},
            "spec": {"image": "x"},
        }
    )
    result = cluster.kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", "-", input=manifest)
    applied = yaml.safe_load(result.stdout)["spec"]
    assert applied["workers"] == 1
    assert applied["maxRestarts"] == 3
    assert applied["masterPort"] == 29500
    assert applied["progressPort"] == 9464
    assert applied["suspend"] is False


def test_explain_shows_the_field_descriptions(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "trainingjob.spec.gpu.type").stdout
    assert "nvidia.com/gpu.product" in out
    out = cluster.kubectl("explain", "modeldeployment.spec.canary.trafficPercent").stdout
    assert "replica ratio" in out
    # Defaults and bounds are in the text that explain shows.
    assert "Default: 10. Range: 0 to 100." in " ".join(out.split())
