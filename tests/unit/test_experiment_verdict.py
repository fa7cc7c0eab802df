"""When a search ends and why (GoalReached, MaxTrialsReached, TooManyFailures), and
which trial is best."""

from __future__ import annotations

from experiment_specs import spec, trial  # pytest puts tests/unit on sys.path

from kubeloop import conditions
from kubeloop.experiment.verdict import best, decide

P = {"x": "1", "n": "3", "c": "b"}


def test_goal_reached_ends_the_search_in_either_direction() -> None:
    low = spec(objective={"metric": "loss", "direction": "minimize", "goal": 0.1})
    verdict = decide(low, [trial(0, "Succeeded", 0.5, P), trial(1, "Succeeded", 0.1, P),
                           trial(2)])
    assert verdict is not None and verdict.reason == conditions.GOAL_REACHED
    assert verdict.succeeded and "exp-1" in verdict.message
    assert decide(low, [trial(0, "Succeeded", 0.11, P)]) is None
    high = spec(objective={"metric": "accuracy", "direction": "maximize", "goal": 0.9})
    assert decide(high, [trial(0, "Succeeded", 0.95, P)]) is not None
    assert decide(high, [trial(0, "Succeeded", 0.85, P)]) is None
    # A pruned trial's value is from before its end: it reaches no goal.
    assert decide(low, [trial(0, "Pruned", 0.01, P)]) is None


def test_max_trials_reached_once_every_trial_has_finished() -> None:
    s = spec(maxTrials=3)
    ended = [trial(0, "Succeeded", 2.0, P), trial(1, "Pruned", 3.0, P), trial(2, "Failed")]
    verdict = decide(s, ended)
    assert verdict is not None and verdict.reason == conditions.MAX_TRIALS_REACHED
    assert verdict.succeeded and "best exp-0" in verdict.message
    assert decide(s, [*ended[:2], trial(2)]) is None  # one still running
    assert decide(s, ended[:2]) is None  # one still to create


def test_max_trials_is_the_grid_when_the_grid_is_smaller() -> None:
    s = spec("grid", maxTrials=1000, parameters=[
        {"name": "c", "type": "categorical", "values": ["a", "b"]}])
    two = [trial(0, "Succeeded", 1.0, {"c": "a"}), trial(1, "Succeeded", 0.5, {"c": "b"})]
    verdict = decide(s, two)
    assert verdict is not None and verdict.reason == conditions.MAX_TRIALS_REACHED


def test_too_many_failures_ends_it_first() -> None:
    s = spec(maxFailedTrials=1, objective={"metric": "loss", "direction": "minimize",
                                           "goal": 1.0})
    assert decide(s, [trial(0, "Failed"), trial(1)]) is None  # one is allowed
    verdict = decide(s, [trial(0, "Failed"), trial(1, "Failed"), trial(2, "Succeeded", 0.5, P)])
    assert verdict is not None and verdict.reason == conditions.TOO_MANY_FAILURES
    assert not verdict.succeeded and "2 trials failed" in verdict.message


def test_all_failed_at_max_trials_is_no_success() -> None:
    s = spec(maxTrials=2, maxFailedTrials=5)
    verdict = decide(s, [trial(0, "Failed"), trial(1, "Failed")])
    assert verdict is not None and verdict.reason == conditions.MAX_TRIALS_REACHED
    assert not verdict.succeeded


def test_the_best_trial_by_direction_earliest_of_equals_never_a_pruned_one() -> None:
    trials = [trial(0, "Succeeded", 2.0, P), trial(1, "Succeeded", 1.0, P),
              trial(2, "Succeeded", 1.0, P), trial(3, "Pruned", 0.1, P),
              trial(4, "Succeeded", 3.0, P), trial(5, "Failed")]
    low = best(spec(), trials)
    assert low is not None and low.name == "exp-1"
    high = best(spec(objective={"metric": "acc", "direction": "maximize"}), trials)
    assert high is not None and high.name == "exp-4"
    assert best(spec(), [trial(0, "Failed"), trial(1)]) is None
