"""Bad input is rejected by the real API server at `kubectl apply` time, with a
message that names the field and says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.kubetest import Cluster

EXPERIMENT: dict[str, Any] = {
    "trainingJob": {"image": "registry.local/train:1"},
    "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 0.1, "log": True}],
    "objective": {"metric": "loss", "direction": "minimize"},
}

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
        "exactly one of uri, fromTrainingJob or fromExperiment must be set",
    ),
    (
        "md-no-source",
        "ModelDeployment",
        {"model": {"format": "sklearn"}},
        "exactly one of uri, fromTrainingJob or fromExperiment must be set",
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
        "exactly one of uri, fromTrainingJob or fromExperiment must be set",
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
        "dm-batch-without-a-run",
        "DriftMonitor",
        {"modelDeployment": "m", "source": {"type": "batchPrediction"}},
        "source.type batchPrediction needs source.batchPrediction (a name) or "
        "source.batchPredictionLabels, not both",
    ),
    (
        "dm-performance-two-thresholds",
        "DriftMonitor",
        {"modelDeployment": "m", "performance": {"minimum": 0.8, "maxDrop": 0.05}},
        "performance: set exactly one threshold",
    ),
    (
        "dm-performance-no-threshold",
        "DriftMonitor",
        {"modelDeployment": "m", "performance": {"metric": "accuracy"}},
        "performance: set exactly one threshold",
    ),
    (
        "dm-performance-floor-on-an-error",
        "DriftMonitor",
        {"modelDeployment": "m", "performance": {"metric": "rmse", "minimum": 1.0}},
        "performance.minimum is a floor for accuracy or f1",
    ),
    (
        "dm-performance-ceiling-on-accuracy",
        "DriftMonitor",
        {"modelDeployment": "m", "performance": {"maximum": 0.5}},
        "performance.maximum is a ceiling for rmse or mae",
    ),
    (
        "dm-performance-estimated-rmse",
        "DriftMonitor",
        {"modelDeployment": "m",
         "performance": {"metric": "rmse", "source": "estimated", "maxDrop": 0.1}},
        "performance.source estimated needs metric accuracy",
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
        "dm-evaluate-without-data",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {
                "retrain": {"template": {"image": "x"}},
                "evaluate": {"metric": "accuracy", "live": {"mode": "Beside"}},
            },
        },
        "onDrift.evaluate needs data (a labelled holdout), unless live.mode is Instead",
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
        "dm-shadow-without-promote",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {"retrain": {"template": {"image": "x"}}, "shadow": {}},
        },
        "onDrift.shadow needs promote: true (it is a trial before a promotion)",
    ),
    (
        "dm-shadow-significance-one",
        "DriftMonitor",
        {
            "modelDeployment": "m",
            "onDrift": {
                "promote": True,
                "retrain": {"template": {"image": "x"}},
                "shadow": {"significance": 1, "require": "Best"},
            },
        },
        "spec.onDrift.shadow.significance in body should be less than 1",
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
    # Locations Kubeloop cannot read or mount: refused with the scheme and the forms
    # allowed, wherever a model or data location is accepted.
    (
        "md-gs-model",
        "ModelDeployment",
        {"model": {"uri": "gs://bucket/iris/v1"}},
        'spec.model.uri: Invalid value: "gs://bucket/iris/v1": scheme gs:// is not supported: use '
        "http(s)://HOST/PATH, s3://BUCKET/KEY, pvc://CLAIM/PATH, file:///PATH or an absolute "
        "path",
    ),
    (
        "md-gs-canary",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "canary": {"model": {"uri": "gs://bucket/v2"}}},
        "spec.canary.model.uri: Invalid value: \"gs://bucket/v2\": scheme gs:// is not supported",
    ),
    (
        "md-relative-model-path",
        "ModelDeployment",
        {"model": {"uri": "models/iris"}},
        'spec.model.uri: Invalid value: "models/iris": must be a URI or an absolute path',
    ),
    (
        "md-pvc-without-claim",
        "ModelDeployment",
        {"model": {"uri": "pvc:///iris/v1"}},
        "spec.model.uri: Invalid value: \"pvc:///iris/v1\": a pvc:// location is pvc://CLAIM/PATH",
    ),
    (
        "md-pvc-upper-case-claim",
        "ModelDeployment",
        {"model": {"uri": "pvc://Models/iris"}},
        "a pvc:// location is pvc://CLAIM/PATH, CLAIM a PersistentVolumeClaim of this namespace",
    ),
    (
        "md-s3-without-bucket",
        "ModelDeployment",
        {"model": {"uri": "s3:///iris/v1"}},
        "spec.model.uri: Invalid value: \"s3:///iris/v1\": an s3:// location names its bucket",
    ),
    (
        "md-file-with-host",
        "ModelDeployment",
        {"model": {"uri": "file://models/iris"}},
        "a file:// location is an absolute path inside the pod: file:///PATH",
    ),
    (
        "md-https-without-host",
        "ModelDeployment",
        {"model": {"uri": "https:///iris"}},
        "an http(s):// location names its host",
    ),
    (
        "tj-gs-dataset",
        "TrainingJob",
        {"image": "x", "dataset": {"uri": "gs://bucket/data.csv"}},
        "spec.dataset.uri: Invalid value: \"gs://bucket/data.csv\": scheme gs:// is not supported",
    ),
    (
        "tj-hdfs-output",
        "TrainingJob",
        {"image": "x", "output": {"uri": "hdfs://nn/models/a"}},
        "spec.output.uri: Invalid value: \"hdfs://nn/models/a\": scheme hdfs:// is not supported",
    ),
    (
        "dm-gs-retrain-output",
        "DriftMonitor",
        {"modelDeployment": "m", "onDrift": {"retrain": {"template": {
            "image": "x", "output": {"uri": "gs://b/{trainingJob}"}}}}},
        "spec.onDrift.retrain.template.output.uri: Invalid value: \"gs://b/{trainingJob}\": "
        "scheme gs:// is not supported",
    ),
    (
        "tj-hyperparameter-name",
        "TrainingJob",
        {"image": "x", "hyperparameters": {"learning rate": "0.1", "ok": "1"}},
        "spec.hyperparameters: Invalid value: hyperparameter names are letters, digits, '_', "
        "'-' and '.', starting with a letter or '_'",
    ),
    (
        "tj-hyperparameters-same-variable",
        "TrainingJob",
        {"image": "x", "hyperparameters": {"learning-rate": "0.1", "learning_rate": "0.2"}},
        "spec.hyperparameters: Invalid value: two hyperparameter names differ only in case, "
        "'-', '.' or '_', so both would set the same HP_<NAME> variable",
    ),
    (
        "tj-progress-port-is-master-port",
        "TrainingJob",
        {"image": "x", "progressPort": 29500},
        "spec.progressPort: Invalid value: progressPort and masterPort must differ",
    ),
    (
        "md-bad-service-account",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "serviceAccountName": "Not_A_Valid_Name"},
        "spec.serviceAccountName in body should match",
    ),
    # An Experiment's search space: refused at apply time, each mistake named.
    *[
        (f"exp-{case}", "Experiment", {**EXPERIMENT, **fields}, message)
        for case, fields, message in [
            ("min-over-max", {"parameters": [{"name": "lr", "type": "float", "min": 1,
                                              "max": 0.1}]},
             "spec.parameters[0]: Invalid value: min must be less than max"),
            ("log-from-zero", {"parameters": [{"name": "lr", "type": "float", "min": 0,
                                               "max": 1, "log": True}]},
             "a log-scale parameter needs min greater than 0"),
            ("log-and-step", {"parameters": [{"name": "lr", "type": "float", "min": 0.1,
                                              "max": 1, "log": True, "step": 0.1}]},
             "a parameter is either log-scale or stepped, not both"),
            ("no-bounds", {"parameters": [{"name": "depth", "type": "int", "min": 2}]},
             "a float or int parameter needs min and max"),
            ("int-fraction", {"parameters": [{"name": "depth", "type": "int", "min": 2,
                                              "max": 8.5}]},
             "an int parameter's min, max and step are whole numbers"),
            ("empty-categorical", {"parameters": [{"name": "opt", "type": "categorical"}]},
             "a categorical parameter needs at least one value in values"),
            ("bounds-on-categorical", {"parameters": [{"name": "opt", "type": "categorical",
                                                       "values": ["a"], "min": 1}]},
             "a categorical parameter takes values, not min, max, step or log"),
            ("values-on-float", {"parameters": [{"name": "lr", "type": "float", "min": 0,
                                                 "max": 1, "values": ["a"]}]},
             "values are for categorical parameters"),
            ("repeated-value", {"parameters": [{"name": "opt", "type": "categorical",
                                                "values": ["a", "a"]}]},
             "spec.parameters[0].values[1]: Duplicate value: \"a\""),
            ("repeated-name", {"parameters": [
                {"name": "lr", "type": "float", "min": 0.1, "max": 1},
                {"name": "lr", "type": "float", "min": 0.1, "max": 1}]},
             "spec.parameters[1]: Duplicate value: {\"name\":\"lr\"}"),
            ("bad-name", {"parameters": [{"name": "learning rate", "type": "float", "min": 0.1,
                                          "max": 1}]},
             "spec.parameters[0].name in body should match"),
            ("no-parameters", {"parameters": []},
             "spec.parameters: Invalid value: 0: spec.parameters in body should have at least 1 "
             "items"),
            ("unknown-type", {"parameters": [{"name": "lr", "type": "bool"}]},
             "spec.parameters[0].type: Unsupported value: \"bool\""),
            ("grid-without-step", {"algorithm": {"name": "grid"}},
             "spec.algorithm.name: Invalid value: algorithm grid needs a step on "
             "every float parameter"),
            ("unknown-algorithm", {"algorithm": {"name": "bayes"}},
             "spec.algorithm.name: Unsupported value: \"bayes\""),
            ("parallel-over-max", {"maxTrials": 4, "parallelTrials": 5},
             "spec.parallelTrials: Invalid value: parallelTrials must not exceed "
             "maxTrials"),
            ("searched-and-fixed", {"trainingJob": {"image": "x",
                                                    "hyperparameters": {"lr": "0.1"}}},
             "a searched parameter is also set in trainingJob.hyperparameters"),
            ("two-computes", {"compute": "small", "trainingJob": {"image": "x",
                                                                   "compute": "big"}},
             "spec.compute: Invalid value: set compute or trainingJob.compute, "
             "not both"),
            ("shared-output", {"trainingJob": {"image": "x",
                                               "output": {"uri": "pvc://models/q"}}},
             "spec.trainingJob.output.uri: Invalid value: trainingJob.output.uri needs "
             "{trainingJob}, which becomes each trial's name"),
            ("no-direction", {"objective": {"metric": "loss"}},
             "spec.objective.direction: Required value"),
            ("hyperband-without-max", {"earlyStopping": {"name": "hyperband"}},
             "hyperband needs maxResource"),
            ("reduction-factor-one", {"earlyStopping": {"name": "successiveHalving",
                                                        "reductionFactor": 1}},
             "spec.earlyStopping.reductionFactor in body should be greater than or equal to 2"),
            ("bad-template", {"trainingJob": {"image": "x", "workers": 0}},
             "spec.trainingJob.workers in body should be greater than or equal to 1"),
            ("no-template", {"trainingJob": None},
             "spec.trainingJob: Required value"),
        ]
    ],
    (
        "md-grpc-port-is-http-port",
        "ModelDeployment",
        {"model": {"uri": "s3://m/1"}, "runtime": {"port": 9000, "grpcPort": 9000}},
        "spec.runtime.grpcPort: Invalid value: runtime.grpcPort and runtime.port must differ",
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


def test_live_labels_instead_of_a_holdout_need_no_data(cluster: Cluster) -> None:
    manifest = yaml.safe_dump(
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "DriftMonitor",
            "metadata": {"name": "live-instead", "namespace": "default"},
            "spec": {
                "modelDeployment": "m",
                "onDrift": {
                    "retrain": {"template": {"image": "x", "output": {"uri": "pvc://m/{trainingJob}"}}},
                    "evaluate": {"metric": "accuracy", "live": {"mode": "Instead"}},
                },
            },
        }
    )
    result = cluster.kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", "-", input=manifest)
    live = yaml.safe_load(result.stdout)["spec"]["onDrift"]["evaluate"]["live"]
    assert live == {"minRows": 100, "mode": "Instead"}


def test_explain_shows_the_field_descriptions(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "trainingjob.spec.gpu.type").stdout
    assert "nvidia.com/gpu.product" in out
    out = cluster.kubectl("explain", "modeldeployment.spec.canary.trafficPercent").stdout
    assert "replica ratio" in out
    # Defaults and bounds are in the text that explain shows.
    assert "Default: 10. Range: 0 to 100." in " ".join(out.split())
    out = " ".join(cluster.kubectl("explain", "driftmonitor.spec.performance").stdout.split())
    assert "acts on a quality drop only" in out and "input drift is only reported" in out
    out = " ".join(cluster.kubectl("explain", "driftmonitor.spec.correction").stdout.split())
    assert "Benjamini-Hochberg" in out and "false discovery rate" in out
    assert 'Default: "bh". One of: bh, none.' in out
    out = " ".join(
        cluster.kubectl("explain", "driftmonitor.spec.onDrift.shadow.require").stdout.split()
    )
    assert "paired test" in out and 'Default: "Better". One of: Better, NotWorse.' in out


def test_locations_kubeloop_reads_are_accepted(cluster: Cluster) -> None:
    """Every form the rules allow, as a server-side dry run creates nothing."""
    for i, uri in enumerate([
        "s3://m/1", "S3://bucket/key", "https://models.example/iris", "http://10.0.0.1:8080/m",
        "pvc://models/iris/v1", "pvc://my.claim", "file:///models/iris",
        "file://localhost/models", "/mnt/models/iris",
    ]):
        manifest = yaml.safe_dump({
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": f"uri-{i}", "namespace": "default"},
            "spec": {"model": {"uri": uri}},
        })
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=manifest, check=False
        )
        assert result.returncode == 0, (uri, result.stderr)


def test_one_apply_reports_every_mistake(cluster: Cluster) -> None:
    """Each rule is its own validation with its own message: one apply lists them all,
    not only the first."""
    manifest = yaml.safe_dump({
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "many-mistakes", "namespace": "default"},
        "spec": {
            "model": {"uri": "gs://bucket/v1"},
            "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
            "runtime": {"port": 9000, "grpcPort": 9000},
            "canary": {"model": {"uri": "pvc:///v2"}, "steps": [50, 25, 100]},
        },
    })
    result = cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    for message in (
        "spec.model.uri: Invalid value: \"gs://bucket/v1\": scheme gs:// is not supported",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "runtime.grpcPort and runtime.port must differ",
        "spec.canary.model.uri: Invalid value: \"pvc:///v2\": a pvc:// location is "
        "pvc://CLAIM/PATH",
        "canary.steps must rise strictly",
    ):
        assert message in result.stderr, (message, result.stderr)


def _apply_tj(cluster: Cluster, namespace: str, name: str, spec: dict, **meta: Any) -> Any:
    manifest = yaml.safe_dump({
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": spec,
    })
    return cluster.kubectl("apply", "-f", "-", input=manifest, check=False)


@pytest.mark.parametrize(
    ("phase", "annotations"),
    [("Succeeded", {}), ("Failed", {"kubeloop.io/fake-exit-code": "3"})],
)
def test_a_finished_training_jobs_spec_is_immutable(
    cluster: Cluster, namespace: str, phase: str, annotations: dict[str, str]
) -> None:
    """Like a Job's pod template: once Succeeded or Failed, an edit of the spec is
    refused at apply time with what to do instead (not `configured` and nothing
    happening); labels still change, and an apply of the same spec passes (GitOps
    re-syncs). Before it finished, the same edit is accepted."""
    spec = {
        "image": "registry.local/train:1",
        "maxRestarts": 0,
        "podMetadata": {"annotations": annotations},
    }
    first = _apply_tj(cluster, namespace, "done", {**spec, "suspend": True})
    assert first.returncode == 0, first.stderr
    cluster.wait_phase("TrainingJob", namespace, "done", "Suspended", 30)
    # Not finished: an edit is taken (here: resuming it).
    resumed = _apply_tj(cluster, namespace, "done", spec)
    assert resumed.returncode == 0, resumed.stderr
    cluster.wait_phase("TrainingJob", namespace, "done", phase, 60)

    edited = _apply_tj(cluster, namespace, "done", {**spec, "hyperparameters": {"lr": "0.1"}})
    assert edited.returncode != 0, "an edit of a finished TrainingJob was accepted"
    assert (
        f"spec: Invalid value: spec is immutable once the TrainingJob has finished "
        f"(phase {phase}): to train again, create a TrainingJob under a new name, or delete and "
        "re-create this one"
    ) in edited.stderr, edited.stderr
    assert not cluster.get("TrainingJob", namespace, "done")["spec"].get("hyperparameters")

    same = _apply_tj(cluster, namespace, "done", spec, labels={"team": "vision"})
    assert same.returncode == 0, same.stderr
    finished = cluster.get("TrainingJob", namespace, "done")
    assert finished["metadata"]["labels"] == {"team": "vision"}
    assert finished["status"]["phase"] == phase


def test_an_experiment_is_accepted_and_defaulted(cluster: Cluster) -> None:
    """Every kind of parameter, every sampler and pruner; the defaults are written."""
    spec = {
        **EXPERIMENT,
        "parameters": [
            {"name": "lr", "type": "float", "min": 0.001, "max": 0.1, "log": True},
            {"name": "dropout", "type": "float", "min": 0, "max": 0.5},
            {"name": "depth", "type": "int", "min": 2, "max": 8, "step": 2},
            {"name": "width", "type": "int", "min": 16, "max": 512, "log": True},
            {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]},
        ],
        "trainingJob": {"image": "x", "hyperparameters": {"epochs": "3"},
                        "output": {"uri": "pvc://models/search/{trainingJob}"}},
    }
    for i, (algorithm, stopping) in enumerate([
        ("random", {"name": "median"}),
        ("tpe", {"name": "successiveHalving", "minResource": 2}),
        ("cmaes", {"name": "hyperband", "maxResource": 27}),
    ]):
        manifest = yaml.safe_dump({
            "apiVersion": "kubeloop.io/v1alpha1", "kind": "Experiment",
            "metadata": {"name": f"search-{i}", "namespace": "default"},
            "spec": {**spec, "algorithm": {"name": algorithm, "seed": 1},
                     "earlyStopping": stopping},
        })
        result = cluster.kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", "-",
                                 input=manifest, check=False)
        assert result.returncode == 0, (algorithm, result.stderr)
    applied = yaml.safe_load(result.stdout)["spec"]
    assert (applied["maxTrials"], applied["parallelTrials"], applied["maxFailedTrials"]) == (
        10, 1, 3)
    assert applied["earlyStopping"]["reductionFactor"] == 3
    assert applied["trainingJob"]["workers"] == 1
    grid = yaml.safe_dump({
        "apiVersion": "kubeloop.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "grid", "namespace": "default"},
        "spec": {**EXPERIMENT, "algorithm": {"name": "grid"}, "parameters": [
            {"name": "lr", "type": "float", "min": 0.01, "max": 0.1, "step": 0.01},
            {"name": "optimizer", "type": "categorical", "values": ["adam", "sgd"]}]},
    })
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=grid, check=False)
    assert result.returncode == 0, result.stderr


def test_one_apply_reports_every_mistake_in_a_search_space(cluster: Cluster) -> None:
    manifest = yaml.safe_dump({
        "apiVersion": "kubeloop.io/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "bad-space", "namespace": "default"},
        "spec": {**EXPERIMENT, "maxTrials": 2, "parallelTrials": 3, "parameters": [
            {"name": "lr", "type": "float", "min": 0, "max": 1, "log": True},
            {"name": "depth", "type": "int", "min": 8, "max": 2},
            {"name": "opt", "type": "categorical"}]},
    })
    result = cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    for message in (
        "spec.parameters[0]: Invalid value: a log-scale parameter needs min "
        "greater than 0",
        "spec.parameters[1]: Invalid value: min must be less than max",
        "spec.parameters[2]: Invalid value: a categorical parameter needs at least "
        "one value in values",
        "parallelTrials must not exceed maxTrials",
    ):
        assert message in result.stderr, (message, result.stderr)


def test_explain_shows_the_experiment(cluster: Cluster) -> None:
    out = " ".join(cluster.kubectl("explain", "experiment.spec.parameters.log").stdout.split())
    assert "min must be greater than 0" in out
    out = " ".join(cluster.kubectl("explain", "experiment.spec.algorithm.name").stdout.split())
    assert "One of: random, grid, tpe, cmaes" in out
