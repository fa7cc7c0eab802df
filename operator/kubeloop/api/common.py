"""Types shared by the kinds."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Marks a field whose content the API server keeps as written (Kubernetes types we
# pass through to pods unchanged, such as volumes).
PRESERVE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}

INT32_MAX = 2**31 - 1
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
QUANTITY_HINT = (
    "must be a Kubernetes quantity: a number with an optional suffix m, k, Ki, M, Mi, G, "
    "Gi, T, Ti, P, Pi, E or Ei, for example 500m, 2, 4Gi or 4G (4GB is not one)"
)
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def duration_seconds(text: str) -> float:
    """`1m30s` -> 90.0; a duration that DURATION_PATTERN admits."""
    return sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def cel(
    rule: str,
    message: str,
    field_path: str | None = None,
    message_expression: str | None = None,
) -> dict[str, Any]:
    """One x-kubernetes-validations entry: a CEL rule and the message users see (with a
    message expression, that message is the fallback when the expression fails)."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression:
        entry["messageExpression"] = message_expression
    if field_path:
        entry["fieldPath"] = field_path
    return entry


# The locations Kubeloop itself can read or mount: the model server's fetch step
# (serving/fetch.py) reads http(s)://, s3:// and file://, and the renderers mount
# pvc:// claims (render/storage.py). Anything else (gs://, hdfs://, a typo) is refused
# at apply time instead of failing in a pod minutes later. One rule per mistake, each
# with its own message, so that the API server reports every one at once.
LOCATION_FORMS = (
    "http(s)://HOST/PATH, s3://BUCKET/KEY, pvc://CLAIM/PATH, file:///PATH or an absolute path"
)
# A PersistentVolumeClaim's name: a DNS subdomain (the backslash escapes the dot in CEL).
_CLAIM = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LOCATION_RULES: list[Any] = [
    cel(
        "self.startsWith('/') || self.matches('^(?i:https?|s3|pvc|file)://')",
        f"must be one of {LOCATION_FORMS}; other schemes (gs://, hdfs://, ...) are not "
        "supported",
        message_expression=(
            "self.contains('://') ? 'scheme ' + self.substring(0, self.indexOf('://')) + "
            f"':// is not supported: use {LOCATION_FORMS}' : "
            f"'must be a URI or an absolute path: {LOCATION_FORMS}'"
        ),
    ),
    cel(
        f"!self.matches('^(?i:pvc)://') || self.matches('^(?i:pvc)://{_CLAIM}(/.*)?$')",
        "a pvc:// location is pvc://CLAIM/PATH, CLAIM a PersistentVolumeClaim of this "
        "namespace (lower-case letters, digits, '-' and '.'), e.g. pvc://models/iris/v1",
    ),
    cel(
        "!self.matches('^(?i:s3)://') || self.matches('^(?i:s3)://[^/]+')",
        "an s3:// location names its bucket: s3://BUCKET/KEY",
    ),
    cel(
        "!self.matches('^(?i:file)://') || self.matches('^(?i:file)://(localhost)?/')",
        "a file:// location is an absolute path inside the pod: file:///PATH",
    ),
    cel(
        "!self.matches('^(?i:https?)://') || self.matches('^(?i:https?)://[^/]+')",
        "an http(s):// location names its host: https://HOST/PATH",
    ),
]


class KubeModel(BaseModel):
    """camelCase in YAML, snake_case in Python; unknown fields are ignored because the
    API server has already pruned them by the time the operator sees a body."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=False
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ExperimentRef(KubeModel):
    """An Experiment's model: its best trial's, or one pinned trial's."""

    name: str = Field(min_length=1, max_length=253, description="Experiment in this namespace.")
    trial: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Pin one trial (its TrainingJob's name, as in the Experiment's "
        "`status.trials`): its model once it has succeeded. Unset: the Experiment's best "
        "trial (`status.bestTrial`), followed as a better one finishes.",
    )


class EnvVar(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="Source for the value (as in a Pod: secretKeyRef, configMapKeyRef, "
        "fieldRef); passed to the pod unchanged, never read by the operator.",
        json_schema_extra=PRESERVE,
    )


def _quantity(value: str) -> str:
    if not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(QUANTITY_HINT)
    return value


# The API server checks it with CEL, whose message names the fix; a pattern's error
# would show only the regular expression.
Quantity = Annotated[
    str,
    AfterValidator(_quantity),
    Field(
        max_length=64,
        json_schema_extra={"x-kubernetes-validations": [cel("isQuantity(self)", QUANTITY_HINT)]},
    ),
]


class ComputeResources(KubeModel):
    cpu: Quantity | None = Field(
        default=None,
        description="CPU request per pod, e.g. `500m` or `2`. No CPU limit is set.",
    )
    memory: Quantity | None = Field(
        default=None,
        description="Memory per pod, e.g. `4Gi`; used as both request and limit.",
    )


class GPU(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.type) || self.count > 0",
                    "gpu.type needs gpu.count greater than 0",
                )
            ]
        }
    )

    count: int = Field(
        default=0, ge=0, le=64, description="GPUs per pod (worker or replica). 0: none."
    )
    type: str | None = Field(
        default=None,
        max_length=63,
        description="GPU product, matched against the node label `nvidia.com/gpu.product` "
        "(e.g. `NVIDIA-H100-80GB-HBM3`).",
    )
    resource_name: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        description="Extended resource that counts the GPUs on nodes.",
    )


class Toleration(KubeModel):
    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="`Exists` or `Equal` (default)."
    )
    value: str | None = Field(default=None, description="Taint value for `Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class PodMetadata(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    type: str = Field(description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason; see docs/troubleshooting.")
    message: str = Field(default="", description="What happened, for humans.")
    last_transition_time: str | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The generation this condition was computed for."
    )


class CommonStatus(KubeModel):
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the status reflects."
    )
    phase: str | None = Field(default=None, description="A one-word summary for humans.")
    message: str | None = Field(default=None, description="Why the resource is in its phase.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling and Stalled (kstatus), plus kind-specific ones.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
