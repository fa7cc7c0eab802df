"""TrainingJob (`tj`): a training run as an Indexed Job of GPU workers."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from kubeloop.api.common import (
    DNS_LABEL_PATTERN,
    GPU,
    INT32_MAX,
    LOCATION_FORMS,
    LOCATION_RULES,
    PRESERVE,
    CommonStatus,
    ComputeResources,
    EnvVar,
    KubeModel,
    PodMetadata,
    Toleration,
    cel,
)
from kubeloop.api.computetemplate import AppliedTemplate
from kubeloop.names import PROGRESS_PORT, RENDEZVOUS_PORT


class DataLocation(KubeModel):
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=f"A location Kubeloop can read or mount: {LOCATION_FORMS}. "
        "`pvc://CLAIM/PATH` is a PersistentVolumeClaim of this namespace, mounted at "
        "`/mnt/pvc/CLAIM` and passed to the script as a `file://` URI. Other schemes "
        "(`gs://`, ...) are refused at apply time; a script that reads such a store itself "
        "takes its location in `env` or `hyperparameters`.",
        json_schema_extra={"x-kubernetes-validations": LOCATION_RULES},
    )


# Every hyperparameter becomes the variable HP_<NAME> (upper case, '-' and '.' as '_')
# and the argument --NAME=VALUE (docs/hyperparameters.md): names that are neither, or
# two names that make the same variable, are refused at apply time.
HYPERPARAMETER_NAME = "^[A-Za-z_][A-Za-z0-9_.-]*$"
_AS_VARIABLE = "upperAscii().replace('-', '_').replace('.', '_')"
# Static messages: a message expression that names the offending keys (a join over the
# map's keys) costs more than the API server's estimate allows for a map of strings.
HYPERPARAMETER_RULES: list[Any] = [
    cel(
        f"self.all(k, k.matches('{HYPERPARAMETER_NAME}'))",
        "hyperparameter names are letters, digits, '_', '-' and '.', starting with a letter "
        "or '_' (each becomes the variable HP_<NAME> and the argument --NAME=VALUE)",
    ),
    cel(
        f"self.all(k, self.filter(j, j.{_AS_VARIABLE} == k.{_AS_VARIABLE}).size() == 1)",
        "two hyperparameter names differ only in case, '-', '.' or '_', so both would "
        "set the same HP_<NAME> variable: keep one of them",
    ),
]


class Scheduling(KubeModel):
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        description="Kueue LocalQueue. The Job is created suspended and Kueue admits all "
        "workers at once (gang admission).",
    )
    priority_class_name: str | None = Field(default=None, description="Pod priority class.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels the workers must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations for the workers."
    )
    scheduler_name: str | None = Field(
        default=None, description="Scheduler for the workers (e.g. a gang scheduler)."
    )


FINISHED_PHASES = ("Succeeded", "Failed")
# A finished run is a record of what ran: like a batch/v1 Job's pod template, its spec
# no longer changes (`kubectl apply` of an edit is refused instead of answering
# `configured` and doing nothing). A rule on the whole object, since only there does a
# CRD rule see the old status. Labels and annotations may still change; status writes
# (the subresource) keep the spec as it was, so they always pass.
FINISHED_SPEC_IMMUTABLE = cel(
    "!has(oldSelf.status) || !has(oldSelf.status.phase) || "
    f"!(oldSelf.status.phase in {list(FINISHED_PHASES)!r}) || self.spec == oldSelf.spec",
    "spec is immutable once the TrainingJob has finished (Succeeded or Failed): to train "
    "again, create a TrainingJob under a new name, or delete and re-create this one",
    ".spec",
    message_expression=(
        "'spec is immutable once the TrainingJob has finished (phase ' + "
        "oldSelf.status.phase + '): to train again, create a TrainingJob under a new name, "
        "or delete and re-create this one'"
    ),
)


class TrainingJobSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.progressPort) || !has(self.masterPort) || "
                    "self.progressPort != self.masterPort",
                    "progressPort and masterPort must differ: both listen on worker 0",
                    ".progressPort",
                ),
            ]
        }
    )

    image: str = Field(min_length=1, description="Container image of every worker.")
    compute: str | None = Field(
        default=None,
        max_length=253,
        description="A ComputeTemplate by name: its CPU, memory, GPUs, placement, queue "
        "and limits apply to every worker; what it sets cannot be overridden here.",
    )
    command: list[str] = Field(default_factory=list, description="Entrypoint override.")
    args: list[str] = Field(default_factory=list, description="Arguments to the entrypoint.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")
    workers: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Number of worker pods (nodes in torchrun terms). Worker 0 is the "
        "rendezvous master.",
    )
    gpu: GPU | None = Field(default=None, description="GPUs per worker.")
    resources: ComputeResources | None = Field(
        default=None, description="CPU and memory per worker."
    )
    hyperparameters: dict[str, str] = Field(
        default_factory=dict,
        max_length=128,
        description="Passed to every worker as environment variables `HP_<NAME>` "
        "(upper case, `-` and `.` as `_`) and as `--name=value` arguments after `args`, "
        "sorted by name. Quote numbers. The contract: docs/hyperparameters.md.",
        json_schema_extra={"x-kubernetes-validations": HYPERPARAMETER_RULES},
    )
    pass_hyperparameters_as_args: bool = Field(
        default=True,
        description="Also append hyperparameters as `--name=value` arguments, which the "
        "script must accept (the example script does, in both `--n_estimators` and "
        "`--n-estimators` spelling). false: only the `HP_<NAME>` variables "
        "(docs/hyperparameters.md).",
    )
    dataset: DataLocation | None = Field(
        default=None, description="Training data; exposed as `KUBELOOP_DATASET_URI`."
    )
    output: DataLocation | None = Field(
        default=None,
        description="Where the model artifact is written; exposed as `KUBELOOP_OUTPUT_URI` "
        "and reported as `status.modelUri` on success.",
    )
    master_port: int = Field(
        default=RENDEZVOUS_PORT, ge=1, le=65535, description="Rendezvous port on worker 0."
    )
    progress_port: int = Field(
        default=PROGRESS_PORT,
        ge=0,
        le=65535,
        description="Port on worker 0 where the run reports progress and metrics "
        "(Prometheus text, as `kubeloop.train.report()` serves it; exposed to the script "
        "as `KUBELOOP_PROGRESS_PORT`). Read by the operator at most every 10 s while the "
        "run is Running. 0: not read.",
    )
    backoff_limit: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Pod retries inside one attempt (batch/v1 backoffLimitPerIndex is not "
        "used). 0 means any worker failure ends the attempt and restarts the gang.",
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Gang restarts after a failed attempt before the job is Failed.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Wall-clock limit of the whole run, over all attempts.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Delete the Job and its pods this long after the end; the TrainingJob "
        "and its status stay.",
    )
    suspend: bool = Field(
        default=False, description="Suspend the run (pods are deleted, GPUs freed)."
    )
    scheduling: Scheduling | None = Field(default=None, description="Placement and queueing.")
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        description="Service account of the workers. Only `default` unless the "
        "ComputeTemplate named in `compute` allows others here "
        "(`podSecurity.serviceAccountNames`); without one, the workers get no API token.",
    )
    run_as_root: bool = Field(
        default=False,
        description="Allow the container to run as root. By default workers must run "
        "as a non-root user (Pod Security restricted); true needs the ComputeTemplate "
        "named in `compute` to allow it here (`podSecurity.runAsRoot`).",
    )
    pod_metadata: PodMetadata | None = Field(
        default=None, description="Labels and annotations added to every worker pod."
    )
    volumes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Pod volumes, as in a PodSpec, of the kinds Pod Security restricted "
        "allows (configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, "
        "projected, secret); others (hostPath, nfs, ...) only where the ComputeTemplate named "
        "in `compute` allows them (`podSecurity.volumeTypes`).",
        json_schema_extra={"items": {"type": "object", **PRESERVE}},
    )
    volume_mounts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Mounts in the worker container, as in a Container.",
        json_schema_extra={"items": {"type": "object", **PRESERVE}},
    )


class WorkerCounts(KubeModel):
    active: int = Field(default=0, description="Worker pods running or pending.")
    ready: int = Field(default=0, description="Worker pods ready.")
    succeeded: int = Field(default=0, description="Workers that completed.")
    failed: int = Field(default=0, description="Workers that failed in the current attempt.")


class Progress(KubeModel):
    percent: float | None = Field(default=None, description="step / totalSteps, in percent.")
    step: int | None = Field(default=None, description="The last step the run reported.")
    total_steps: int | None = Field(default=None, description="The steps the run will take.")
    estimated_remaining_seconds: int | None = Field(
        default=None,
        description="From the rate of steps since the first report; absent until known.",
    )
    last_update_time: str | None = Field(
        default=None, description="When the run last reported (its own clock)."
    )


class TrainingJobStatus(CommonStatus):
    compute: AppliedTemplate | None = Field(
        default=None, description="The ComputeTemplate the run uses, as it was at the start."
    )
    workers: WorkerCounts | None = Field(default=None, description="Worker pod counts.")
    restarts: int = Field(default=0, description="Gang restarts so far.")
    attempt: int | None = Field(default=None, description="Current attempt (from 0).")
    job_name: str | None = Field(default=None, description="The batch/v1 Job of the attempt.")
    start_time: str | None = Field(default=None, description="When the first attempt started.")
    completion_time: str | None = Field(default=None, description="When the run ended.")
    model_uri: str | None = Field(default=None, description="The artifact, set on success.")
    progress: Progress | None = Field(
        default=None, description="Progress reported by worker 0 (docs/training-progress.md)."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Metrics reported by worker 0: live while running, final from its "
        "termination message at the end. At most 16, names of at most 63 characters.",
        json_schema_extra={"additionalProperties": {"type": "number"}, "maxProperties": 16},
    )
    metric: str | None = Field(
        default=None, description="The first metric the run reported, as `name=value`."
    )
