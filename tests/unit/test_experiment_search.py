"""A whole search over examples/train/quadratic.py's known loss, driven as the
operator drives it (a fresh suggest, should_prune and decide on the records at every
tick, progress seen as snapshots): it gets near the known optimum, early stopping
spends fewer steps for a best as good, and the goal ends it."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from experiment_specs import trial  # pytest puts tests/unit on sys.path

from kubeloop import conditions
from kubeloop.api.experiment import ExperimentSpec, StepValue, Trial
from kubeloop.experiment.prune import should_prune
from kubeloop.experiment.suggest import suggest
from kubeloop.experiment.verdict import best, decide

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "train"))
from quadratic import loss_at  # an example script, put on sys.path above

STEPS = 30  # a run's length
SEEN_EVERY = 4  # steps between two snapshots of a run's progress


def experiment(**fields: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "trainingJob": {"image": "registry.local/train:1"},
        "parameters": [{"name": "lr", "type": "float", "min": 1e-4, "max": 1, "log": True},
                       {"name": "depth", "type": "int", "min": 1, "max": 10},
                       {"name": "optimizer", "type": "categorical",
                        "values": ["adam", "sgd", "rmsprop"]}],
        "objective": {"metric": "loss", "direction": "minimize"},
        "algorithm": {"name": "tpe", "seed": 5, "startupTrials": 8},
        "maxTrials": 40, "parallelTrials": 4, **fields})


def loss(t: Trial, step: int) -> float:
    p = t.parameters
    return loss_at(step, float(p["lr"]), int(p["depth"]), p["optimizer"])


def search(s: ExperimentSpec) -> tuple[list[Trial], int, str]:
    """Ticks of SEEN_EVERY steps: running trials advance, the operator sees their
    progress, prunes, records the finished, asks for new ones. Returns the trials, the
    steps run in all, and the reason the search ended."""
    trials: list[Trial] = []
    ran = {}
    while (verdict := decide(s, trials)) is None:
        for params in suggest(s, trials):
            trials.append(trial(len(trials), parameters=params))
            ran[len(trials) - 1] = 0
        for t in [t for t in trials if t.state == "Running"]:
            ran[t.number] = min(STEPS, ran[t.number] + SEEN_EVERY)
            t.intermediate = [*t.intermediate, StepValue(step=ran[t.number],
                                                         value=loss(t, ran[t.number]))]
            if ran[t.number] == STEPS:
                t.state, t.value = "Succeeded", loss(t, STEPS)
            elif should_prune(s, t, trials):
                t.state, t.pruned, t.value = "Pruned", True, t.intermediate[-1].value
    return trials, sum(ran.values()), verdict.reason


def test_the_search_gets_near_the_known_optimum() -> None:
    trials, steps, reason = search(experiment())
    top = best(experiment(), trials)
    assert reason == conditions.MAX_TRIALS_REACHED and len(trials) == 40
    assert top is not None and top.value is not None
    assert top.value - 2 / math.sqrt(STEPS) < 0.15  # the final loss's floor is 0
    assert steps == 40 * STEPS


def test_early_stopping_spends_fewer_steps_for_as_good_a_best() -> None:
    """Successive halving over twice the trials finds as good a best as forty full runs,
    in fewer steps in all; the median pruner stops half of forty trials early."""
    plain, plain_steps, _ = search(experiment())
    halving = experiment(maxTrials=80, earlyStopping={
        "name": "successiveHalving", "minResource": 4, "reductionFactor": 3})
    pruned, pruned_steps, _ = search(halving)
    assert sum(t.state == "Pruned" for t in pruned) >= 40
    assert pruned_steps < plain_steps
    plain_best, pruned_best = best(experiment(), plain), best(halving, pruned)
    assert plain_best and pruned_best and plain_best.value and pruned_best.value
    assert pruned_best.value <= plain_best.value + 0.005
    median = experiment(earlyStopping={"name": "median", "startupTrials": 4, "warmupSteps": 8})
    stopped, median_steps, _ = search(median)
    assert sum(t.state == "Pruned" for t in stopped) >= 15
    assert median_steps < 0.7 * plain_steps


def test_the_goal_ends_the_search_early() -> None:
    s = experiment(objective={"metric": "loss", "direction": "minimize", "goal": 0.8})
    trials, _, reason = search(s)
    assert reason == conditions.GOAL_REACHED and len(trials) < 40
