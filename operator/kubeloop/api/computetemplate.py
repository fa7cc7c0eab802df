"""ComputeTemplate (`ct`): an administrator's named machine shape that users pick with
`spec.compute`. What a template sets, a resource that names it may not override (the
admission policy in admission/ rejects it at apply time); what it leaves unset, the
resource may set. Merge rules: kubeloop/compute.py."""

from __future__ import annotations

from pydantic import Field

from kubeloop.api.common import (
    GPU,
    INT32_MAX,
    CommonStatus,
    KubeModel,
    Quantity,
    Toleration,
)

# What Pod Security's "restricted" level lets a pod mount; every pod the operator makes
# keeps to it unless a template allows more (docs/operations.md, "Pod security").
RESTRICTED_VOLUME_TYPES = (
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
)
# Pod annotations that choose a container's AppArmor profile: Pod Security (baseline,
# hence restricted) allows only the runtime's default or a profile loaded on the node.
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
APPARMOR_ALLOWED = "runtime/default or localhost/<profile>"
ANY = "*"
_NAME_OR_ANY = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
_VOLUME_TYPE = r"^(\*|[a-z][A-Za-z0-9]*)$"


class PodSecurityAllowance(KubeModel):
    """What resources that name the template may ask for beyond Pod Security
    "restricted", in the namespaces listed."""

    namespaces: list[str] = Field(
        min_length=1,
        max_length=256,
        description="Namespaces where these allowances hold; `*` for every namespace. A "
        "resource in another namespace that names the template keeps to the restricted "
        "defaults.",
        json_schema_extra={"items": {"type": "string", "pattern": _NAME_OR_ANY}},
    )
    service_account_names: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Service accounts (of the resource's own namespace) its pods may run "
        "as, besides the namespace's `default`; `*` for any. Without it, `serviceAccountName` "
        "may only be `default`.",
        json_schema_extra={"items": {"type": "string", "pattern": _NAME_OR_ANY}},
    )
    volume_types: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Volume kinds a TrainingJob's `volumes` may use besides those Pod "
        "Security restricted allows (" + ", ".join(RESTRICTED_VOLUME_TYPES) + "), e.g. "
        "`hostPath` or `nfs`; `*` for any.",
        json_schema_extra={"items": {"type": "string", "pattern": _VOLUME_TYPE}},
    )
    run_as_root: bool = Field(
        default=False,
        description="Let TrainingJobs set `runAsRoot: true` (workers may run as user 0).",
    )


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
    pod_security: PodSecurityAllowance | None = Field(
        default=None,
        description="More than Pod Security restricted for the resources that name this "
        "template in `spec.compute` (not those that use it as the default): other volume "
        "kinds, other service accounts, root. Unset: nothing more.",
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
