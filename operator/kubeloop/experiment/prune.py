"""Early stopping: whether a running trial should stop, from the values trials reported
while running, by Optuna's pruners on a told-back study.

The operator sees a run's reports as snapshots (the progress it reads at most every
10 s), so two trials rarely have a value at the same step. The trials are therefore
compared on the judged trial's own steps: another trial's value at a step is its last
report at or before it (none after its own last report). On that common ground every
trial is replayed step by step in the order of their numbers, reporting and asking the
pruner as Optuna does after each report (Successive Halving and Hyperband record each
trial's value at each rung as they go), the judged trial last. It is stopped if the
pruner says so at any of its steps.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import optuna

from kubeloop.api.experiment import EarlyStopping, ExperimentSpec, Trial
from kubeloop.experiment import study


def pruner(stopping: EarlyStopping) -> optuna.pruners.BasePruner:
    if stopping.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=stopping.startup_trials, n_warmup_steps=stopping.warmup_steps
        )
    if stopping.name == "hyperband":
        assert stopping.max_resource is not None  # the API's rule
        return optuna.pruners.HyperbandPruner(
            min_resource=stopping.min_resource,
            max_resource=stopping.max_resource,
            reduction_factor=stopping.reduction_factor,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=stopping.min_resource, reduction_factor=stopping.reduction_factor
    )


def on_steps(reported: dict[int, float], grid: list[int]) -> dict[int, float]:
    """The reports carried forward onto `grid`: at each step, the last value reported at
    or before it; nothing before the first report or after the last."""
    if not reported:
        return {}
    own = sorted(reported)
    out = {}
    for step in grid:
        if step > own[-1]:
            break
        at = bisect.bisect_right(own, step) - 1
        if at >= 0:
            out[step] = reported[own[at]]
    return out


def should_prune(spec: ExperimentSpec, trial: Trial, trials: Sequence[Trial]) -> bool:
    """Whether `trial` (running, one of `trials`) should be stopped now."""
    if spec.early_stopping is None:
        return False
    records = study.in_order(trials)
    judged = study.steps(trial)
    if not judged or trial.number >= len(records):
        return False
    grid = sorted(judged)
    with study.quiet():
        told = study.create(spec, pruner=pruner(spec.early_stopping))
        asked = [told.ask() for _ in records]  # numbers as recorded
        # The median compares values only; the rung pruners record each trial's value
        # at each rung as they judge it, so the others are judged too (and the
        # verdicts on the past dropped).
        rungs = spec.early_stopping.name != "median"
        for record, live in zip(records, asked, strict=True):
            if record.number == trial.number:
                continue
            for step, value in sorted(on_steps(study.steps(record), grid).items()):
                live.report(value, step)
                if rungs:
                    live.should_prune()
            study.tell(told, live, record)
        live = asked[trial.number]
        for step in grid:
            live.report(judged[step], step)
            if live.should_prune():
                return True
    return False
