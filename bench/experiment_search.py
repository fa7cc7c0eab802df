"""The Experiment's stateless search against Optuna alone, on quadratic.py's known loss.

Kubeloop asks each trial of a fresh study told the records back, its sampler seeded by
(seed, trial number) (docs/experiments.md); the baseline is one long-lived Optuna study
with the same sampler and seed, asked and told in one process; random search is the
floor. Each contender runs `--trials` sequential trials per seed; printed (JSON): the
best final loss of each run (0 is the optimum), their median and mean, and how many
runs got within 0.05 of the optimum. `make bench-experiments`
(bench/experiment_bench.py) reuses it beside an honest objective, pruning's saving and
the operator's overhead per trial.

    python bench/experiment_search.py --seeds 24 --trials 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from kubeloop.api.experiment import ExperimentSpec, Trial
from kubeloop.experiment import space
from kubeloop.experiment.suggest import suggest
from kubeloop.experiment.verdict import best

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "train"))
from quadratic import final_loss  # an example script, put on sys.path above

optuna.logging.set_verbosity(optuna.logging.WARNING)
NEAR = 0.05


def experiment(sampler: str, seed: int, trials: int, startup: int) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "trainingJob": {"image": "registry.local/train:1"},
        "parameters": [{"name": "lr", "type": "float", "min": 1e-4, "max": 1, "log": True},
                       {"name": "depth", "type": "int", "min": 1, "max": 10},
                       {"name": "optimizer", "type": "categorical",
                        "values": ["adam", "sgd", "rmsprop"]}],
        "objective": {"metric": "loss", "direction": "minimize"},
        "algorithm": {"name": sampler, "seed": seed, "startupTrials": startup},
        "maxTrials": trials})


def loss(params: dict[str, str]) -> float:
    return final_loss(float(params["lr"]), int(params["depth"]), params["optimizer"])


def kubeloop_search(s: ExperimentSpec) -> float:
    trials: list[Trial] = []
    while new := suggest(s, trials):
        trials.append(Trial(name=f"t-{len(trials)}", number=len(trials), parameters=new[0],
                            state="Succeeded", value=loss(new[0])))
    top = best(s, trials)
    assert top is not None and top.value is not None
    return top.value


def optuna_alone(s: ExperimentSpec) -> float:
    seed, startup = s.algorithm.seed, s.algorithm.startup_trials
    samplers: dict[str, Any] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    study = optuna.create_study(sampler=samplers[s.algorithm.name]())
    distributions = space.distributions(s)
    for _ in range(s.max_trials):
        asked = study.ask(distributions)
        study.tell(asked, loss(space.to_hyperparameters(asked.params)))
    return float(study.best_value)


def summary(values: list[float], seconds: float) -> dict[str, Any]:
    return {"median": statistics.median(values), "mean": statistics.mean(values),
            f"within {NEAR}": sum(v < NEAR for v in values), "seconds": round(seconds, 2),
            "best per seed": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--startup", type=int, default=8)
    parser.add_argument("--samplers", default="tpe,cmaes")
    args = parser.parse_args()
    out: dict[str, Any] = {"seeds": args.seeds, "trials": args.trials, "startup": args.startup,
                           "optuna": optuna.__version__}
    runs = [("kubeloop", s, kubeloop_search) for s in args.samplers.split(",")]
    runs += [("optuna alone", s, optuna_alone) for s in args.samplers.split(",")]
    runs.append(("random search", "random", optuna_alone))
    for contender, sampler, run in runs:
        start = time.perf_counter()
        values = [run(experiment(sampler, seed, args.trials, args.startup))
                  for seed in range(args.seeds)]
        out[f"{contender} {sampler}"] = summary(values, time.perf_counter() - start)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
