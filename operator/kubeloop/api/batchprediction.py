"""BatchPrediction (`bp`): a dataset scored once with a model, sharded over the pods of
an Indexed Job (the data plane: kubeloop/batch, docs/batch-prediction.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from kubeloop.api.common import (
    INT32_MAX,
    LOCATION_FORMS,
    LOCATION_RULES,
    CommonStatus,
    ComputeResources,
    ExperimentRef,
    KubeModel,
    PodMetadata,
    cel,
)
from kubeloop.api.computetemplate import AppliedTemplate
from kubeloop.api.trainingjob import Scheduling

# The pods mount claims and read files, or read and write S3 objects themselves (pyarrow's
# S3 filesystem); http(s):// is not listable, so not accepted for data.
DATA_FORMS = "pvc://CLAIM/PATH, s3://BUCKET/PREFIX, file:///PATH or an absolute path"
_CLAIM = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
# S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens, starting
# and ending with a letter or digit.
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
DATA_RULES: list[Any] = [
    cel(
        f"self.startsWith('/') || self.matches('^file:///') || "
        f"self.matches('^pvc://{_CLAIM}(/.*)?$') || self.matches('^s3://{_BUCKET}(/[^/]+)*/?$')",
        f"must be {DATA_FORMS} (an s3:// bucket name is 3-63 lowercase letters, digits, dots "
        "and hyphens, and its key has no empty segment; http(s):// cannot be listed: copy "
        "the data to a claim or a bucket)",
    )
]
# Only a name: an output column of the data plane, checked here so that a typo fails at
# apply time and not in every pod.
COLUMN_PATTERN = r"^[^\s,][^,]*$"

EXACTLY_ONE_MODEL = cel(
    "[has(self.uri), has(self.fromTrainingJob), has(self.fromModelDeployment), "
    "has(self.fromExperiment)].filter(x, x).size() == 1",
    "set exactly one of uri, fromTrainingJob, fromModelDeployment or fromExperiment",
)


class NamedRef(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="A resource in this namespace.")


class BatchModel(KubeModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [EXACTLY_ONE_MODEL]})

    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description=f"A model directory (what training writes): {LOCATION_FORMS}; fetched by "
        "an init container as a ModelDeployment's is.",
        json_schema_extra={"x-kubernetes-validations": LOCATION_RULES},
    )
    from_training_job: NamedRef | None = Field(
        default=None,
        description="The `status.modelUri` of this TrainingJob; the run waits until it has "
        "succeeded.",
    )
    from_model_deployment: NamedRef | None = Field(
        default=None,
        description="The model this ModelDeployment serves when the run starts "
        "(`status.activeModelUri`), recorded in `status.model` and kept for the whole run "
        "even if the deployment moves on.",
    )
    from_experiment: ExperimentRef | None = Field(
        default=None,
        description="The model of this Experiment's best trial when the run starts (or of "
        "one pinned trial), recorded in `status.model` and kept for the whole run; the run "
        "waits while the search has no best trial.",
    )


class BatchInput(KubeModel):
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=f"CSV or Parquet files: a directory, one file or a glob; {DATA_FORMS}. "
        "`pvc://` claims are mounted read-only (unless the output is on the same claim).",
        json_schema_extra={"x-kubernetes-validations": LOCATION_RULES + DATA_RULES},
    )
    format: Literal["csv", "parquet"] | None = Field(
        default=None,
        description="For humans and tools: the pods read each file by its suffix "
        "(`.csv`, `.parquet`, `.pq`).",
    )
    pass_through: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Input columns copied to every output row, such as an id.",
        json_schema_extra={
            "items": {"type": "string", "maxLength": 256, "pattern": COLUMN_PATTERN}
        },
    )


class BatchOutput(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.predictions || self.probabilities || "
                    "(has(self.passThrough) && self.passThrough)",
                    "the output would hold no column: keep predictions or probabilities",
                )
            ]
        }
    )

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=f"The output directory, apart from the input; {DATA_FORMS}.",
        json_schema_extra={"x-kubernetes-validations": LOCATION_RULES + DATA_RULES},
    )
    format: Literal["parquet", "csv"] = Field(default="parquet", description="Output files.")
    predictions: bool = Field(default=True, description="Write the `prediction` column.")
    probabilities: bool = Field(
        default=True, description="Write `probability_<class>` columns (classifiers)."
    )
    pass_through: bool = Field(
        default=True, description="Write the input's `passThrough` columns."
    )
    if_exists: Literal["refuse", "overwrite"] = Field(
        default="refuse",
        description="When the directory already holds the complete output of another run "
        "(its `_manifest.json`): `refuse` fails the run (OutputExists), `overwrite` "
        "replaces it. The same run's own output (a retried pod) is always resumed.",
    )


class BatchS3(KubeModel):
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        description="`http(s)://HOST[:PORT]` of an S3-compatible store (MinIO, Ceph, a "
        "cloud's S3 API); default: AWS.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.matches('^https?://[^/?#@\\\\s]+/?$')",
                    "must be http(s)://HOST[:PORT], with no path, query or user",
                )
            ]
        },
    )
    region: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="The bucket's region (AWS_REGION), such as `eu-west-1`.",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="A Secret of this namespace with the keys `AWS_ACCESS_KEY_ID` and "
        "`AWS_SECRET_ACCESS_KEY` (and optionally `AWS_SESSION_TOKEN`), handed to the pods "
        "as environment variables by reference: the operator never reads it. Without it "
        "the pods use the AWS SDK's default chain (a pod identity, such as IRSA).",
    )


class BatchPredictionSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self == oldSelf",
                    "spec is immutable: a BatchPrediction is one run; create another (or "
                    "delete and re-create this one) to score again",
                ),
                cel(
                    "self.input.uri != self.output.uri",
                    "output.uri must differ from input.uri",
                ),
            ]
        }
    )

    model: BatchModel = Field(description="The model to score with.")
    input: BatchInput = Field(description="The dataset.")
    output: BatchOutput = Field(description="Where the predictions go.")
    s3: BatchS3 | None = Field(
        default=None,
        description="How the pods reach `s3://` input and output: the endpoint, region and "
        "credentials' Secret (docs/batch-prediction.md).",
    )
    parallelism: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Pods, each scoring its share of the shards (an Indexed Job's "
        "completions and parallelism).",
    )
    image: str | None = Field(
        default=None,
        description="Image of the pods; default: the operator's own (Kubeloop with pyarrow).",
    )
    compute: str | None = Field(
        default=None,
        max_length=253,
        description="A ComputeTemplate by name: its CPU, memory, placement, queue and limits "
        "(maxWorkers bounds `parallelism`, maxRunSeconds `activeDeadlineSeconds`) apply to "
        "every pod, as for a TrainingJob; what it sets cannot be overridden here. Default: "
        "the default template, if one is marked so.",
    )
    resources: ComputeResources | None = Field(
        default=None,
        description="CPU and memory per pod; each pod runs one scoring process per CPU "
        "requested (at least one).",
    )
    scheduling: Scheduling | None = Field(default=None, description="Placement and queueing.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="Wall-clock limit of the whole run."
    )
    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Retries of each pod (batch/v1 backoffLimitPerIndex): a retried pod "
        "skips the shards already complete. A pod that finds the run cannot go on (bad "
        "input, exit status 2) is not retried.",
    )
    pod_metadata: PodMetadata | None = Field(
        default=None, description="Labels and annotations added to every pod."
    )
    batch_rows: int | None = Field(
        default=None,
        ge=1,
        le=16_777_216,
        description="Rows read and predicted at a time: bounds each process's memory "
        "(default 65536).",
    )


class BatchPredictionModelStatus(KubeModel):
    uri: str = Field(description="The model scored with, fixed when the run started.")
    source: str = Field(
        description="`uri`, `TrainingJob/NAME`, `ModelDeployment/NAME` or "
        "`Experiment/NAME trial TRIAL`."
    )
    sha256: str | None = Field(
        default=None,
        description="The sha256 of the model directory's `manifest.json` (which lists every "
        "file's sha256), as the pods read it: the model's identity, once a pod reported.",
    )


class BatchProgress(KubeModel):
    rows_done: int = Field(default=0, description="Rows scored (or found complete) so far.")
    rows_total: int | None = Field(
        default=None, description="Rows of the whole input, once every pod has read its share."
    )
    percent: float | None = Field(default=None, description="rowsDone / rowsTotal, in percent.")
    rows_per_second: float | None = Field(
        default=None, description="The pods' rates added up (rows scored per second)."
    )
    estimated_remaining_seconds: int | None = Field(
        default=None, description="From rowsPerSecond and the rows left; absent until known."
    )


class ShardResult(KubeModel):
    index: int = Field(description="The pod's completion index.")
    state: str = Field(description="Running, Succeeded or Failed.")
    rows: int | None = Field(default=None, description="Rows this index has done.")
    rows_total: int | None = Field(default=None, description="Rows of this index's shards.")
    rows_per_second: float | None = Field(default=None, description="This index's rate.")
    message: str | None = Field(default=None, description="Why it failed, in the pod's words.")


class BatchOutputStatus(KubeModel):
    uri: str = Field(description="The output directory (`_manifest.json` lists its files).")
    rows: int | None = Field(default=None, description="Rows written, set on success.")
    files: int | None = Field(
        default=None, description="Files the output's `_manifest.json` lists, set on success."
    )
    sha256: str | None = Field(
        default=None,
        description="The sha256 of the output's `_manifest.json` (its files' names, rows and "
        "sha256): the output's identity, set on success.",
    )


class BatchDrift(KubeModel):
    rows: int = Field(description="Rows counted: every row the run scored.")
    reference: str = Field(
        description="Identifies the bins the counts are on: the model's reference profile "
        "(`profile.json`), as a DriftMonitor's reference must match."
    )
    features: dict[str, list[int]] = Field(
        default_factory=dict,
        description="Per feature, the rows in each bin of the model's reference profile, in "
        "the profile's bin order (counted as the model server counts what it serves).",
        json_schema_extra={"additionalProperties": {"type": "array", "items": {"type": "integer"}}},
    )


class BatchPredictionStatus(CommonStatus):
    compute: AppliedTemplate | None = Field(
        default=None, description="The ComputeTemplate the run uses, as it was at the start."
    )
    model: BatchPredictionModelStatus | None = Field(
        default=None, description="The model in use, recorded when the run started."
    )
    job_name: str | None = Field(default=None, description="The batch/v1 Job of the run.")
    start_time: str | None = Field(default=None, description="When the run started.")
    completion_time: str | None = Field(default=None, description="When the run ended.")
    progress: BatchProgress | None = Field(default=None, description="Rows done and the rate.")
    shards: list[ShardResult] = Field(
        default_factory=list, description="Per pod index: its state, rows and rate."
    )
    output: BatchOutputStatus | None = Field(default=None, description="What was written.")
    drift: BatchDrift | None = Field(
        default=None,
        description="The scored rows counted on the model's reference profile, for a "
        "DriftMonitor (`source.type: batchPrediction`); set on success, absent for a model "
        "without a profile or counts too large for a pod's termination message (they are "
        "in the output's `_manifest.json`).",
    )
