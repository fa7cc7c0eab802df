"""BatchPrediction -> one Indexed batch/v1 Job running `kubeloop batch score`.

Each pod fetches the model into an emptyDir as a ModelDeployment's init container does,
mounts the input's claim read-only and the output's writable (or reaches `s3://` input
and output itself, with `spec.s3`'s settings), and scores the shards of its completion
index (docs/batch-prediction.md). Kubernetes sets `JOB_COMPLETION_INDEX`;
`KUBELOOP_BATCH_COUNT` is the parallelism.
"""

from __future__ import annotations

import math
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.names import (
    BATCH_PREDICTION_LABEL,
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    MODEL_URI_ANNOTATION,
    PROGRESS_PORT,
    S3_ENDPOINT_ENV,
    S3_KEY_ID_ENV,
    S3_REGION_ENV,
    S3_SECRET_KEY_ENV,
    S3_SESSION_TOKEN_ENV,
)
from kubeloop.progress import EVERY_POD_ENV
from kubeloop.render import storage
from kubeloop.render.common import (
    TERMINATION_MESSAGE_POLICY,
    container_security,
    placement,
    pod_security,
    resources,
)

SCORER_CONTAINER = "score"
FETCH_CONTAINER = "fetch-model"
MODEL_DIR = "/mnt/model"
COUNT_ENV = "KUBELOOP_BATCH_COUNT"
# `kubeloop batch` exits 2 when the run cannot go on (bad input, output exists): a retry
# would fail the same way, so the index fails at once (podFailurePolicy FailIndex).
EXIT_CANNOT_GO_ON = 2


def job_name(name: str) -> str:
    """One Job per BatchPrediction (a run is never restarted as a whole)."""
    return f"{name}-score"


def labels(name: str) -> dict[str, str]:
    return {**MANAGED_BY, BATCH_PREDICTION_LABEL: name}


def workers(spec: BatchPredictionSpec) -> int:
    """Scoring processes per pod: one per CPU requested, a part of one counting as one
    (no CPU limit is set: 1700m may use two cores, as a 2-core node's allocatable
    1800m is the most a pod there can ask for), one when none is requested."""
    cpu = spec.resources.cpu if spec.resources else None
    return max(1, math.ceil(parse_quantity(cpu))) if cpu else 1


def score_args(spec: BatchPredictionSpec) -> list[str]:
    out = spec.output
    args = [
        "batch",
        "score",
        "--model-dir",
        MODEL_DIR,
        "--input",
        storage.local_uri(spec.input.uri),
        "--output",
        storage.local_uri(out.uri),
        "--format",
        out.format,
        "--if-exists",
        out.if_exists,
        "--workers",
        str(workers(spec)),
    ]
    if out.pass_through:
        for column in spec.input.pass_through:
            args += ["--passthrough", column]
    if not out.predictions:
        args.append("--no-predictions")
    if not out.probabilities:
        args.append("--no-probabilities")
    if spec.batch_rows is not None:
        args += ["--batch-rows", str(spec.batch_rows)]
    return args


# The Secret's keys, each under its own name in the pod.
S3_SECRET_KEYS = (S3_KEY_ID_ENV, S3_SECRET_KEY_ENV)
S3_OPTIONAL_SECRET_KEYS = (S3_SESSION_TOKEN_ENV,)


def s3_env(spec: BatchPredictionSpec) -> list[dict[str, Any]]:
    """The scorer's S3 settings from `spec.s3`: the credentials by reference to the
    user's Secret (the kubelet resolves them; the operator never reads the Secret, and
    no value is in the Job)."""
    s3 = spec.s3
    if s3 is None:
        return []
    env: list[dict[str, Any]] = []
    if s3.endpoint:
        env.append({"name": S3_ENDPOINT_ENV, "value": s3.endpoint.rstrip("/")})
    if s3.region:
        env.append({"name": S3_REGION_ENV, "value": s3.region})
    if s3.credentials_secret:
        for key in S3_SECRET_KEYS + S3_OPTIONAL_SECRET_KEYS:
            ref: dict[str, Any] = {"name": s3.credentials_secret, "key": key}
            if key in S3_OPTIONAL_SECRET_KEYS:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def data_claims(
    spec: BatchPredictionSpec, model_uri: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, the scorer's mounts, the fetch container's mounts): the output's claim
    writable, the input's read-only unless it is the output's too; the model's claim
    read-only, in the fetch container only."""
    written = storage.parse(spec.output.uri)
    read = storage.parse(spec.input.uri)
    out_claims = [spec.output.uri] if written else []
    in_claims = [spec.input.uri] if read and (not written or read.claim != written.claim) else []
    rw_volumes, rw_mounts = storage.claim_mounts(out_claims, read_only=False)
    ro_volumes, ro_mounts = storage.claim_mounts(in_claims, read_only=True)
    model_volumes, model_mounts = storage.claim_mounts([model_uri], read_only=True)
    have = {v["name"] for v in rw_volumes + ro_volumes}
    # A model on a claim the data already mounts shares its volume (a pod may not name
    # one volume twice); its mount in the fetch container stays read-only.
    volumes = rw_volumes + ro_volumes + [v for v in model_volumes if v["name"] not in have]
    return volumes, rw_mounts + ro_mounts, model_mounts


def pod_template(
    spec: BatchPredictionSpec, name: str, model_uri: str, image: str
) -> dict[str, Any]:
    image = spec.image or image
    volumes, data_mounts, model_mounts = data_claims(spec, model_uri)
    secure = {**container_security(), "readOnlyRootFilesystem": True}
    scorer: dict[str, Any] = {
        "name": SCORER_CONTAINER,
        "image": image,
        "args": score_args(spec),
        "env": [
            {"name": COUNT_ENV, "value": str(spec.parallelism)},
            {"name": "KUBELOOP_MODEL_URI", "value": model_uri},
            # Every pod serves its live progress on PROGRESS_PORT; the operator reads
            # each and adds them up (controllers/batchprogress.py).
            {"name": EVERY_POD_ENV, "value": "1"},
            *s3_env(spec),
        ],
        "ports": [{"name": "progress", "containerPort": PROGRESS_PORT}],
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR, "readOnly": True},
            # The root filesystem is read-only; worker processes need a scratch place.
            {"name": "tmp", "mountPath": "/tmp"},
            *data_mounts,
        ],
        "securityContext": secure,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    res = resources(spec.resources, None)
    if res:
        scorer["resources"] = res
    fetch = {
        "name": FETCH_CONTAINER,
        "image": image,
        "args": ["fetch-model", storage.local_uri(model_uri), MODEL_DIR],
        "volumeMounts": [{"name": "model", "mountPath": MODEL_DIR}, *model_mounts],
        "securityContext": secure,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    sched = spec.scheduling
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        # Scoring has no business with the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "initContainers": [fetch],
        "containers": [scorer],
        "volumes": [
            {"name": "model", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            *volumes,
        ],
    }
    pod_spec.update(placement(None, sched))
    if sched and sched.scheduler_name:
        pod_spec["schedulerName"] = sched.scheduler_name
    meta = spec.pod_metadata
    return {
        "metadata": {
            "labels": {**(meta.labels if meta else {}), **labels(name)},
            "annotations": {**(meta.annotations if meta else {}), MODEL_URI_ANNOTATION: model_uri},
        },
        "spec": pod_spec,
    }


def render_job(
    spec: BatchPredictionSpec,
    name: str,
    namespace: str,
    model_uri: str,
    image: str,
    owner: dict[str, Any],
) -> dict[str, Any]:
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.parallelism,
        "parallelism": spec.parallelism,
        # Each index retries on its own; a pod is replaced only once it has failed, so
        # that at most one pod per index writes (docs/batch-prediction.md).
        "backoffLimitPerIndex": spec.backoff_limit,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailIndex",
                    "onExitCodes": {
                        "containerName": SCORER_CONTAINER,
                        "operator": "In",
                        "values": [EXIT_CANNOT_GO_ON],
                    },
                },
                # An eviction or a node lost is not the pod's fault: retry, uncounted.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": pod_template(spec, name, model_uri, image),
    }
    queue = spec.scheduling.queue_name if spec.scheduling else None
    job_labels = labels(name)
    if queue:
        # Kueue admits a queued Job by unsuspending it.
        job_labels[KUEUE_QUEUE_LABEL] = queue
        job_spec["suspend"] = True
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner],
        },
        "spec": job_spec,
    }
