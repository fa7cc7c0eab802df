"""Early stopping on given intermediate values: Optuna's median, Successive Halving and
Hyperband pruners on a told-back study, with the trials compared on common steps."""

from __future__ import annotations

from typing import Any

import pytest
from experiment_specs import spec, trial  # pytest puts tests/unit on sys.path

from kubeloop.api.experiment import Trial
from kubeloop.experiment.prune import on_steps, should_prune

MEDIAN = {"name": "median", "startupTrials": 3}
HALVING = {"name": "successiveHalving", "minResource": 1, "reductionFactor": 2}
HYPERBAND = {"name": "hyperband", "minResource": 1, "maxResource": 10, "reductionFactor": 3}


def curve(final: float, last: int = 10, every: int = 1, first: int = 1) -> dict[int, float]:
    """A loss that falls towards `final`, reported at every `every`-th step."""
    return {s: final + 10.0 / s for s in range(first, last + 1, every)}


def finished(finals: list[float], **kw: Any) -> list[Trial]:
    return [trial(i, "Succeeded", f, intermediate=curve(f, **kw)) for i, f in enumerate(finals)]


@pytest.mark.parametrize("stopping", [MEDIAN, HALVING, HYPERBAND],
                         ids=["median", "successiveHalving", "hyperband"])
def test_a_trial_far_behind_is_stopped_and_one_ahead_is_not(stopping: dict[str, Any]) -> None:
    s = spec(earlyStopping=stopping)
    done = finished([1.0, 1.5, 2.0, 2.5, 3.0, 1.2])
    behind = trial(6, intermediate=curve(6.0, last=4))
    ahead = trial(6, intermediate=curve(0.5, last=4))
    assert should_prune(s, behind, [*done, behind])
    assert not should_prune(s, ahead, [*done, ahead])


def test_without_early_stopping_nothing_is_stopped() -> None:
    done = finished([1.0, 1.5, 2.0])
    behind = trial(3, intermediate=curve(60.0, last=4))
    assert not should_prune(spec(), behind, [*done, behind])


def test_median_waits_for_its_startup_trials_and_warmup() -> None:
    behind = trial(2, intermediate=curve(6.0, last=4))
    two = [*finished([1.0, 1.5]), behind]
    assert not should_prune(spec(earlyStopping=MEDIAN), behind, two)
    assert should_prune(spec(earlyStopping={**MEDIAN, "startupTrials": 2}), behind, two)
    warm = spec(earlyStopping={**MEDIAN, "startupTrials": 2, "warmupSteps": 5})
    assert not should_prune(warm, behind, two)  # steps 1 to 4: not judged yet
    later = trial(2, intermediate=curve(6.0, last=5))
    assert should_prune(warm, later, [*finished([1.0, 1.5]), later])


def test_median_compares_the_values_before_the_step_when_reports_do_not_line_up() -> None:
    """The operator reads a run's progress every few seconds: the finished trials were
    seen at steps 1, 4, 7, 10 and the running one at 2, 5, 8. Compared at 8 with the
    finished trials' values at 7, it is behind."""
    s = spec(earlyStopping=MEDIAN)
    done = finished([1.0, 1.5, 2.0], every=3)
    behind = trial(3, intermediate=curve(4.0, last=8, every=3, first=2))
    assert should_prune(s, behind, [*done, behind])
    level = trial(3, intermediate=curve(1.4, last=8, every=3, first=2))
    assert not should_prune(s, level, [*done, level])


def test_successive_halving_keeps_the_better_half_at_each_rung() -> None:
    """Rungs at steps 1, 2, 4, 8 (minResource 1, reductionFactor 2): of a trial and the
    finished ones, the better half passes each rung."""
    s = spec(earlyStopping=HALVING)
    done = finished([1.0, 2.0, 3.0, 4.0])
    middle = trial(4, intermediate=curve(2.5, last=8))
    assert should_prune(s, middle, [*done, middle])  # third of five at the first rung
    # Fast at first (ahead at steps 1 and 2), then stuck at 5.0 (behind at step 4).
    stuck = {1: 10.0, 2: 5.5, 3: 5.0, 4: 5.0, 5: 5.0}
    for last, stopped in ((3, False), (5, True)):
        plateau = trial(4, intermediate={k: v for k, v in stuck.items() if k <= last})
        assert should_prune(s, plateau, [*done, plateau]) is stopped, last
    best = trial(4, intermediate=curve(0.9, last=8))
    assert not should_prune(s, best, [*done, best])


def test_a_running_or_pruned_trial_counts_at_the_rungs_it_reached() -> None:
    s = spec(earlyStopping=HALVING)
    others = [trial(0, "Pruned", intermediate=curve(0.1, last=2)),
              trial(1, "Running", intermediate=curve(0.2, last=2))]
    slow = trial(2, intermediate=curve(3.0, last=2))
    assert should_prune(s, slow, [*others, slow])
    assert not should_prune(s, slow, [trial(0, "Failed"), trial(1, "Failed"), slow.model_copy(
        update={"number": 2})])


def test_the_decision_is_the_same_for_the_same_records() -> None:
    s = spec(earlyStopping=HYPERBAND)
    done = finished([1.0, 1.5, 2.0, 2.5, 3.0, 1.2, 2.2, 1.1])
    runs = [trial(8 + i, intermediate=curve(f, last=5)) for i, f in enumerate([1.3, 2.7, 4.0])]
    every = [*done, *runs]
    first = [should_prune(s, r, every) for r in runs]
    assert first == [should_prune(s, r, list(reversed(every))) for r in runs]
    assert first[2] is True


def test_a_trial_without_reports_is_not_stopped() -> None:
    s = spec(earlyStopping=MEDIAN)
    quiet = trial(3)
    assert not should_prune(s, quiet, [*finished([1.0, 1.5, 2.0]), quiet])


def test_on_steps_carries_the_last_report_forward() -> None:
    assert on_steps({1: 5.0, 4: 3.0, 7: 2.0}, [2, 4, 5, 7, 9]) == {2: 5.0, 4: 3.0, 5: 3.0,
                                                                    7: 2.0}
    assert on_steps({3: 1.0}, [1, 2]) == {}
    assert on_steps({}, [1]) == {}
