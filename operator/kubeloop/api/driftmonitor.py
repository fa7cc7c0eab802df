"""DriftMonitor (`dm`): watches a served model for drift and closes the loop."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from kubeloop.api.common import (
    DURATION_PATTERN,
    CommonStatus,
    ComputeResources,
    KubeModel,
    cel,
)
from kubeloop.api.experiment import ExperimentSpec
from kubeloop.api.trainingjob import DataLocation, Scheduling, TrainingJobSpec

DriftMethod = Literal["psi", "ks", "wasserstein", "jensenshannon", "chi2"]


class PrometheusSource(KubeModel):
    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Base URL of a Prometheus HTTP API. Must be allowed by the operator's "
        "`driftSourceAllowlist`.",
    )
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL template returning one feature's bucket counts by `le`; "
        "`{feature}`, `{model}`, `{namespace}`, `{window}` (the interval) and `{version}` "
        "are substituted. `{version}` is the version the watched model's pods serve (read "
        'from one of them): match `version="{version}"` so that, during a rollout or '
        "beside a canary, pods of the other model (on their own reference's bins) are not "
        "summed with it; without it every pod of the model is summed.",
    )


class Source(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.type != 'prometheus' || has(self.prometheus)",
                    "source.prometheus is required when source.type is prometheus",
                ),
                cel(
                    "self.type != 'batchPrediction' || "
                    "has(self.batchPrediction) != has(self.batchPredictionLabels)",
                    "source.type batchPrediction needs source.batchPrediction (a name) or "
                    "source.batchPredictionLabels, not both",
                ),
            ]
        }
    )

    type: Literal["metrics", "prometheus", "batchPrediction"] = Field(
        default="metrics",
        description="`metrics`: scrape the target's model server pods directly; "
        "`prometheus`: query a Prometheus HTTP API; `batchPrediction`: the rows a "
        "BatchPrediction scored (its `status.drift`), judged once per run that succeeded.",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="For type metrics: scrape this `/metrics` URL instead of the target's "
        "pods. Only URLs allowed by the operator's `driftSourceAllowlist` are used.",
    )
    prometheus: PrometheusSource | None = Field(default=None, description="For type prometheus.")
    batch_prediction: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="For type batchPrediction: the BatchPrediction (same namespace) whose "
        "scored rows are judged against the reference; its counts must be on the "
        "reference's bins (scored with the model whose profile is the reference).",
    )
    batch_prediction_labels: dict[str, str] | None = Field(
        default=None,
        description="For type batchPrediction, instead of a name: the newest run that "
        "succeeded among the BatchPredictions with these labels, such as the dated runs "
        "a CronJob creates; each is judged once.",
        json_schema_extra={"minProperties": 1, "maxProperties": 16},
    )


class ConfigMapKey(KubeModel):
    name: str = Field(min_length=1, max_length=253, description="ConfigMap in this namespace.")
    key: str = Field(default="profile.json", min_length=1, description="Key holding the profile.")


class Reference(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.configMap) && has(self.url))",
                    "reference: set configMap or url, not both",
                ),
            ]
        }
    )

    config_map: ConfigMapKey | None = Field(
        default=None,
        description="A reference profile (JSON, as written by `kubeloop profile`) in a "
        "ConfigMap of this namespace.",
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=2048,
        description="An http(s) URL that answers with a reference profile, read again at "
        "every check (for example a model server's `/v2/models/NAME/profile`); must be "
        "allowed by the operator's `driftSourceAllowlist`. Default (neither set): the "
        "profile that a ready pod of the ModelDeployment loaded with the active model, "
        "read from that pod's `/v2/models/NAME/profile`.",
    )


class Retrain(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.template) != has(self.experiment)",
                    "onDrift.retrain needs exactly one of template (one TrainingJob) or "
                    "experiment (a search)",
                ),
            ]
        }
    )

    template: TrainingJobSpec | None = Field(
        default=None,
        description="Spec of the TrainingJob created on drift. `{trainingJob}` in "
        "`output.uri` is replaced by the new TrainingJob's name, so that every retrain "
        "writes its own model.",
    )
    experiment: ExperimentSpec | None = Field(
        default=None,
        description="A hyperparameter search instead of one TrainingJob: the spec of the "
        "Experiment created on drift (docs/experiments.md). When it ends, its best "
        "trial's model is the retrained model: evaluated by `evaluate` and promoted as one "
        "run's would be. A search that ends without a best trial fails the retrain.",
    )
    cooldown: str = Field(
        default="1h",
        pattern=DURATION_PATTERN,
        description="Minimum time between two retrains, e.g. `30m`, `1h`.",
    )


EvaluationMetric = Literal["accuracy", "f1", "log_loss", "roc_auc", "rmse", "mae", "r2"]


class LiveLabels(KubeModel):
    min_rows: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="Live labelled rows needed to judge on them. With fewer: Beside judges "
        "on the holdout alone (and says so), Instead gives no verdict (EvaluationFailed).",
    )
    mode: Literal["Beside", "Instead"] = Field(
        default="Beside",
        description="Beside: the challenger must pass on the holdout `data` and on the live "
        "rows. Instead: on the live rows alone (`data` may be left out).",
    )


class Evaluate(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.data) || self.data.uri.startsWith('pvc://') || "
                    "self.data.uri.startsWith('file://') || self.data.uri.startsWith('/')",
                    "onDrift.evaluate.data.uri must be pvc://CLAIM/PATH, file:// or a path: "
                    "the evaluation pod reads the data from a mounted volume",
                ),
                cel(
                    "has(self.data) || (has(self.live) && self.live.mode == 'Instead')",
                    "onDrift.evaluate needs data (a labelled holdout), unless live.mode is Instead",
                ),
            ]
        }
    )

    data: DataLocation | None = Field(
        default=None,
        description="Labelled holdout data (CSV, or Parquet when the image has pyarrow) "
        "that both models are scored on. A `pvc://` location is mounted read-only. "
        "Needed unless `live.mode` is Instead.",
    )
    live: LiveLabels | None = Field(
        default=None,
        description="Also score both models on the labelled rows the serving pods keep "
        "(feedback records that carry their inputs, docs/quality.md): the evaluation Job "
        "reads them from every pod of the ModelDeployment (port of its runtime).",
    )

    @model_validator(mode="after")
    def _data_or_live(self) -> Evaluate:
        if self.data is None and (self.live is None or self.live.mode != "Instead"):
            raise ValueError(
                "onDrift.evaluate needs data (a labelled holdout), unless live.mode is Instead"
            )
        return self

    metric: EvaluationMetric = Field(
        description="accuracy, f1 (macro), log_loss, roc_auc (one-vs-rest macro) for "
        "classifiers; rmse, mae, r2 for regressors. Lower is better for log_loss, rmse "
        "and mae, higher for the others."
    )
    label_column: str | None = Field(
        default=None,
        max_length=253,
        description="The label column of the data. Default: the `label_column` the model's "
        "model.json names.",
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        description="How much better (absolute, in the metric's direction) the challenger "
        "must score than the champion. 0: at least as good.",
    )
    floor: float | None = Field(
        default=None,
        description="An absolute bar the challenger must reach as well (a ceiling for "
        "metrics where lower is better).",
    )
    active_deadline_seconds: int = Field(
        default=600, ge=10, le=86400, description="Time limit of the evaluation Job."
    )
    resources: ComputeResources | None = Field(
        default=None,
        description="Requests and limits of the evaluation pod. Default: requests cpu 100m, "
        "memory 256Mi; limits cpu 1, memory 1Gi.",
    )
    scheduling: Scheduling | None = Field(
        default=None,
        description="Placement of the evaluation pod (nodeSelector, tolerations, priority "
        "class). Default: the retrain template's, where its storage is reachable.",
    )


class ShadowGate(KubeModel):
    min_labelled: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="Labelled requests both models must have answered (the shadow's "
        "`status.shadow.labelled.samples`: answers whose late label came back through the "
        "feedback route with the answer's `id`, docs/shadow.md) before the trial is judged.",
    )
    require: Literal["Better", "NotWorse"] = Field(
        default="Better",
        description="`Better`: the challenger's metric on those requests beats the "
        "champion's by at least `margin` and the paired test (McNemar for classifiers, "
        "paired t on absolute errors for regressors) finds the difference significant "
        "(p-value below `significance`). `NotWorse`: the challenger is worse by no more "
        "than `margin`, and not significantly worse.",
    )
    margin: float = Field(
        default=0.0,
        ge=0,
        le=1_000_000,
        description="In the metric's units: accuracy (0 to 1) for classifiers, mean absolute "
        "error for regressors. With Better, the least improvement; with NotWorse, the most "
        "loss tolerated.",
    )
    significance: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="The level of the paired test: a difference counts as significant when "
        "its two-sided p-value is below it.",
    )
    mirror_percent: int = Field(
        default=100,
        ge=1,
        le=100,
        description="Share of the champion's requests copied to the challenger during the "
        "trial, in percent.",
    )
    timeout: str = Field(
        default="24h",
        pattern=DURATION_PATTERN,
        description="How long the trial waits for `minLabelled` labelled requests; a trial "
        "that has too few by then is rejected (reason TooFewLabels).",
    )


class OnDrift(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!self.promote || has(self.retrain)", "onDrift.promote needs onDrift.retrain"),
                cel(
                    "!has(self.evaluate) || has(self.retrain)",
                    "onDrift.evaluate needs onDrift.retrain",
                ),
                cel(
                    "!has(self.shadow) || self.promote",
                    "onDrift.shadow needs promote: true (it is a trial before a promotion)",
                ),
                cel(
                    "!has(self.evaluate) || !has(self.retrain) || "
                    "!has(self.retrain.template) || !has(self.retrain.template.output) || "
                    "self.retrain.template.output.uri.contains('{trainingJob}')",
                    "onDrift.evaluate needs {trainingJob} in retrain.template.output.uri: "
                    "each retrain writes its own model, never over the one it is scored "
                    "against",
                ),
            ]
        }
    )

    retrain: Retrain | None = Field(default=None, description="Retrain when drift is found.")
    promote: bool = Field(
        default=False,
        description="When the retrained model succeeds (and passes `evaluate`, when set), "
        "point the ModelDeployment at it (as a canary when the deployment has canary "
        "settings).",
    )
    promote_with: Literal["Spec", "Annotation"] = Field(
        default="Spec",
        description="Where a promotion is written. `Spec`: the ModelDeployment's "
        "`spec.model` (or `spec.canary.model`) is patched to the new model. `Annotation`: "
        "its spec is left as applied and the promotion is written to its "
        "`kubeloop.io/promotion` annotation, which the deployment serves in place of the "
        "`spec.model` (or `spec.canary.model`) it was made over, until that field "
        "changes: for a ModelDeployment kept in Git by Flux or Argo CD, whose next sync "
        "would undo a spec patch (docs/gitops/README.md).",
    )
    evaluate: Evaluate | None = Field(
        default=None,
        description="The gate before promotion: after the retrain succeeds, a Job scores "
        "the serving model (champion) and the retrained one (challenger) on the same "
        "labelled data; only a challenger that passes is promoted "
        "(docs/safe-retraining.md).",
    )
    shadow: ShadowGate | None = Field(
        default=None,
        description="A trial on live traffic before promotion: after the retrain succeeds "
        "(and passes `evaluate`, when set), the challenger runs as the ModelDeployment's "
        "shadow (set through its `kubeloop.io/shadow-trial` annotation, its spec left as "
        "applied) until `minLabelled` labelled requests were answered by both; it is "
        "promoted only when it meets `require`, else Rejected and the shadow removed "
        "(docs/safe-retraining.md). Needs `promote`. Unset: no trial.",
    )

    @model_validator(mode="after")
    def _shadow_promotes(self) -> OnDrift:
        if self.shadow is not None and not self.promote:
            raise ValueError(
                "onDrift.shadow needs promote: true (it is a trial before a promotion)"
            )
        return self


PerformanceMetric = Literal["accuracy", "f1", "rmse", "mae"]


class Performance(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.minimum), has(self.maximum), has(self.maxDrop)]"
                    ".filter(x, x).size() == 1",
                    "performance: set exactly one threshold: minimum (accuracy, f1), "
                    "maximum (rmse, mae) or maxDrop",
                ),
                cel(
                    "!has(self.minimum) || self.metric in ['accuracy', 'f1']",
                    "performance.minimum is a floor for accuracy or f1; use maximum for "
                    "rmse and mae",
                ),
                cel(
                    "!has(self.maximum) || self.metric in ['rmse', 'mae']",
                    "performance.maximum is a ceiling for rmse or mae; use minimum for "
                    "accuracy and f1",
                ),
                cel(
                    "self.source != 'estimated' || self.metric == 'accuracy'",
                    "performance.source estimated needs metric accuracy: only accuracy "
                    "is estimated without labels",
                ),
            ]
        }
    )

    metric: PerformanceMetric = Field(
        default="accuracy",
        description="accuracy or f1 (macro) for classifiers, higher is better; rmse or mae "
        "for regressors, lower is better.",
    )
    source: Literal["labels", "estimated", "both"] = Field(
        default="both",
        description="`labels`: the realised metric from the labels posted to the model "
        "server's feedback route; `estimated`: the calibrated confidence of the answers "
        "(accuracy only, no label needed); `both`: realised when the window has at least "
        "`minLabels` labels, else estimated (for f1, rmse, mae: labels only).",
    )
    minimum: float | None = Field(
        default=None,
        description="Absolute floor for accuracy or f1: degraded when the window's score "
        "is below it.",
    )
    maximum: float | None = Field(
        default=None,
        ge=0,
        description="Absolute ceiling for rmse or mae: degraded when the window's error "
        "is above it.",
    )
    max_drop: float | None = Field(
        default=None,
        ge=0,
        description="Degraded when the window's score is worse than the baseline by more "
        "than this (absolute, in the metric's direction). The baseline is the reference "
        "profile's accuracy (its calibration); without one the condition says the "
        "baseline is missing and nothing acts.",
    )
    min_labels: int = Field(
        default=100,
        ge=1,
        description="Labels a window needs before its realised metric is judged.",
    )


class DriftMonitorSpec(KubeModel):
    model_deployment: str = Field(
        min_length=1, max_length=253, description="The ModelDeployment to watch (same namespace)."
    )
    source: Source = Field(default_factory=Source, description="Where live histograms come from.")
    reference: Reference = Field(default_factory=Reference, description="The reference profile.")
    features: list[str] = Field(
        default_factory=list, description="Features to watch. Default: all in the profile."
    )
    method: DriftMethod = Field(default="psi", description="Drift statistic.")
    threshold: float | None = Field(
        default=None,
        gt=0,
        description="Drift when the score exceeds it (for ks and chi2: when the p-value, "
        "adjusted as `correction` says, is below it). Default: psi 0.2, ks/chi2 0.05, "
        "wasserstein 0.1, jensenshannon 0.1.",
    )
    correction: Literal["bh", "none"] = Field(
        default="bh",
        description="For p-value methods (ks, chi2; chi2 also stands in for ks on "
        "categorical features) over several features. `bh` (Benjamini-Hochberg): the "
        "p-values of all features tested in a check are adjusted together, and a feature "
        "drifts when its adjusted p-value is below `threshold`, so the expected share of "
        "false alarms among the drifted features (false discovery rate) stays below the "
        "threshold. `none`: each feature's own p-value against the threshold (with 20 "
        "unchanged features at 0.05, about one false alarm per check). No effect on psi, "
        "wasserstein and jensenshannon. The status says which was applied.",
    )
    interval: str = Field(
        default="60s", pattern=DURATION_PATTERN, description="Time between checks, e.g. `5m`."
    )
    min_samples: int = Field(
        default=100, ge=1, description="Live samples a check needs before it judges."
    )
    on_drift: OnDrift = Field(default_factory=OnDrift, description="What to do on drift.")
    performance: Performance | None = Field(
        default=None,
        description="The rule of what acts. With performance set, the loop (onDrift) acts "
        "on a quality drop only (the realised metric, or the estimated accuracy when the "
        "window has too few labels) and input drift is only reported (condition "
        "InputDrift). Without it, input drift acts, as before.",
    )


class FeatureScore(KubeModel):
    name: str = Field(description="Feature name.")
    score: float = Field(description="Statistic value.")
    p_value: float | None = Field(default=None, description="p-value (ks, chi2).")
    adjusted_p_value: float | None = Field(
        default=None,
        description="Benjamini-Hochberg adjusted p-value, compared with the threshold "
        "(when status.correction is bh).",
    )
    drifted: bool = Field(description="Whether this feature crossed the threshold.")


class LiveScores(KubeModel):
    rows: int = Field(description="Live labelled rows read from the serving pods.")
    champion: float | None = Field(default=None, description="The champion's score on them.")
    challenger: float | None = Field(default=None, description="The challenger's score.")
    passed: bool | None = Field(
        default=None, description="The verdict on them; absent when they were too few."
    )


class Evaluation(KubeModel):
    job: str = Field(description="The evaluation Job.")
    metric: str = Field(description="The metric both models were scored on.")
    champion_uri: str | None = Field(
        default=None, description="The model served when the evaluation started."
    )
    champion: float | None = Field(default=None, description="The champion's score.")
    challenger: float | None = Field(default=None, description="The retrained model's score.")
    passed: bool | None = Field(default=None, description="The verdict; absent until known.")
    reason: str | None = Field(
        default=None, description="Improved, NoChampion, NotBetter, BelowFloor, or an error."
    )
    message: str | None = Field(default=None, description="The verdict in words.")
    live: LiveScores | None = Field(
        default=None, description="The scores on live labelled rows, with `evaluate.live`."
    )


class ShadowTrial(KubeModel):
    champion_uri: str | None = Field(
        default=None, description="The model served when the trial started."
    )
    started: str = Field(description="When the challenger was set as the shadow.")
    metric: str | None = Field(
        default=None, description="accuracy (classifiers) or mae (regressors)."
    )
    samples: int = Field(default=0, description="Labelled requests both models answered.")
    champion: float | None = Field(default=None, description="The champion's metric on them.")
    challenger: float | None = Field(default=None, description="The challenger's metric.")
    test: str | None = Field(
        default=None, description="The paired test: mcnemar-exact or paired-t."
    )
    p_value: float | None = Field(default=None, description="Its two-sided p-value.")
    passed: bool | None = Field(default=None, description="The verdict; absent until known.")
    reason: str | None = Field(
        default=None,
        description="Improved, NotWorse, NotBetter, NotSignificant, Worse, TooFewLabels, "
        "ShadowInUse, ChampionChanged, ShadowTrialCancelled.",
    )
    message: str | None = Field(default=None, description="The verdict in words.")


class RetrainRecord(KubeModel):
    training_job: str = Field(
        description="Name of the TrainingJob created; for a search, the Experiment's until "
        "it ends, then its best trial's TrainingJob (the run whose model is evaluated)."
    )
    experiment: str | None = Field(
        default=None,
        description="Name of the Experiment created, when the retrain is a search "
        "(`onDrift.retrain.experiment`).",
    )
    time: str = Field(description="When it was created.")
    result: str = Field(
        default="Running",
        description="Running, Evaluating, RollingOut (promoted as the canary of a "
        "ModelDeployment with steps, whose analysis is under way), Succeeded (not promoted), "
        "Failed, Promoted, RolledBack (the canary's analysis failed or was aborted), "
        "Superseded (another canary model replaced it), Rejected (the evaluation gate or the "
        "shadow trial said no), EvaluationFailed, Shadowing (on trial as the "
        "deployment's shadow, `onDrift.shadow`).",
    )
    model_uri: str | None = Field(default=None, description="Its model, once succeeded.")
    finish_time: str | None = Field(default=None, description="When the result was final.")
    message: str | None = Field(
        default=None,
        description="Why it failed, when `result` is Failed: the API server's words for a "
        "refused create, the TrainingJob's failure, a deletion (the RetrainFailed Event "
        "says the same, but Events expire).",
    )
    created: bool | None = Field(
        default=None,
        description="The TrainingJob (or Experiment) was created: if it is gone before it "
        "ended, it was deleted (the retrain is then Failed, not created again).",
    )
    evaluation: Evaluation | None = Field(
        default=None, description="The evaluation gate's scores, when `evaluate` is set."
    )
    shadow: ShadowTrial | None = Field(
        default=None, description="The shadow trial's figures, when `onDrift.shadow` is set."
    )


class Window(KubeModel):
    time: str = Field(description="When the baseline scrape was taken.")
    reference: str = Field(default="", description="Hash of the reference bins the counts are on.")
    counts: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Cumulative per-bin counts per feature at that time.",
        json_schema_extra={"additionalProperties": {"type": "array", "items": {"type": "number"}}},
    )
    quality: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict,
        description="Cumulative quality counters (labels, estimates, predictions) per model "
        "version at that time, summed over pods.",
        json_schema_extra={
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                },
            }
        },
    )


class PerformanceStatus(KubeModel):
    metric: str = Field(description="The metric judged.")
    version: str | None = Field(default=None, description="The model version judged.")
    realised: float | None = Field(default=None, description="From the window's labels.")
    labels: int = Field(default=0, description="Labels in the window.")
    estimated: float | None = Field(
        default=None, description="Estimated accuracy from calibrated confidence."
    )
    baseline: float | None = Field(default=None, description="The reference's score.")
    judged: float | None = Field(
        default=None, description="The figure the threshold was applied to."
    )
    degraded: bool | None = Field(default=None, description="The quality verdict.")


class DriftMonitorStatus(CommonStatus):
    last_check_time: str | None = Field(default=None, description="When the last check ran.")
    samples: int | None = Field(
        default=None,
        description="Live samples in the last judged window (before the first verdict: in "
        "the window so far).",
    )
    drifted: bool | None = Field(default=None, description="The last verdict.")
    score: float | None = Field(default=None, description="Worst feature score of the last check.")
    features: list[FeatureScore] = Field(default_factory=list, description="Per-feature scores.")
    correction: str | None = Field(
        default=None,
        description="The multiple-testing correction applied to the last check's p-values: "
        "bh (Benjamini-Hochberg, each feature judged on its adjustedPValue) or none "
        "(spec.correction none, or a method without p-values).",
    )
    performance: PerformanceStatus | None = Field(
        default=None, description="The served model's quality over the last window."
    )
    prediction_drift: float | None = Field(
        default=None, description="Drift score of the model's outputs over the last window."
    )
    retrain_count: int = Field(default=0, description="TrainingJobs created so far.")
    last_retrain: RetrainRecord | None = Field(default=None, description="The latest retrain.")
    retrains: list[RetrainRecord] = Field(
        default_factory=list,
        description="The last 10 retrains that ended, newest first, with their results and "
        "scores: the audit trail of the loop.",
    )
    window: Window | None = Field(
        default=None, description="Baseline of the current window (kept across restarts)."
    )
    judged_batch: str | None = Field(
        default=None,
        description="With source.type batchPrediction: the run last judged (`NAME/UID`); "
        "its verdict stands until another run succeeds.",
    )

    @model_validator(mode="before")
    @classmethod
    def _count_moved(cls, data: Any) -> Any:
        """Before 0.2 `retrains` was the count: read such a status as the count."""
        if isinstance(data, dict) and isinstance(data.get("retrains"), int):
            data = {**data, "retrainCount": data["retrains"], "retrains": []}
        return data
