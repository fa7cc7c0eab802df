"""The evaluation Job of a retrain: `kubeloop evaluate` on the champion and the
challenger, its verdict written to the container's termination message.

One pod, no retries (a verdict is a fact about the data, not a flake to retry), read-only
mounts of the claims the three locations name, the operator's own image, bounded
resources, and no service account token: the evaluation reads files, never the API.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubeloop.api.common import ComputeResources
from kubeloop.api.driftmonitor import Evaluate
from kubeloop.api.trainingjob import Scheduling
from kubeloop.names import CHAMPION_ANNOTATION, EVALUATION_LABEL, MANAGED_BY
from kubeloop.render import storage
from kubeloop.render.common import (
    TERMINATION_MESSAGE_POLICY,
    container_security,
    placement,
    pod_security,
)

# The pod and the Job are labelled EVALUATION_LABEL with the monitor they belong to (the
# operator's watch key), and annotated CHAMPION_ANNOTATION with the champion the Job
# scores, as the cluster names it (its args hold the pod's path).
CONTAINER = "evaluate"
TERMINATION_LOG = "/dev/termination-log"
TTL_SECONDS = 86400
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
DEFAULT_LIMITS = {"cpu": "1", "memory": "1Gi"}


def job_name(training_job: str) -> str:
    """`<retrain>-eval`, shortened with a hash where a label value would overflow."""
    name = f"{training_job}-eval"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(training_job.encode()).hexdigest()[:8]
    return f"{training_job[:49].rstrip('-')}-{digest}-eval"


def _resources(compute: ComputeResources | None) -> dict[str, Any]:
    requests = dict(DEFAULT_REQUESTS)
    limits = dict(DEFAULT_LIMITS)
    if compute is not None:
        if compute.cpu:
            requests["cpu"] = limits["cpu"] = compute.cpu
        if compute.memory:
            requests["memory"] = limits["memory"] = compute.memory
    return {"requests": requests, "limits": limits}


def args(
    evaluate: Evaluate, champion: str | None, challenger: str, live_rows: list[str] | None = None
) -> list[str]:
    """The command line, with `pvc://` locations turned into the pod's mount paths; with
    `evaluate.live`, the serving pods' labelled rows (``live_rows``) to read."""
    out = ["evaluate"]
    if champion:
        out += ["--champion", storage.local_uri(champion)]
    out += ["--challenger", storage.local_uri(challenger)]
    if evaluate.data is not None:
        out += ["--data", storage.local_uri(evaluate.data.uri)]
    if evaluate.live is not None:
        for url in live_rows or []:
            out += ["--live-rows", url]
        out += [
            "--live-min-rows",
            str(evaluate.live.min_rows),
            "--live-mode",
            evaluate.live.mode.lower(),
        ]
    out += [
        "--metric",
        evaluate.metric,
        "--min-improvement",
        repr(evaluate.min_improvement),
        "--json",
        "--termination-log",
        TERMINATION_LOG,
    ]
    if evaluate.floor is not None:
        out += ["--floor", repr(evaluate.floor)]
    if evaluate.label_column:
        out += ["--label-column", evaluate.label_column]
    return out


def render_job(
    evaluate: Evaluate,
    *,
    name: str,
    namespace: str,
    monitor: str,
    champion: str | None,
    challenger: str,
    image: str,
    owner: dict[str, Any],
    fallback_scheduling: Scheduling | None,
    live_rows: list[str] | None = None,
) -> dict[str, Any]:
    data = evaluate.data.uri if evaluate.data is not None else None
    uris = [u for u in (champion, challenger, data) if u]
    volumes, mounts = storage.claim_mounts(uris, read_only=True)
    labels = {**MANAGED_BY, EVALUATION_LABEL: monitor}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "args": args(evaluate, champion, challenger, live_rows),
        "resources": _resources(evaluate.resources),
        "securityContext": {**container_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the verdict leaves the end of its log as the message instead.
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [*volumes, {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        **placement(None, evaluate.scheduling or fallback_scheduling),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {CHAMPION_ANNOTATION: champion or ""},
            "ownerReferences": [owner],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": evaluate.active_deadline_seconds,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
