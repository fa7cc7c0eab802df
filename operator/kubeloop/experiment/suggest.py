"""The next trials' parameters: Optuna's samplers through ask-and-tell, told back.

Each new trial is asked of its own fresh study, which holds the recorded trials (each
enqueued with its recorded values, asked, and told how it ended; running ones stay
asked but not told) and a sampler seeded from the spec's seed and the new trial's
number. So `suggest` is a function of its inputs: asking for two trials gives what
asking for one, recording it as running and asking again gives, which is what a restart
between the two does. A running trial's values are never asked again by a sampler
that avoids running trials (grid), and a seeded stream per number never replays the
previous trial's draw (random, tpe, cmaes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from kubeloop.api.experiment import ExperimentSpec, Trial
from kubeloop.experiment import space, study
from kubeloop.experiment.verdict import decide


def trial_seed(base: int, number: int) -> int:
    """The sampler seed of trial `number`: independent streams per trial."""
    return int(np.random.SeedSequence([base, number]).generate_state(1)[0])


def base_seed(spec: ExperimentSpec, fallback: int = 0) -> int:
    """The spec's seed; without one, the caller's (the operator passes one derived from
    the Experiment's UID, so that two Experiments do not search in lockstep)."""
    return spec.algorithm.seed if spec.algorithm.seed is not None else fallback


def sampler(spec: ExperimentSpec, seed: int, number: int) -> optuna.samplers.BaseSampler:
    name = spec.algorithm.name
    if name == "grid":
        # One seed for the whole search: the grid's order is shuffled by it, and trial
        # number k takes the k-th point.
        return optuna.samplers.GridSampler(space.grid(spec), seed=seed)
    own = trial_seed(seed, number)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=own, n_startup_trials=spec.algorithm.startup_trials)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=own,
            n_startup_trials=spec.algorithm.startup_trials,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=own),
        )
    return optuna.samplers.RandomSampler(seed=own)


def capacity(spec: ExperimentSpec, trials: Sequence[Trial]) -> int:
    """How many trials may start now: within maxTrials (and the grid), parallelTrials,
    and none once the search has ended."""
    if decide(spec, trials) is not None:
        return 0
    limit = space.trial_limit(spec)
    active = sum(1 for t in trials if study.final_state(t)[0] == optuna.trial.TrialState.RUNNING)
    return max(0, min(limit - len(trials), spec.parallel_trials - active))


def _ask(spec: ExperimentSpec, records: list[Trial], seed: int) -> dict[str, Any]:
    number = len(records)
    distributions = space.distributions(spec)
    with study.quiet():
        told = study.create(spec, sampler(spec, seed, number))
        for record in records:
            told.enqueue_trial(space.from_hyperparameters(spec, record.parameters),
                               skip_if_exists=False)
            asked = told.ask(distributions)
            if spec.algorithm.name == "cmaes":
                # CMA-ES keeps its state in the trials it sampled (their generation and
                # its optimizer); a recorded trial's values are fixed, so it would be
                # skipped. Sampling (and dropping) its relative values files the trial
                # in the current generation and carries the state forward, as when it
                # was asked. TPE and the others keep nothing in trials: not needed.
                asked.relative_params  # noqa: B018
            for step, value in sorted(study.steps(record).items()):
                asked.report(value, step)
            study.tell(told, asked, record)
        new = told.ask(distributions)
    assert new.number == number
    return new.params


def suggest(spec: ExperimentSpec, trials: Sequence[Trial], seed: int = 0) -> list[dict[str, str]]:
    """The hyperparameters of the trials to start now, in order (the first is trial
    number len(trials)). `seed` is used when the spec sets none."""
    space.check(spec)
    records = study.in_order(trials)
    base = base_seed(spec, seed)
    new: list[dict[str, str]] = []
    for _ in range(capacity(spec, records)):
        params = space.to_hyperparameters(_ask(spec, records, base))
        new.append(params)
        records = [*records, Trial(name=f"asked-{len(records)}", number=len(records),
                                   parameters=params, state="Pending")]
    return new
