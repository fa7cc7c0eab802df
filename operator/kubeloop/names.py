"""The names Kubeloop shares with the cluster and its users, each in one place: the API
group and version, every label and annotation key the operator writes or reads, and the
default ports.

Users and other tools rely on these strings (selectors, dashboards, scrape configs), so
changing one is a change of the contract. This module imports nothing, so that every
other one (the API types, renderers, controllers, the model server, training scripts)
can import it without a circle; tests/unit/test_names.py keeps the literals from being
written again elsewhere in the package.
"""

from __future__ import annotations

# The API.
GROUP = "kubeloop.io"
VERSION = "v1alpha1"
API_VERSION = "kubeloop.io/v1alpha1"

# Recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGER = "kubeloop"
# On every object the operator creates; its watches select on it.
MANAGED_BY = {MANAGED_BY_LABEL: MANAGER}
# On the objects Kubeloop installs (CRDs, the admission policy).
INSTALLED_BY = {NAME_LABEL: MANAGER, PART_OF_LABEL: MANAGER}

# Kubeloop's labels: which resource a child belongs to.
TRAINING_JOB_LABEL = "kubeloop.io/training-job"
ATTEMPT_LABEL = "kubeloop.io/attempt"
MODEL_DEPLOYMENT_LABEL = "kubeloop.io/model-deployment"
TRACK_LABEL = "kubeloop.io/track"  # "stable", "canary" or "shadow"
# On a shadow's pods in place of MODEL_DEPLOYMENT_LABEL, which the client Service selects.
SHADOW_OF_LABEL = "kubeloop.io/shadow-of"
MONITOR_LABEL = "kubeloop.io/drift-monitor"  # on a retrain's TrainingJob
EVALUATION_LABEL = "kubeloop.io/evaluation-of"  # on an evaluation Job and its pods
EXPERIMENT_LABEL = "kubeloop.io/experiment"  # on a trial's TrainingJob
TRIAL_LABEL = "kubeloop.io/trial"  # a trial's number, from 0, on its TrainingJob
BATCH_PREDICTION_LABEL = "kubeloop.io/batch-prediction"  # on a BatchPrediction's Job, pods

# Kubeloop's annotations.
SPEC_HASH_ANNOTATION = "kubeloop.io/spec-hash"
MODEL_URI_ANNOTATION = "kubeloop.io/model-uri"  # the model a serving pod loads
PROMOTION_ANNOTATION = "kubeloop.io/promotion"  # on a ModelDeployment a retrain promoted
CHAMPION_ANNOTATION = "kubeloop.io/champion"  # the model an evaluation compares against
SHADOW_MODEL_URI_ANNOTATION = "kubeloop.io/shadow-model-uri"  # the shadow a stable pod mirrors to
# On a ModelDeployment: a DriftMonitor's challenger on trial as its shadow (onDrift.shadow).
SHADOW_TRIAL_ANNOTATION = "kubeloop.io/shadow-trial"

# Other projects' keys the operator writes or reads.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
PROMETHEUS_SCRAPE_ANNOTATION = "prometheus.io/scrape"
PROMETHEUS_PORT_ANNOTATION = "prometheus.io/port"
PROMETHEUS_PATH_ANNOTATION = "prometheus.io/path"

# Default ports.
SERVER_PORT = 8080  # the model server's HTTP side (ModelDeployment spec.runtime.port)
SERVER_GRPC_PORT = 8081  # the model server's gRPC side (spec.runtime.grpcPort)
PROGRESS_PORT = 9464  # a training run's progress (TrainingJob spec.progressPort)
RENDEZVOUS_PORT = 29500  # distributed training on worker 0 (TrainingJob spec.masterPort)
OPERATOR_METRICS_PORT = 8080  # the operator's /metrics
OPERATOR_HEALTH_PORT = 8081  # the operator's /healthz

# A BatchPrediction's S3 settings (spec.s3) reach its pods under the names the AWS SDKs
# and pyarrow's S3 filesystem read (render/batchprediction.py, batch/place.py).
S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL"
S3_REGION_ENV = "AWS_REGION"
S3_KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
S3_SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
S3_SESSION_TOKEN_ENV = "AWS_SESSION_TOKEN"
