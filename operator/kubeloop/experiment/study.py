"""A fresh in-memory Optuna study told the recorded trials back, in their order.

The told-back study is built the same way for asking (suggest.py) and for pruning
(prune.py): trial numbers in the study are the recorded numbers, so whatever Optuna
derives from a trial's number (Hyperband's bracket, the grid's order) is the same after
a restart. No storage but memory, no state kept between calls.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import TrialState

from kubeloop.api.experiment import ExperimentSpec, Trial

# A fixed name: Hyperband places a trial in a bracket by hashing the study's name with
# the trial's number, so a random name would move trials between brackets.
STUDY_NAME = "kubeloop-experiment"

optuna.logging.set_verbosity(optuna.logging.WARNING)


class TrialRecordsError(ValueError):
    """The trial records are not numbered 0, 1, ... without gaps."""


def in_order(trials: Sequence[Trial]) -> list[Trial]:
    ordered = sorted(trials, key=lambda t: t.number)
    numbers = [t.number for t in ordered]
    if numbers != list(range(len(ordered))):
        raise TrialRecordsError(f"trial numbers must be 0..{len(ordered) - 1}, got {numbers}")
    return ordered


def steps(trial: Trial) -> dict[int, float]:
    """The trial's reported values by step; the last report of a step wins, NaN dropped."""
    return {p.step: p.value for p in trial.intermediate if not math.isnan(p.value)}


def final_state(trial: Trial) -> tuple[TrialState, float | None]:
    """How Optuna is told a recorded trial ended: RUNNING for one that has not."""
    if trial.state == "Pruned" or trial.pruned:
        return TrialState.PRUNED, None
    if trial.state == "Succeeded" and trial.value is not None and math.isfinite(trial.value):
        return TrialState.COMPLETE, trial.value
    if trial.state in ("Succeeded", "Failed"):  # a success without its metric is no result
        return TrialState.FAIL, None
    return TrialState.RUNNING, None


def tell(study: optuna.Study, trial: optuna.Trial, record: Trial) -> None:
    state, value = final_state(record)
    if state == TrialState.RUNNING:
        return
    if state == TrialState.PRUNED and not record.intermediate and record.value is not None:
        trial.report(record.value, 0)  # a pruned trial's value is its last report
    study.tell(trial, value, state=state)


def create(
    spec: ExperimentSpec,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    return optuna.create_study(
        study_name=STUDY_NAME,
        direction=spec.objective.direction,
        sampler=sampler or optuna.samplers.RandomSampler(seed=0),
        pruner=pruner or optuna.pruners.NopPruner(),
    )


@contextmanager
def quiet() -> Iterator[None]:
    """Optuna's warnings (experimental samplers, fixed values outside a changed range)
    say nothing the operator can act on in a reconcile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
