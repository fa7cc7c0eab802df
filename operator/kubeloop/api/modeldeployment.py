"""ModelDeployment (`mdep`): a model served by an autoscaled Deployment."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from kubeloop.api.common import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    GPU,
    INT32_MAX,
    LOCATION_RULES,
    CommonStatus,
    ComputeResources,
    EnvVar,
    ExperimentRef,
    KubeModel,
    Toleration,
    cel,
)
from kubeloop.api.shadow import ShadowStatus
from kubeloop.names import SERVER_GRPC_PORT, SERVER_PORT

EXACTLY_ONE_SOURCE = cel(
    "[has(self.uri), has(self.fromTrainingJob), has(self.fromExperiment)]"
    ".filter(x, x).size() == 1",
    "exactly one of uri, fromTrainingJob or fromExperiment must be set",
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
        "container), `file:///PATH` or an absolute path (inside the fetch container). "
        "Other schemes (`gs://`, ...) are refused at apply time.",
        json_schema_extra={"x-kubernetes-validations": LOCATION_RULES},
    )
    from_training_job: TrainingJobRef | None = Field(
        default=None,
        description="Use the `status.modelUri` of this TrainingJob once it has succeeded.",
    )
    from_experiment: ExperimentRef | None = Field(
        default=None,
        description="The model of an Experiment's best trial (or of one pinned trial); "
        "waits with a condition while the search has no finished trial with a value.",
    )
    format: str = Field(
        default="sklearn", max_length=63, description="Model format understood by the runtime."
    )


class Batching(KubeModel):
    max_batch_size: int = Field(
        default=64,
        ge=1,
        le=4096,
        description="Concurrent inference requests are predicted together, up to this "
        "many rows (one `predict` call, answers split back per request); 1 turns "
        "batching off.",
    )
    max_wait_ms: float = Field(
        default=0,
        ge=0,
        le=1000,
        description="How long a request may wait for others to join its batch, in "
        "milliseconds. 0: only requests already waiting are batched, none is delayed.",
    )


class Runtime(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.grpcPort) || !has(self.port) || self.grpcPort == 0 || "
                    "self.grpcPort != self.port",
                    "runtime.grpcPort and runtime.port must differ (or grpcPort 0: REST only)",
                    ".grpcPort",
                ),
            ]
        }
    )

    image: str | None = Field(
        default=None,
        description="Server image. Default: the Kubeloop image running `kubeloop serve`.",
    )
    port: int = Field(default=SERVER_PORT, ge=1, le=65535, description="HTTP port of the server.")
    grpc_port: int = Field(
        default=SERVER_GRPC_PORT,
        ge=0,
        le=65535,
        description="gRPC port of the server (the protocol's gRPC side), also on the "
        "Service as `grpc`; 0 serves REST only.",
    )
    args: list[str] = Field(default_factory=list, description="Extra server arguments.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables.")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Server processes per pod, each with its own copy of the model, sharing "
        "the port. Default: the pod's CPU request in whole CPUs, at least 1 (no CPU limit "
        "is set, so the node's CPU count would be no guide). Memory must hold one model per "
        "process.",
    )
    batching: Batching | None = Field(
        default=None,
        description="Adaptive batching of the built-in server (`kubeloop serve`); default: "
        "up to 64 rows, no added wait.",
    )


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


class CanaryAnalysis(KubeModel):
    interval: str = Field(
        default="1m",
        pattern=DURATION_PATTERN,
        description="How long each step is measured before it is judged, e.g. `1m`; a "
        "step that is held is judged again after another interval, over the longer window.",
    )
    min_requests: int = Field(
        default=50,
        ge=1,
        le=INT32_MAX,
        description="Inference requests the canary must answer within a step before it is "
        "judged; with fewer the step is held (the canary keeps its share, nothing moves).",
    )
    max_error_percent: float | None = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Largest share of the canary's inference requests answered with a "
        "server error (HTTP 5xx), in percent. Client errors (4xx) are not counted.",
    )
    max_latency_p99_ms: float | None = Field(
        default=None,
        alias="maxLatencyP99Ms",
        gt=0,
        description="Largest 99th percentile of the canary's request latency, in "
        "milliseconds, estimated from the server's histogram.",
    )
    max_latency_p99_ratio: float | None = Field(
        default=None,
        alias="maxLatencyP99Ratio",
        gt=0,
        description="Largest canary p99 latency relative to the stable's over the same "
        "window, e.g. `1.5`: at most one and a half times the stable's.",
    )
    max_prediction_divergence: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Largest Jensen-Shannon distance (base 2, 0 to 1) between the "
        "canary's and the stable's predicted classes over the window (classifiers only).",
    )


class Canary(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.steps) || size(self.steps) == 0 || self.steps.isSorted()",
                    "canary.steps must rise strictly, e.g. [10, 25, 50, 100]",
                    ".steps",
                ),
                cel(
                    "!has(self.steps) || size(self.steps) != 1",
                    "canary.steps needs at least one step below 100, e.g. [50, 100]",
                    ".steps",
                ),
                cel(
                    "!has(self.steps) || size(self.steps) == 0 || "
                    "self.steps[size(self.steps) - 1] == 100",
                    "canary.steps must end at 100: the last step promotes the canary's model "
                    "to the stable",
                    ".steps",
                ),
            ]
        }
    )

    model: ModelSource = Field(description="The candidate model.")
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Progressive delivery: the canary's share of traffic, step by step, in "
        "percent, rising strictly from 1 to a last step of 100, e.g. `[10, 25, 50, 100]`. "
        "Each step is judged by `analysis` on the pods' live metrics: passed moves to the "
        "next step, failed rolls back. Reaching 100 promotes: the stable Deployment rolls "
        "to the canary's model and the canary goes to zero. Empty: the fixed "
        "`trafficPercent`, promoted by hand.",
    )
    analysis: CanaryAnalysis | None = Field(
        default=None,
        description="How each step is judged. Default with `steps`: 1m intervals, at "
        "least 50 requests, at most 1% server errors. Without `steps`, the canary at "
        "`trafficPercent` is judged every interval and rolled back when it fails.",
    )
    paused: bool = Field(
        default=False,
        description="Hold the canary at its current step: no step is judged, nothing "
        "moves. Setting it back to false resumes with a fresh measurement window.",
    )
    abort: bool = Field(
        default=False,
        description="Roll the canary back now: the stable model serves all traffic. It "
        "stays rolled back while true; setting it back to false starts the analysis of "
        "the same model again from the first step.",
    )
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


class Shadow(KubeModel):
    model: ModelSource = Field(
        description="The challenger: it answers a copy of live requests, unseen by clients."
    )
    mirror_percent: int = Field(
        default=100,
        ge=1,
        le=100,
        description="Share of the stable's inference requests copied to the shadow, in "
        "percent. The copy goes after the stable answered, through a bounded queue: when "
        "the shadow cannot keep up, copies are dropped (and counted), never the client's "
        "request slowed.",
    )
    replicas: int = Field(default=1, ge=1, le=100, description="The shadow's replicas.")
    resources: ComputeResources | None = Field(
        default=None,
        description="CPU and memory per shadow replica; default: the stable's. With "
        "`compute`, the template's apply to the shadow too.",
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        le=INT32_MAX,
        description="Answers both models gave before the comparison counts "
        "(`ShadowCompared` True, an Event); fewer: `ShadowCompared` False, TooFewSamples.",
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


class GatewayRef(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="A Gateway API `Gateway` by name.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Its namespace; default: the ModelDeployment's. The Gateway's listener "
        "must allow routes from this namespace.",
    )
    section_name: str | None = Field(
        default=None, max_length=253, description="One listener of the Gateway, by name."
    )


class Route(KubeModel):
    gateway: GatewayRef = Field(description="The Gateway that takes the traffic in.")
    hostnames: list[
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=253,
                pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            ),
        ]
    ] = Field(
        default_factory=list,
        max_length=16,
        description="Host names the route answers for; empty: the listener's.",
    )
    path: str = Field(
        default="/",
        min_length=1,
        max_length=1024,
        pattern=r"^/[A-Za-z0-9/\-._~%!$&'()*+,;=:@]*$",
        description="Path prefix the route matches.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.contains('//') && !self.contains('/./') && !self.contains('/../')",
                    "route.path must not contain //, /./ or /../",
                )
            ]
        },
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
                cel(
                    "!has(self.shadow) || !has(self.shadow.model.uri) || "
                    "!has(self.model.uri) || self.shadow.model.uri != self.model.uri",
                    "shadow.model must differ from model: a shadow compares another model",
                    ".shadow.model.uri",
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
    shadow: Shadow | None = Field(
        default=None,
        description="A challenger answering a mirrored copy of live requests in its own "
        "Deployment and Service, never behind the client Service; `status.shadow` compares "
        "it with the stable on the same requests (docs/shadow.md). Removing it deletes them.",
    )
    monitoring: Monitoring | None = Field(default=None, description="Drift metrics export.")
    route: Route | None = Field(
        default=None,
        description="Also expose the model through a Gateway API `HTTPRoute` on this "
        "Gateway, with one Service per track whose weights carry the canary's exact share "
        "(the Service's split by replica ratio is coarser).",
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Pods' service account. Only `default` unless the ComputeTemplate "
        "named in `compute` allows others here (`podSecurity.serviceAccountNames`).",
    )
    scheduling: ServingScheduling | None = Field(
        default=None, description="Where the model server pods may run."
    )


class TrackFigures(KubeModel):
    requests: int = Field(description="Inference requests answered in the window.")
    error_percent: float | None = Field(
        default=None, description="Share answered with HTTP 5xx, percent."
    )
    latency_p99_ms: float | None = Field(
        default=None, alias="latencyP99Ms", description="99th percentile latency, ms."
    )
    pods: int = Field(default=0, description="Pods whose metrics were read.")


class CanaryJudgement(KubeModel):
    time: str = Field(description="When the step was judged.")
    decision: str = Field(description="Pass, Hold or Fail.")
    window_seconds: float | None = Field(default=None, description="The window measured.")
    canary: TrackFigures | None = Field(default=None, description="The canary's figures.")
    stable: TrackFigures | None = Field(default=None, description="The stable's figures.")
    prediction_divergence: float | None = Field(
        default=None,
        description="Jensen-Shannon distance between the two tracks' predicted classes.",
    )
    message: str = Field(default="", description="The verdict with its numbers.")


class Promotion(KubeModel):
    uri: str = Field(description="The canary model the stable serves after passing its steps.")
    replaces: str | None = Field(
        default=None,
        description="The `spec.model` it stands in for; a new `spec.model` ends it.",
    )
    time: str | None = Field(default=None, description="When the last step passed.")


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
        description="Waiting (model unresolved), Progressing (pods starting), Available "
        "(fixed share), Idle (no traffic), Analyzing, Holding (too few requests or no "
        "metrics), Paused, Promoting, Promoted, RolledBack or Aborted.",
    )
    step: int | None = Field(
        default=None, description="The current step, counted from 1, of `spec.canary.steps`."
    )
    step_start_time: str | None = Field(default=None, description="When this step began.")
    analysis: CanaryJudgement | None = Field(
        default=None, description="The latest judgement of the canary on live metrics."
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
    source_experiment: str | None = Field(
        default=None,
        description="Lineage: the Experiment whose trial produced the active model "
        "(with `fromExperiment`).",
    )
    canary: CanaryStatus | None = Field(default=None, description="The canary, when set.")
    shadow: ShadowStatus | None = Field(
        default=None, description="The shadow and its comparison with the stable, when set."
    )
    promotion: Promotion | None = Field(
        default=None,
        description="Set when a canary passed every step: the stable serves its model in "
        "place of `spec.model` until `spec.model` changes. GitOps tools see no drift in "
        "the spec; bring `spec.model` to this uri to make it the declared model.",
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        description="The last 10 stable models, newest first: what served when, and who "
        "changed it.",
    )
