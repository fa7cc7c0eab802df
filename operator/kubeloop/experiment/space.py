"""The search space: checked, turned into Optuna distributions, and converted between
the values Optuna works with and the strings a TrainingJob's hyperparameters hold."""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from kubeloop.api import experiment as api
from kubeloop.api.experiment import ExperimentSpec, Parameter

# A grid larger than this is refused: it would never be searched through.
MAX_GRID_POINTS = 100_000


class SearchSpaceError(ValueError):
    """The spec's search space cannot be searched; the message says why."""


def _parameter_problems(p: Parameter) -> list[str]:
    """The Parameter CEL rules of kubeloop.api.experiment, with their messages."""
    found = []
    numeric = p.type in ("float", "int")
    if numeric and (p.min is None or p.max is None):
        found.append(api.NEEDS_BOUNDS)
    if p.min is not None and p.max is not None and not p.min < p.max:
        found.append(api.MIN_BELOW_MAX)
    if p.log and p.min is not None and not p.min > 0:
        found.append(api.LOG_NEEDS_POSITIVE_MIN)
    if p.log and p.step is not None:
        found.append(api.LOG_WITHOUT_STEP)
    if p.type == "int" and any(
        x is not None and not float(x).is_integer() for x in (p.min, p.max, p.step)
    ):
        found.append(api.INT_BOUNDS)
    if p.type == "categorical":
        if not p.values:
            found.append(api.CATEGORICAL_NEEDS_VALUES)
        if p.min is not None or p.max is not None or p.step is not None or p.log:
            found.append(api.BOUNDS_NOT_CATEGORICAL)
    elif p.values:
        found.append(api.VALUES_ONLY_CATEGORICAL)
    return [f"parameter {p.name}: {message}" for message in found]


def problems(spec: ExperimentSpec) -> list[str]:
    """Every reason the search space cannot be searched; empty when it can."""
    found = [m for p in spec.parameters for m in _parameter_problems(p)]
    names = [p.name for p in spec.parameters]
    found += [f"parameter {n} is listed twice" for n in sorted({n for n in names
                                                                if names.count(n) > 1})]
    if spec.algorithm.name == "grid" and any(
        p.type == "float" and p.step is None for p in spec.parameters
    ):
        found.append(api.GRID_NEEDS_STEPS)
    if spec.parallel_trials > spec.max_trials:
        found.append(api.PARALLEL_OVER_MAX)
    if any(n in spec.training_job.hyperparameters for n in names):
        found.append(api.SEARCHED_AND_FIXED)
    if spec.compute and spec.training_job.compute:
        found.append(api.ONE_COMPUTE)
    output = spec.training_job.output
    if output is not None and "{trainingJob}" not in output.uri:
        found.append(api.OUTPUT_PER_TRIAL)
    stopping = spec.early_stopping
    if stopping and stopping.name == "hyperband" and stopping.max_resource is None:
        found.append(api.HYPERBAND_NEEDS_MAX)
    if stopping and stopping.max_resource is not None and (
        stopping.min_resource >= stopping.max_resource
    ):
        found.append(api.MIN_RESOURCE_BELOW_MAX)
    if not found and spec.algorithm.name == "grid" and grid_size(spec) > MAX_GRID_POINTS:
        found.append(f"the grid has {grid_size(spec)} points, more than {MAX_GRID_POINTS}")
    return found


def check(spec: ExperimentSpec) -> None:
    found = problems(spec)
    if found:
        raise SearchSpaceError("; ".join(found))


def distribution(p: Parameter) -> BaseDistribution:
    if p.type == "categorical":
        return CategoricalDistribution(list(p.values))
    assert p.min is not None and p.max is not None  # check() ran
    if p.type == "int":
        return IntDistribution(int(p.min), int(p.max), log=p.log, step=int(p.step or 1))
    return FloatDistribution(p.min, p.max, log=p.log, step=p.step)


def distributions(spec: ExperimentSpec) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in spec.parameters}


def _points(p: Parameter) -> list[Any]:
    if p.type == "categorical":
        return list(p.values)
    assert p.min is not None and p.max is not None and (p.type == "int" or p.step)
    step = p.step or 1.0
    count = math.floor((p.max - p.min) / step + 1e-9) + 1
    if p.type == "int":
        return [int(p.min) + i * int(step) for i in range(count)]
    # Rounded, so that 0.1 + 2 * 0.1 is written as 0.3 in the TrainingJob.
    return [round(p.min + i * step, 12) for i in range(count)]


def grid(spec: ExperimentSpec) -> dict[str, list[Any]]:
    """Every value of every parameter, for algorithm grid."""
    return {p.name: _points(p) for p in spec.parameters}


def grid_size(spec: ExperimentSpec) -> int:
    return math.prod(len(values) for values in grid(spec).values())


def trial_limit(spec: ExperimentSpec) -> int:
    """Trials in all: maxTrials, or fewer when the grid has fewer points."""
    if spec.algorithm.name == "grid":
        return min(spec.max_trials, grid_size(spec))
    return spec.max_trials


def to_text(value: Any) -> str:
    """A value as a TrainingJob's hyperparameter: shortest round-trip text."""
    if isinstance(value, bool):
        raise TypeError("no boolean parameters")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def from_text(p: Parameter, text: str) -> Any:
    """A recorded hyperparameter back as the value Optuna suggested."""
    if p.type == "int":
        return int(float(text))
    if p.type == "float":
        return float(text)
    return text


def to_hyperparameters(params: dict[str, Any]) -> dict[str, str]:
    return {name: to_text(value) for name, value in sorted(params.items())}


def from_hyperparameters(spec: ExperimentSpec, recorded: dict[str, str]) -> dict[str, Any]:
    """The searched values of a trial's recorded hyperparameters; a parameter the spec
    no longer has is dropped, one it newly has is absent."""
    by_name = {p.name: p for p in spec.parameters}
    return {n: from_text(by_name[n], t) for n, t in recorded.items() if n in by_name}
