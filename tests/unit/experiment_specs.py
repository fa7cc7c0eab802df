"""Experiment specs for the search's unit tests."""

from __future__ import annotations

from typing import Any

from kubeloop.api.experiment import ExperimentSpec, Trial

QUADRATIC_OPTIMUM = {"x": 1.3, "n": 3, "c": "b"}


def spec(sampler: str = "tpe", **fields: Any) -> ExperimentSpec:
    """x float in [-5, 5] (stepped for grid), n int in [1, 4], c categorical a|b."""
    x: dict[str, Any] = {"name": "x", "type": "float", "min": -5, "max": 5}
    if sampler == "grid":
        x["step"] = 0.5
    body: dict[str, Any] = {
        "trainingJob": {"image": "registry.local/train:1"},
        "parameters": [x, {"name": "n", "type": "int", "min": 1, "max": 4},
                       {"name": "c", "type": "categorical", "values": ["a", "b"]}],
        "objective": {"metric": "loss", "direction": "minimize"},
        "algorithm": {"name": sampler, "seed": 7},
        "maxTrials": 30,
        "parallelTrials": 1,
    }
    body.update(fields)
    return ExperimentSpec.model_validate(body)


def loss(params: dict[str, str]) -> float:
    """The known function of the hyperparameters (minimum 0 at QUADRATIC_OPTIMUM)."""
    return ((float(params["x"]) - 1.3) ** 2 + (int(params["n"]) - 3) ** 2
            + (0.0 if params["c"] == "b" else 1.0))


def trial(number: int, state: str = "Running", value: float | None = None,
          parameters: dict[str, str] | None = None,
          intermediate: dict[int, float] | None = None) -> Trial:
    return Trial.model_validate({
        "name": f"exp-{number}", "number": number, "state": state, "value": value,
        "pruned": state == "Pruned", "parameters": parameters or {},
        "intermediate": [{"step": s, "value": v} for s, v in sorted((intermediate or {}).items())],
    })
