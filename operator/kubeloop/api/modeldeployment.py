"""ModelDeployment (`mdep`): a model served by an autoscaled Deployment."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from kubeloop.api.common import (
    GPU,
    CommonStatus,
    ComputeResources,
    EnvVar,
    KubeModel,
    Toleration,
    cel,
)

EXACTLY_ONE_SOURCE = cel(
    "has(self.uri) != has(self.fromTrainingJob)",
    "exactly one of uri or fromTrainingJob must be set",
)


class TrainingJobRef(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="TrainingJob in this namespace.")


class ModelSource(KubeModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [EXACTLY_ONE_SOURCE]})

    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Model directory: `http(s)://`, `s3://`, `pvc://CLAIM/PATH` (a "
        "PersistentVolumeClaim of this namespace, mounted read-only into the fetch "
        "container) or `file://` (a path inside the fetch container).",
    )
    from_training_job: TrainingJobRef | None = Field(
        default=None,
        description="Use the `status.modelUri` of this TrainingJob once it has succeeded.",
    )
    format: str = Field(
        default="sklearn", max_length=63, description="Model format understood by the runtime."
    )


class Runtime(KubeModel):
    image: str | None = Field(
        default=None,
        description="Server image. Default: the Kubeloop image running `kubeloop serve`.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port of the server.")
    args: list[str] = Field(default_factory=list, description="Extra server arguments.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")


class Autoscaling(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                ),
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Lower bound of the HPA.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound of the HPA.")
    target_cpu_utilization: int | None = Field(
        default=None,
        alias="targetCPUUtilization",
        ge=1,
        le=100,
        description="Average CPU utilization target in percent. Default 80 when no other "
        "target is given.",
    )
    target_requests_per_second: int | None = Field(
        default=None,
        ge=1,
        description="Requests per second per pod (Pods metric "
        "`kubeloop_model_requests_per_second`, needs a custom metrics adapter).",
    )


class Canary(KubeModel):
    model: ModelSource = Field(description="The candidate model.")
    traffic_percent: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Share of requests for the canary, in percent. "
        "The Service spreads requests evenly over ready pods, so the share is realised by "
        "replica ratio in steps of 100/replicas percent (`status.canary.actualTrafficPercent`"
        " says what it is). 0 keeps the canary at zero replicas; 100 moves every replica to "
        "the canary (not with autoscaling).",
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=10,
        description="The canary is rolled back when not available within this time.",
    )


class Monitoring(KubeModel):
    enabled: bool = Field(
        default=True,
        description="Export per-feature input histograms for DriftMonitor on `/metrics`.",
    )


class ServingScheduling(KubeModel):
    priority_class_name: str | None = Field(default=None, description="Pod priority class.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels the server pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations for the server pods."
    )


class ModelDeploymentSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.autoscaling) || !has(self.canary) || "
                    "!has(self.canary.trafficPercent) || self.canary.trafficPercent < 100",
                    "canary.trafficPercent 100 needs fixed replicas: the HPA keeps the stable "
                    "at minReplicas or more; to move to the canary's model, set spec.model",
                    ".canary.trafficPercent",
                ),
            ]
        }
    )

    model: ModelSource = Field(description="The model to serve.")
    compute: str | None = Field(
        default=None,
        max_length=253,
        description="A ComputeTemplate by name: its CPU, memory, GPUs and placement apply "
        "to every replica; what it sets cannot be overridden here.",
    )
    runtime: Runtime | None = Field(default=None, description="The model server.")
    resources: ComputeResources | None = Field(
        default=None, description="CPU and memory per replica."
    )
    gpu: GPU | None = Field(default=None, description="GPUs per replica.")
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Fixed replica count when autoscaling is unset."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="HorizontalPodAutoscaler bounds and targets."
    )
    canary: Canary | None = Field(default=None, description="A candidate model beside the stable.")
    monitoring: Monitoring | None = Field(default=None, description="Drift metrics export.")
    service_account_name: str | None = Field(default=None, description="Pods' service account.")
    scheduling: ServingScheduling | None = Field(
        default=None, description="Where the model server pods may run."
    )


class CanaryStatus(KubeModel):
    model_uri: str | None = Field(default=None, description="The canary's resolved model.")
    traffic_percent: int | None = Field(default=None, description="Requested share, percent.")
    actual_traffic_percent: int | None = Field(
        default=None,
        description="The canary's share of requests now: its share of the ready pods "
        "behind the Service, percent.",
    )
    replicas: int | None = Field(default=None, description="Canary replicas desired.")
    ready_replicas: int | None = Field(default=None, description="Canary replicas ready.")
    state: str | None = Field(
        default=None,
        description="Waiting, Progressing, Available, Idle (no traffic) or RolledBack.",
    )
    start_time: str | None = Field(
        default=None, description="When this canary model started rolling out."
    )
    message: str | None = Field(default=None, description="Why the canary is in its state.")


class Scores(KubeModel):
    metric: str = Field(description="The metric of the evaluation gate.")
    champion: float | None = Field(default=None, description="The model it replaced.")
    challenger: float | None = Field(default=None, description="This model.")


class HistoryEntry(KubeModel):
    uri: str = Field(description="The model served.")
    manifest_sha256: str | None = Field(
        default=None,
        description="sha256 of its manifest.json as a serving pod fetched it: which files, "
        "byte for byte.",
    )
    from_: str = Field(alias="from", description="When it became the stable model.")
    to: str | None = Field(default=None, description="When another model replaced it.")
    changed_by: str = Field(
        description="`user`, or `DriftMonitor/NAME` for a promotion by the loop."
    )
    training_job: str | None = Field(default=None, description="The run that produced it.")
    evaluation: Scores | None = Field(
        default=None, description="The evaluation gate's scores, when a gate passed it."
    )


class ModelDeploymentStatus(CommonStatus):
    url: str | None = Field(default=None, description="In-cluster URL of the Service.")
    replicas: int | None = Field(default=None, description="Stable replicas desired.")
    ready_replicas: int | None = Field(default=None, description="Stable replicas ready.")
    active_model_uri: str | None = Field(default=None, description="Model the stable serves.")
    source_training_job: str | None = Field(
        default=None, description="Lineage: the TrainingJob that produced the active model."
    )
    canary: CanaryStatus | None = Field(default=None, description="The canary, when set.")
    history: list[HistoryEntry] = Field(
        default_factory=list,
        description="The last 10 stable models, newest first: what served when, and who "
        "changed it.",
    )
