"""Experiment (`exp`): a hyperparameter search over TrainingJobs (docs/experiments.md).

The search space is checked twice with the same messages: by the API server at apply
time (the CEL rules below) and by kubeloop.experiment.space before a study is built
(a body written before a rule existed, or a unit test without an API server).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from kubeloop.api.common import INT32_MAX, CommonStatus, KubeModel, cel
from kubeloop.api.trainingjob import HYPERPARAMETER_NAME, TrainingJobSpec

# One message per mistake, shared with kubeloop.experiment.space.
NEEDS_BOUNDS = "a float or int parameter needs min and max"
MIN_BELOW_MAX = "min must be less than max"
LOG_NEEDS_POSITIVE_MIN = "a log-scale parameter needs min greater than 0"
LOG_WITHOUT_STEP = "a parameter is either log-scale or stepped, not both"
INT_BOUNDS = "an int parameter's min, max and step are whole numbers"
CATEGORICAL_NEEDS_VALUES = "a categorical parameter needs at least one value in values"
VALUES_ONLY_CATEGORICAL = "values are for categorical parameters; float and int take min and max"
BOUNDS_NOT_CATEGORICAL = "a categorical parameter takes values, not min, max, step or log"
GRID_NEEDS_STEPS = (
    "algorithm grid needs a step on every float parameter (a grid is finite): add step, "
    "or pick random, tpe or cmaes"
)
PARALLEL_OVER_MAX = "parallelTrials must not exceed maxTrials"
SEARCHED_AND_FIXED = (
    "a searched parameter is also set in trainingJob.hyperparameters: remove it there "
    "(the search sets it on every trial)"
)
ONE_COMPUTE = "set compute or trainingJob.compute, not both"
OUTPUT_PER_TRIAL = (
    "trainingJob.output.uri needs {trainingJob}, which becomes each trial's name, so that "
    "each trial keeps its own model"
)
HYPERBAND_NEEDS_MAX = "hyperband needs maxResource (the steps a full trial reports)"
MIN_RESOURCE_BELOW_MAX = "minResource must be less than maxResource"

ParameterType = Literal["float", "int", "categorical"]
Direction = Literal["minimize", "maximize"]
AlgorithmName = Literal["random", "grid", "tpe", "cmaes"]
EarlyStoppingName = Literal["median", "successiveHalving", "hyperband"]
TrialState = Literal["Pending", "Running", "Succeeded", "Failed", "Pruned"]
FINISHED_TRIAL_STATES = ("Succeeded", "Failed", "Pruned")

_NUMERIC = "self.type in ['float', 'int']"


class Parameter(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"!({_NUMERIC}) || (has(self.min) && has(self.max))", NEEDS_BOUNDS),
                cel("!has(self.min) || !has(self.max) || self.min < self.max", MIN_BELOW_MAX),
                cel("!self.log || !has(self.min) || self.min > 0.0", LOG_NEEDS_POSITIVE_MIN),
                cel("!self.log || !has(self.step)", LOG_WITHOUT_STEP),
                cel(
                    "self.type != 'int' || ["
                    "has(self.min) ? self.min : 0.0, has(self.max) ? self.max : 0.0, "
                    "has(self.step) ? self.step : 1.0].all(x, double(int(x)) == x)",
                    INT_BOUNDS,
                ),
                cel(
                    "self.type != 'categorical' || (has(self.values) && size(self.values) > 0)",
                    CATEGORICAL_NEEDS_VALUES,
                ),
                cel(
                    "self.type == 'categorical' || !has(self.values) || size(self.values) == 0",
                    VALUES_ONLY_CATEGORICAL,
                ),
                cel(
                    "self.type != 'categorical' || "
                    "!(has(self.min) || has(self.max) || has(self.step) || self.log)",
                    BOUNDS_NOT_CATEGORICAL,
                ),
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=HYPERPARAMETER_NAME,
        description="The hyperparameter's name: each trial's TrainingJob gets it in "
        "`hyperparameters` (the variable HP_<NAME> and the argument --NAME=VALUE).",
    )
    type: ParameterType = Field(
        description="`float` and `int` take min and max (and log or step); `categorical` "
        "takes values."
    )
    min: float | None = Field(default=None, description="Lowest value searched (inclusive).")
    max: float | None = Field(default=None, description="Highest value searched (inclusive).")
    log: bool = Field(
        default=False,
        description="Search on a log scale (learning rates, regularisation); min must be "
        "greater than 0.",
    )
    step: float | None = Field(
        default=None,
        gt=0,
        description="Search only min, min+step, min+2*step, ... up to max. Needed on float "
        "parameters for algorithm grid. Not with log.",
    )
    values: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="The choices of a categorical parameter, as the TrainingJob receives "
        "them (strings).",
        json_schema_extra={"x-kubernetes-list-type": "set", "items": {"type": "string",
                                                                       "maxLength": 253}},
    )


class Objective(KubeModel):
    metric: str = Field(
        min_length=1,
        max_length=63,
        description="The metric the trials report (`kubeloop.train.report`), e.g. "
        "`accuracy`: its final value is the trial's value, its values while running are "
        "what early stopping compares.",
    )
    direction: Direction = Field(description="Whether a smaller or a larger value is better.")
    goal: float | None = Field(
        default=None,
        description="End the search once a trial reaches this value (at most for minimize, "
        "at least for maximize); trials still running are stopped.",
    )


class Algorithm(KubeModel):
    name: AlgorithmName = Field(
        default="tpe",
        description="How the next trials are chosen, through Optuna's samplers: `random`, "
        "`grid` (every combination once, in a seeded order), `tpe` (Tree-structured Parzen "
        "Estimator, Bayesian) or `cmaes` (CMA-ES, for float and int parameters).",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Seed of the sampler; the same seed and the same results give the same "
        "trials. Unset: derived from the Experiment's UID.",
    )
    startup_trials: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="tpe and cmaes: random trials before the model of the results is used.",
    )


class EarlyStopping(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.name != 'hyperband' || has(self.maxResource)", HYPERBAND_NEEDS_MAX),
                cel(
                    "!has(self.maxResource) || self.minResource < self.maxResource",
                    MIN_RESOURCE_BELOW_MAX,
                ),
            ]
        }
    )

    name: EarlyStoppingName = Field(
        description="How running trials are stopped early from the values they report while "
        "running (Optuna's pruners): `median` stops a trial whose value at a step is worse "
        "than the median of the finished trials at that step; `successiveHalving` and "
        "`hyperband` keep the best 1/reductionFactor of the trials at each rung.",
    )
    startup_trials: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="median: trials that must finish before any trial is stopped.",
    )
    warmup_steps: int = Field(
        default=0,
        ge=0,
        le=INT32_MAX,
        description="median: a trial is judged from this step on, never before.",
    )
    min_resource: int = Field(
        default=1,
        ge=1,
        le=INT32_MAX,
        description="successiveHalving and hyperband: the step of the first rung.",
    )
    max_resource: int | None = Field(
        default=None,
        ge=2,
        le=INT32_MAX,
        description="hyperband: the steps a trial reports when it runs to the end.",
    )
    reduction_factor: int = Field(
        default=3,
        ge=2,
        le=100,
        description="successiveHalving and hyperband: rungs are minResource * "
        "reductionFactor^k steps, and 1/reductionFactor of the trials pass each one.",
    )


class ExperimentSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.algorithm) || self.algorithm.name != 'grid' || "
                    "self.parameters.all(p, p.type != 'float' || has(p.step))",
                    GRID_NEEDS_STEPS,
                    ".algorithm.name",
                ),
                cel("self.parallelTrials <= self.maxTrials", PARALLEL_OVER_MAX,
                    ".parallelTrials"),
                cel(
                    "!has(self.trainingJob.hyperparameters) || "
                    "self.parameters.all(p, !(p.name in self.trainingJob.hyperparameters))",
                    SEARCHED_AND_FIXED,
                    ".parameters",
                ),
                cel("!has(self.compute) || !has(self.trainingJob.compute)", ONE_COMPUTE,
                    ".compute"),
                cel(
                    "!has(self.trainingJob.output) || "
                    "self.trainingJob.output.uri.contains('{trainingJob}')",
                    OUTPUT_PER_TRIAL,
                    ".trainingJob.output.uri",
                ),
            ]
        }
    )

    training_job: TrainingJobSpec = Field(
        description="The TrainingJob every trial runs; the searched parameters are added to "
        "its hyperparameters. `{trainingJob}` in `output.uri` becomes the trial's "
        "TrainingJob name."
    )
    parameters: list[Parameter] = Field(
        min_length=1,
        max_length=32,
        description="The search space: one entry per hyperparameter searched.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    objective: Objective = Field(description="What the search optimises.")
    algorithm: Algorithm = Field(
        default_factory=Algorithm, description="The sampler that picks the next trials."
    )
    early_stopping: EarlyStopping | None = Field(
        default=None,
        description="Stop unpromising trials from the values they report while running "
        "(their pods are freed). Unset: every trial runs to its end.",
    )
    max_trials: int = Field(
        default=10, ge=1, le=1000, description="Trials in all, counting failed and stopped ones."
    )
    parallel_trials: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Trials at once, counting those created and waiting (pending, or "
        "queued by Kueue).",
    )
    max_failed_trials: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="The search fails when more trials than this have failed.",
    )
    compute: str | None = Field(
        default=None,
        max_length=253,
        description="A ComputeTemplate by name for every trial (as a TrainingJob's "
        "`compute`).",
    )


class StepValue(KubeModel):
    step: int = Field(description="The step the trial reported.")
    value: float = Field(description="The objective's value at that step.")


class Trial(KubeModel):
    name: str = Field(description="The trial's TrainingJob.")
    number: int = Field(description="The trial's number, from 0, in the order asked.")
    parameters: dict[str, str] = Field(
        default_factory=dict, description="The hyperparameters the search chose."
    )
    state: TrialState = Field(description="Pending, Running, Succeeded, Failed or Pruned.")
    value: float | None = Field(
        default=None, description="The objective: final, or the last one a pruned trial reported."
    )
    pruned: bool = Field(default=False, description="Stopped early by the pruner.")
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="Why a Failed trial failed: its run's failure, or a run that succeeded "
        "without reporting the objective (such a trial counts as failed).",
    )
    intermediate: list[StepValue] = Field(
        default_factory=list,
        max_length=32,
        description="The objective's values the trial reported while running, by step (what "
        "early stopping compares).",
    )


class BestTrial(KubeModel):
    name: str = Field(description="The best trial's TrainingJob.")
    parameters: dict[str, str] = Field(default_factory=dict, description="Its hyperparameters.")
    value: float = Field(description="Its objective value.")
    model_uri: str | None = Field(default=None, description="Its model artifact.")


class TrialCounts(KubeModel):
    total: int = Field(default=0, description="Trials created.")
    pending: int = Field(
        default=0, description="Trials created whose workers do not run yet (queued ones too)."
    )
    running: int = Field(default=0, description="Trials whose workers run.")
    succeeded: int = Field(default=0, description="Trials that finished with a value.")
    failed: int = Field(default=0, description="Trials that failed.")
    pruned: int = Field(default=0, description="Trials stopped early.")


class ExperimentStatus(CommonStatus):
    trials: list[Trial] = Field(
        default_factory=list,
        description="Every trial so far: what the search is told back after a restart.",
    )
    best_trial: BestTrial | None = Field(default=None, description="The best finished trial.")
    counts: TrialCounts | None = Field(default=None, description="Trials by state.")
    trials_done: str | None = Field(
        default=None, description="`finished/maxTrials`, for `kubectl get exp`."
    )
    start_time: str | None = Field(default=None, description="When the first trial started.")
    completion_time: str | None = Field(default=None, description="When the search ended.")

