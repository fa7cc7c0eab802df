"""The next trials, asked of a fresh study told the recorded trials back: the same
inputs give the same trials, a restart between two asks changes nothing and repeats
nothing, the limits hold, grid covers the grid, TPE learns after its random start."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from experiment_specs import loss, spec, trial  # pytest puts tests/unit on sys.path

from kubeloop.api.experiment import ExperimentSpec, Trial
from kubeloop.experiment import space
from kubeloop.experiment.study import TrialRecordsError
from kubeloop.experiment.suggest import capacity, suggest


def run(s: ExperimentSpec, value: Callable[[dict[str, str]], float] = loss,
        restart_every_ask: bool = False) -> list[Trial]:
    """The search as the operator drives it: start what suggest gives, finish the oldest
    running trial, ask again. With `restart_every_ask`, one trial is asked per call, as
    after a restart between two creations."""
    trials: list[Trial] = []
    while True:
        new = suggest(s, trials)
        if restart_every_ask and new:
            new = new[:1]
        trials += [trial(len(trials) + i, parameters=p) for i, p in enumerate(new)]
        running = [t for t in trials if t.state == "Running"]
        if not running:
            return trials
        if not restart_every_ask or len(running) == s.parallel_trials or not new:
            running[0].state, running[0].value = "Succeeded", value(running[0].parameters)


def keys(trials: list[Trial]) -> list[tuple[tuple[str, str], ...]]:
    return [tuple(sorted(t.parameters.items())) for t in trials]


@pytest.mark.parametrize("sampler", ["random", "grid", "tpe", "cmaes"])
def test_the_same_records_give_the_same_trials(sampler: str) -> None:
    s = spec(sampler, parallelTrials=3)
    done = run(spec(sampler, maxTrials=12))
    assert suggest(s, done[:12]) == suggest(s, done[:12])
    assert len(suggest(s, done[:12])) == 3


@pytest.mark.parametrize("sampler", ["random", "grid", "tpe", "cmaes"])
def test_a_restart_between_two_asks_gives_the_same_trials_and_repeats_none(sampler: str) -> None:
    """Asking for three at once, or for one at a time with the first recorded as running
    (a restart after each creation), gives the same three, all different."""
    s = spec(sampler, parallelTrials=3, maxTrials=20)
    history = run(spec(sampler, maxTrials=11))
    together = suggest(s, history)
    one_by_one: list[dict[str, str]] = []
    records = list(history)
    for _ in range(3):
        (params,) = suggest(s, records)[:1]
        one_by_one.append(params)
        records.append(trial(len(records), "Pending", parameters=params))
    assert together == one_by_one
    assert len({tuple(sorted(p.items())) for p in together}) == 3
    assert not {tuple(sorted(p.items())) for p in together} & set(keys(history))


@pytest.mark.parametrize("sampler", ["random", "tpe", "cmaes"])
def test_a_whole_search_repeats_no_trial_and_restarts_change_nothing(sampler: str) -> None:
    s = spec(sampler, parallelTrials=2, maxTrials=25)
    trials = run(s)
    assert len(trials) == 25 and len(set(keys(trials))) == 25
    assert keys(run(s)) == keys(trials)  # deterministic for the same seed


def test_the_seed_changes_the_search() -> None:
    assert suggest(spec("random"), []) != suggest(spec("random", algorithm={"name": "random",
                                                                             "seed": 8}), [])
    unseeded = spec("random", algorithm={"name": "random"})
    assert suggest(unseeded, [], seed=1) != suggest(unseeded, [], seed=2)


def test_grid_covers_the_grid_once() -> None:
    s = spec("grid", maxTrials=1000, parallelTrials=4)
    trials = run(s)
    assert len(trials) == space.grid_size(s) == 21 * 4 * 2
    grid = space.grid(s)
    expected = {(("c", c), ("n", str(n)), ("x", repr(x)))
                for c in grid["c"] for n in grid["n"] for x in grid["x"]}
    assert set(keys(trials)) == expected
    # The optimum is on the grid.
    assert min(t.value or 9.0 for t in trials) == pytest.approx(0.04)


def test_grid_stops_at_max_trials_with_distinct_points() -> None:
    trials = run(spec("grid", maxTrials=30, parallelTrials=3))
    assert len(trials) == 30 and len(set(keys(trials))) == 30


def test_tpe_learns_after_its_random_startup_trials() -> None:
    """The first startupTrials are random draws; after them TPE samples near the best
    results: its later trials are better than its random ones, and its best beats a
    random search's over as many trials, for every seed tried."""
    for seed in (1, 2, 3, 4):
        tpe = run(spec("tpe", maxTrials=40, algorithm={"name": "tpe", "seed": seed,
                                                       "startupTrials": 10}))
        rnd = run(spec("random", maxTrials=40, algorithm={"name": "random", "seed": seed}))
        startup = sorted(t.value or 0.0 for t in tpe[:10])
        later = sorted(t.value or 0.0 for t in tpe[20:])
        assert later[len(later) // 2] < startup[len(startup) // 2] / 1.5, seed
        assert min(t.value or 9.0 for t in tpe) < min(t.value or 9.0 for t in rnd), seed


def test_cmaes_is_told_the_results_back() -> None:
    """CMA-ES keeps its state in the trials it asked; told back from the records, it
    still converges: the last trials are better than the first."""
    s = ExperimentSpec.model_validate({
        "trainingJob": {"image": "x"}, "maxTrials": 60,
        "objective": {"metric": "loss", "direction": "minimize"},
        "algorithm": {"name": "cmaes", "seed": 3, "startupTrials": 0},
        "parameters": [{"name": "x", "type": "float", "min": -5, "max": 5},
                       {"name": "y", "type": "float", "min": -5, "max": 5}]})
    trials = run(s, lambda p: (float(p["x"]) - 1) ** 2 + (float(p["y"]) + 2) ** 2)
    first = sorted(t.value or 0.0 for t in trials[:15])
    last = sorted(t.value or 0.0 for t in trials[-15:])
    assert last[7] < first[7] / 10


def test_limits_parallel_trials_and_max_trials() -> None:
    s = spec("random", parallelTrials=3, maxTrials=5)
    assert len(suggest(s, [])) == 3
    three = [trial(i, parameters=p) for i, p in enumerate(suggest(s, []))]
    assert suggest(s, three) == []  # three running: no room
    three[0].state, three[0].value = "Succeeded", 1.0
    three[1].state = "Failed"
    assert len(suggest(s, three)) == 2  # two free slots, five in all
    four = [*three, trial(3)]
    assert capacity(s, four) == 1
    assert capacity(s, [*four, trial(4)]) == 0  # maxTrials created


def test_an_ended_search_asks_for_nothing() -> None:
    s = spec("random", parallelTrials=2, objective={"metric": "loss", "direction": "minimize",
                                                    "goal": 0.5})
    assert suggest(s, [trial(0, "Succeeded", 0.4, {"x": "1", "n": "3", "c": "b"})]) == []
    failing = spec("random", parallelTrials=2, maxFailedTrials=1)
    assert suggest(failing, [trial(0, "Failed"), trial(1, "Failed")]) == []


def test_records_must_be_numbered_without_gaps() -> None:
    with pytest.raises(TrialRecordsError):
        suggest(spec(), [trial(0, "Succeeded", 1.0, {"x": "1", "n": "3", "c": "b"}), trial(2)])
