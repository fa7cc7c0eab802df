"""TrainingJob -> an Indexed batch/v1 Job per attempt and a headless Service."""

from __future__ import annotations

from typing import Any

from kubeloop import progress
from kubeloop.api.trainingjob import TrainingJobSpec
from kubeloop.names import (
    ATTEMPT_LABEL,
    COMPLETION_INDEX_ANNOTATION,
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    PROGRESS_PORT,
    SPEC_HASH_ANNOTATION,
    TRAINING_JOB_LABEL,
)
from kubeloop.render import storage
from kubeloop.render.common import (
    TERMINATION_MESSAGE_POLICY,
    container_security,
    env_list,
    env_name,
    placement,
    pod_security,
    resources,
    spec_hash,
)

WORKER_CONTAINER = "worker"


def job_name(name: str, attempt: int) -> str:
    """One Job per attempt: `<name>-r<attempt>`, so a gang restart never reuses a name."""
    return f"{name}-r{attempt}"


def service_name(name: str) -> str:
    return f"{name}-workers"


def labels(name: str) -> dict[str, str]:
    return {**MANAGED_BY, TRAINING_JOB_LABEL: name}


def needs_service(spec: TrainingJobSpec) -> bool:
    """Only several workers need to find each other; one worker is its own master."""
    return spec.workers > 1


def master_addr(spec: TrainingJobSpec, name: str, namespace: str, attempt: int) -> str:
    """Worker 0's stable name: `<job>-0.<service>.<namespace>.svc` through the headless
    Service; for a single worker its own hostname, `<job>-0`, which an Indexed Job pod
    resolves locally."""
    if not needs_service(spec):
        return f"{job_name(name, attempt)}-0"
    return f"{job_name(name, attempt)}-0.{service_name(name)}.{namespace}.svc"


def rendezvous_env(
    spec: TrainingJobSpec, name: str, namespace: str, attempt: int
) -> list[dict[str, Any]]:
    """What torchrun and plain torch.distributed read. One process per pod without
    torchrun: WORLD_SIZE = workers and RANK = the completion index; with torchrun, the
    PET_* variables describe the nodes and torchrun sets the per-process ranks."""
    index_ref = {
        "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
    }
    addr = master_addr(spec, name, namespace, attempt)
    nproc = str(max(spec.gpu.count if spec.gpu else 0, 1))
    port = str(spec.master_port)
    workers = str(spec.workers)
    return [
        {"name": "MASTER_ADDR", "value": addr},
        {"name": "MASTER_PORT", "value": port},
        {"name": "WORLD_SIZE", "value": workers},
        {"name": "NODE_RANK", "valueFrom": index_ref},
        {"name": "RANK", "valueFrom": index_ref},
        {"name": "NPROC_PER_NODE", "value": nproc},
        {"name": "PET_NNODES", "value": workers},
        {"name": "PET_NODE_RANK", "valueFrom": index_ref},
        {"name": "PET_NPROC_PER_NODE", "value": nproc},
        {"name": "PET_MASTER_ADDR", "value": addr},
        {"name": "PET_MASTER_PORT", "value": port},
    ]


def worker_env(
    spec: TrainingJobSpec, name: str, namespace: str, attempt: int
) -> list[dict[str, Any]]:
    env = rendezvous_env(spec, name, namespace, attempt)
    env += [{"name": "KUBELOOP_TRAINING_JOB", "value": name}]
    env += [{"name": "KUBELOOP_ATTEMPT", "value": str(attempt)}]
    if spec.progress_port != PROGRESS_PORT:
        # Only when not the default: the pod template (and its hash) of every job that
        # keeps the default stays as it was before progress reporting existed.
        env.append({"name": progress.PORT_ENV, "value": str(spec.progress_port)})
    if spec.dataset is not None:
        env.append({"name": "KUBELOOP_DATASET_URI", "value": storage.local_uri(spec.dataset.uri)})
    if spec.output is not None:
        env.append({"name": "KUBELOOP_OUTPUT_URI", "value": storage.local_uri(spec.output.uri)})
    for key, value in sorted(spec.hyperparameters.items()):
        env.append({"name": f"HP_{env_name(key)}", "value": value})
    # The user's own variables come last so that they win over ours.
    return env + env_list(spec.env)


def worker_args(spec: TrainingJobSpec) -> list[str]:
    args = list(spec.args)
    if spec.pass_hyperparameters_as_args:
        args += [f"--{key}={value}" for key, value in sorted(spec.hyperparameters.items())]
    return args


def data_claims(spec: TrainingJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts for `pvc://` dataset and output: the output's claim writable,
    a dataset's claim read-only unless it is also the output's."""
    out = [spec.output.uri] if spec.output is not None else []
    written = {loc.claim for uri in out if (loc := storage.parse(uri)) is not None}
    data: list[str] = []
    if spec.dataset is not None:
        loc = storage.parse(spec.dataset.uri)
        if loc is not None and loc.claim not in written:
            data.append(spec.dataset.uri)
    rw_volumes, rw_mounts = storage.claim_mounts(out, read_only=False)
    ro_volumes, ro_mounts = storage.claim_mounts(data, read_only=True)
    return rw_volumes + ro_volumes, rw_mounts + ro_mounts


def pod_template(spec: TrainingJobSpec, name: str, namespace: str, attempt: int) -> dict[str, Any]:
    sched = spec.scheduling
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": spec.image,
        "env": worker_env(spec, name, namespace, attempt),
        "ports": [{"name": "rendezvous", "containerPort": spec.master_port}],
        "securityContext": container_security(spec.run_as_root),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    if spec.command:
        container["command"] = list(spec.command)
    args = worker_args(spec)
    if args:
        container["args"] = args
    res = resources(spec.resources, spec.gpu)
    if res:
        container["resources"] = res
    claim_volumes, claim_mounts = data_claims(spec)
    if spec.volume_mounts or claim_mounts:
        container["volumeMounts"] = [*claim_mounts, *spec.volume_mounts]
    pod_meta = spec.pod_metadata
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": pod_security(spec.run_as_root),
        "containers": [container],
    }
    if needs_service(spec):
        pod_spec["subdomain"] = service_name(name)
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    else:
        # Training code has no business with the Kubernetes API unless a service
        # account is asked for.
        pod_spec["automountServiceAccountToken"] = False
    pod_spec.update(placement(spec.gpu, sched))
    if sched and sched.scheduler_name:
        pod_spec["schedulerName"] = sched.scheduler_name
    if spec.volumes or claim_volumes:
        pod_spec["volumes"] = [*claim_volumes, *spec.volumes]
    metadata: dict[str, Any] = {
        "labels": {
            **(pod_meta.labels if pod_meta else {}),
            **labels(name),
            ATTEMPT_LABEL: str(attempt),
        }
    }
    if pod_meta and pod_meta.annotations:
        metadata["annotations"] = dict(pod_meta.annotations)
    return {"metadata": metadata, "spec": pod_spec}


def render_job(
    spec: TrainingJobSpec,
    name: str,
    namespace: str,
    attempt: int,
    owner: dict[str, Any],
) -> dict[str, Any]:
    template = pod_template(spec, name, namespace, attempt)
    job_labels = {**labels(name), ATTEMPT_LABEL: str(attempt)}
    queue = spec.scheduling.queue_name if spec.scheduling else None
    if queue:
        job_labels[KUEUE_QUEUE_LABEL] = queue
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.workers,
        "parallelism": spec.workers,
        "backoffLimit": spec.backoff_limit,
        # Kueue admits a queued Job by unsuspending it: it starts suspended.
        "suspend": bool(spec.suspend or queue),
        "template": template,
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, attempt),
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(_hashed(template))},
            "ownerReferences": [owner],
        },
        "spec": job_spec,
    }


def _hashed(template: dict[str, Any]) -> dict[str, Any]:
    """The pod template as the spec hash sees it: without the termination message policy,
    which operators before it did not set, so that an upgrade does not replace the Job of
    an attempt already running (a spec hash that differs replaces it)."""
    containers = [
        {k: v for k, v in container.items() if k != "terminationMessagePolicy"}
        for container in template["spec"]["containers"]
    ]
    return {**template, "spec": {**template["spec"], "containers": containers}}


def render_service(
    spec: TrainingJobSpec, name: str, namespace: str, owner: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": {
            "clusterIP": "None",
            # Workers must resolve each other before they are ready: rendezvous
            # happens before any readiness.
            "publishNotReadyAddresses": True,
            "selector": {TRAINING_JOB_LABEL: name},
            "ports": [{"name": "rendezvous", "port": spec.master_port}],
        },
    }
