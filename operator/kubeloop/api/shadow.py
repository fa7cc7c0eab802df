"""ModelDeployment `status.shadow`: the shadow and how it compares with the stable on
the same mirrored requests (docs/shadow.md)."""

from __future__ import annotations

from pydantic import Field

from kubeloop.api.common import KubeModel


class ShadowLabelled(KubeModel):
    """Both models on the mirrored requests whose late labels came back."""

    samples: int = Field(description="Labelled answers both models gave.")
    champion_only_right: int | None = Field(
        default=None, description="Classifiers: the stable right, the shadow wrong."
    )
    shadow_only_right: int | None = Field(
        default=None, description="Classifiers: the shadow right, the stable wrong."
    )
    champion_accuracy: float | None = Field(default=None, description="The stable's, 0 to 1.")
    shadow_accuracy: float | None = Field(default=None, description="The shadow's, 0 to 1.")
    champion_mae: float | None = Field(
        default=None, alias="championMAE", description="Regressors: the stable's mean abs error."
    )
    shadow_mae: float | None = Field(
        default=None, alias="shadowMAE", description="Regressors: the shadow's mean abs error."
    )
    test: str | None = Field(
        default=None,
        description="`mcnemar-exact` (classifiers: the exact binomial test on the answers "
        "only one model got right) or `paired-t` (regressors: Student's t on the "
        "differences of absolute errors).",
    )
    p_value: float | None = Field(
        default=None,
        description="Two-sided p-value of `test`: small when the two models differ on the "
        "same labelled requests by more than chance.",
    )


class ShadowStatus(KubeModel):
    model_uri: str | None = Field(default=None, description="The shadow's resolved model.")
    state: str | None = Field(
        default=None,
        description="Waiting (model unresolved), Progressing (pods starting), Comparing "
        "(fewer samples than `minSamples`) or Compared.",
    )
    replicas: int | None = Field(default=None, description="Shadow replicas desired.")
    ready_replicas: int | None = Field(default=None, description="Shadow replicas ready.")
    url: str | None = Field(
        default=None, description="Where the stable's pods send the copies (its own Service)."
    )
    mirror_percent: int | None = Field(default=None, description="Share of requests copied.")
    pods: int | None = Field(
        default=None, description="Stable pods whose counters were summed at the last read."
    )
    read_time: str | None = Field(default=None, description="When they were read.")
    mirrored: int | None = Field(default=None, description="Requests copied to the shadow.")
    dropped: int | None = Field(
        default=None, description="Copies dropped because the queue to the shadow was full."
    )
    samples: int | None = Field(
        default=None, description="Answers (rows) both models gave and that were compared."
    )
    agreement: float | None = Field(
        default=None, description="Classifiers: share of those where both answered the same."
    )
    mean_abs_difference: float | None = Field(
        default=None, description="Regressors: mean |stable - shadow| over those answers."
    )
    champion_error_percent: float | None = Field(
        default=None, description="The stable's inference requests answered with 5xx, percent."
    )
    shadow_error_percent: float | None = Field(
        default=None,
        description="Copies the shadow failed (an error, no answer in time), percent.",
    )
    champion_latency_p99_ms: float | None = Field(
        default=None, alias="championLatencyP99Ms", description="The stable's p99, ms."
    )
    shadow_latency_p99_ms: float | None = Field(
        default=None,
        alias="shadowLatencyP99Ms",
        description="The shadow's p99 as the stable's pods measured it, ms.",
    )
    labelled: ShadowLabelled | None = Field(
        default=None, description="Both models on labelled requests, with a paired test."
    )
    summary: str | None = Field(default=None, description="One line for `kubectl get`.")
    message: str | None = Field(default=None, description="Why the shadow is in its state.")
