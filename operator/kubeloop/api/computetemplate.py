"""ComputeTemplate (`ct`): an administrator's named machine shape that users pick with
`spec.compute`. What a template sets, a resource that names it may not override (the
admission policy in admission/ rejects it at apply time); what it leaves unset, the
resource may set. Merge rules: kubeloop/compute.py."""

from __future__ import annotations

from pydantic import Field

from kubeloop.api.common import GPU, INT32_MAX, CommonStatus, KubeModel, Quantity, Toleration


class ComputeTemplateSpec(KubeModel):
    description: str | None = Field(
        default=None, max_length=1024, description="What the template is for, for humans."
    )
    cpu: Quantity | None = Field(
        default=None, description="CPU request per pod (worker or replica), e.g. `8`."
    )
    memory: Quantity | None = Field(
        default=None, description="Memory per pod, request and limit, e.g. `64Gi`."
    )
    gpu: GPU | None = Field(default=None, description="GPUs per pod, and their product.")
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels every pod must match; a resource may add others, not "
        "change these.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations added to every pod."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="Pod priority class of every pod."
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        description="Kueue LocalQueue of the training runs (in the run's namespace).",
    )
    max_run_seconds: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Longest run a TrainingJob may ask for (`activeDeadlineSeconds`); the "
        "run's deadline when it sets none.",
    )
    max_workers: int | None = Field(
        default=None, ge=1, le=1024, description="Most workers a TrainingJob may ask for."
    )
    default: bool = Field(
        default=False,
        description="Used by TrainingJobs and ModelDeployments that name no template. At "
        "most one template should be the default; with several, none is used.",
    )


class TemplateUser(KubeModel):
    kind: str = Field(description="TrainingJob or ModelDeployment.")
    namespace: str = Field(description="Its namespace.")
    name: str = Field(description="Its name.")


class ComputeTemplateStatus(CommonStatus):
    fits_now: int | None = Field(
        default=None,
        description="Pods of this shape that fit on the nodes now, beside what runs.",
    )
    fits_max: int | None = Field(
        default=None, description="Pods of this shape that fit on the empty nodes."
    )
    in_use: int | None = Field(
        default=None, description="Active TrainingJobs and ModelDeployments using it."
    )
    used_by: list[TemplateUser] = Field(
        default_factory=list, description="Those resources (the first 20)."
    )
    last_update_time: str | None = Field(
        default=None, description="When the counts were last computed."
    )


class AppliedTemplate(KubeModel):
    name: str = Field(description="The ComputeTemplate.")
    spec: ComputeTemplateSpec = Field(
        description="Its spec when the run started: a running job keeps it even if the "
        "template changes."
    )
