"""Whether the search has ended, and why; and its best trial."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kubeloop import conditions
from kubeloop.api.experiment import FINISHED_TRIAL_STATES, ExperimentSpec, Trial
from kubeloop.experiment import space


@dataclass(frozen=True)
class Verdict:
    reason: str
    message: str
    succeeded: bool


def _has_value(t: Trial) -> bool:
    return t.state == "Succeeded" and t.value is not None and math.isfinite(t.value)


def best(spec: ExperimentSpec, trials: Sequence[Trial]) -> Trial | None:
    """The finished trial with the best value; the earliest of equals. Pruned trials
    never win: their value is from before their end."""
    done = [t for t in trials if _has_value(t)]
    if not done:
        return None
    sign = 1.0 if spec.objective.direction == "minimize" else -1.0
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.number))


def reached(spec: ExperimentSpec, value: float) -> bool:
    goal = spec.objective.goal
    if goal is None:
        return False
    return value <= goal if spec.objective.direction == "minimize" else value >= goal


def decide(spec: ExperimentSpec, trials: Sequence[Trial]) -> Verdict | None:
    """Ended: too many failures, the goal reached, or every trial (maxTrials, or a
    smaller grid) run. None while the search goes on. Failures are
    judged first: a search that broke its budget of failures failed, whatever else."""
    failed = sum(1 for t in trials if t.state == "Failed")
    if failed > spec.max_failed_trials:
        return Verdict(
            conditions.TOO_MANY_FAILURES,
            f"{failed} trials failed, more than maxFailedTrials ({spec.max_failed_trials})",
            succeeded=False,
        )
    top = best(spec, trials)
    if top is not None and top.value is not None and reached(spec, top.value):
        return Verdict(
            conditions.GOAL_REACHED,
            f"trial {top.name} reached {spec.objective.metric}={top.value:g} "
            f"(goal {spec.objective.goal:g})",
            succeeded=True,
        )
    total = space.trial_limit(spec)
    finished = sum(1 for t in trials if t.state in FINISHED_TRIAL_STATES)
    if len(trials) >= total and finished == len(trials):
        found = f"; best {top.name}: {spec.objective.metric}={top.value:g}" if top else ""
        return Verdict(
            conditions.MAX_TRIALS_REACHED,
            f"all {len(trials)} trials finished{found}",
            succeeded=top is not None,
        )
    return None
