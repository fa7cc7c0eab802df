"""The search space: what is refused (with the messages the API server's CEL rules
give at apply time), Optuna's distributions, the grid, and values as hyperparameters."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from experiment_specs import spec  # pytest puts tests/unit on sys.path
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from kubeloop.api import experiment as api
from kubeloop.api.crdgen import KIND_BY_NAME, crd_for
from kubeloop.api.docgen import render_reference
from kubeloop.api.experiment import ExperimentSpec, Parameter
from kubeloop.experiment import space

BAD_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    ("min-equals-max", {"type": "float", "min": 1, "max": 1}, api.MIN_BELOW_MAX),
    ("min-over-max", {"type": "int", "min": 5, "max": 2}, api.MIN_BELOW_MAX),
    ("no-max", {"type": "float", "min": 0}, api.NEEDS_BOUNDS),
    ("log-from-zero", {"type": "float", "min": 0, "max": 1, "log": True},
     api.LOG_NEEDS_POSITIVE_MIN),
    ("log-and-step", {"type": "float", "min": 0.1, "max": 1, "log": True, "step": 0.1},
     api.LOG_WITHOUT_STEP),
    ("int-fraction", {"type": "int", "min": 0.5, "max": 4}, api.INT_BOUNDS),
    ("int-fraction-step", {"type": "int", "min": 0, "max": 4, "step": 1.5}, api.INT_BOUNDS),
    ("empty-categorical", {"type": "categorical"}, api.CATEGORICAL_NEEDS_VALUES),
    ("values-on-float", {"type": "float", "min": 0, "max": 1, "values": ["a"]},
     api.VALUES_ONLY_CATEGORICAL),
    ("bounds-on-categorical", {"type": "categorical", "values": ["a"], "max": 3},
     api.BOUNDS_NOT_CATEGORICAL),
]


@pytest.mark.parametrize(("name", "parameter", "message"), BAD_PARAMETERS,
                         ids=[b[0] for b in BAD_PARAMETERS])
def test_a_bad_parameter_is_refused_with_its_message(
    name: str, parameter: dict[str, Any], message: str
) -> None:
    bad = spec(parameters=[{"name": "p", **parameter}])
    assert space.problems(bad) == [f"parameter p: {message}"]
    with pytest.raises(space.SearchSpaceError, match=message.split(":")[0][:30]):
        space.check(bad)


@pytest.mark.parametrize(("fields", "message"), [
    ({"algorithm": {"name": "grid"}}, api.GRID_NEEDS_STEPS),
    ({"parallelTrials": 5, "maxTrials": 4}, api.PARALLEL_OVER_MAX),
    ({"trainingJob": {"image": "x", "hyperparameters": {"x": "1"}}}, api.SEARCHED_AND_FIXED),
    ({"compute": "small", "trainingJob": {"image": "x", "compute": "big"}}, api.ONE_COMPUTE),
    ({"earlyStopping": {"name": "hyperband"}}, api.HYPERBAND_NEEDS_MAX),
    ({"trainingJob": {"image": "x", "output": {"uri": "pvc://models/q"}}}, api.OUTPUT_PER_TRIAL),
    ({"earlyStopping": {"name": "successiveHalving", "minResource": 9, "maxResource": 9}},
     api.MIN_RESOURCE_BELOW_MAX),
])
def test_a_bad_search_is_refused_with_its_message(fields: dict[str, Any], message: str) -> None:
    assert space.problems(spec(**fields)) == [message]


def test_a_good_search_space_has_no_problems() -> None:
    for algorithm in ("random", "grid", "tpe", "cmaes"):
        assert space.problems(spec(algorithm)) == []


def test_a_huge_grid_is_refused() -> None:
    huge = spec("grid", parameters=[{"name": f"p{i}", "type": "int", "min": 0, "max": 99}
                                    for i in range(3)])
    assert space.problems(huge) == [f"the grid has 1000000 points, more than "
                                    f"{space.MAX_GRID_POINTS}"]


def _rules() -> list[dict[str, str]]:
    crd = crd_for(KIND_BY_NAME["Experiment"])
    text = yaml.safe_dump(crd)
    return [r for r in yaml.safe_load(text.replace("x-kubernetes-validations", "rules"))
            ["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["parameters"]["items"]["rules"]]


def test_the_api_servers_rules_carry_the_same_messages() -> None:
    """Each message the search checks is also a CEL rule of the CRD (what the API
    server says at apply time; tests/integration/test_crd_validation.py applies them),
    each rule its own entry, and the reference lists them."""
    text = yaml.safe_dump(crd_for(KIND_BY_NAME["Experiment"]), width=10_000)
    reference = render_reference(KIND_BY_NAME["Experiment"])
    messages = [api.NEEDS_BOUNDS, api.MIN_BELOW_MAX, api.LOG_NEEDS_POSITIVE_MIN,
                api.LOG_WITHOUT_STEP, api.INT_BOUNDS, api.CATEGORICAL_NEEDS_VALUES,
                api.VALUES_ONLY_CATEGORICAL, api.BOUNDS_NOT_CATEGORICAL, api.GRID_NEEDS_STEPS,
                api.PARALLEL_OVER_MAX, api.SEARCHED_AND_FIXED, api.ONE_COMPUTE,
                api.OUTPUT_PER_TRIAL,
                api.HYPERBAND_NEEDS_MAX, api.MIN_RESOURCE_BELOW_MAX]
    assert len(set(messages)) == len(messages)
    for message in messages:
        assert text.count(message) == 1, message
        assert message in reference.replace("\\|", "|"), message
    assert len(_rules()) == 8


def test_distributions() -> None:
    assert space.distribution(Parameter(name="lr", type="float", min=1e-4, max=0.1, log=True)) == (
        FloatDistribution(1e-4, 0.1, log=True))
    assert space.distribution(Parameter(name="depth", type="int", min=2, max=10, step=2)) == (
        IntDistribution(2, 10, step=2))
    assert space.distribution(Parameter(name="opt", type="categorical", values=["a", "b"])) == (
        CategoricalDistribution(["a", "b"]))


def test_the_grid_has_every_stepped_value() -> None:
    stepped = ExperimentSpec.model_validate({
        "trainingJob": {"image": "x"}, "algorithm": {"name": "grid"},
        "objective": {"metric": "m", "direction": "maximize"},
        "parameters": [{"name": "x", "type": "float", "min": 0.1, "max": 0.5, "step": 0.1},
                       {"name": "k", "type": "int", "min": 1, "max": 9, "step": 4},
                       {"name": "c", "type": "categorical", "values": ["u", "v"]}]})
    assert space.grid(stepped) == {"x": [0.1, 0.2, 0.3, 0.4, 0.5], "k": [1, 5, 9],
                                   "c": ["u", "v"]}
    assert space.grid_size(stepped) == 30
    assert space.trial_limit(stepped) == 10  # maxTrials' default
    assert space.trial_limit(stepped.model_copy(update={"max_trials": 100})) == 30


def test_values_round_trip_through_hyperparameters() -> None:
    s = spec()
    params = {"x": 0.1 + 0.2, "n": 3, "c": "b"}
    text = space.to_hyperparameters(params)
    assert text == {"c": "b", "n": "3", "x": "0.30000000000000004"}
    assert space.from_hyperparameters(s, text) == params
    # A parameter the spec no longer searches is not told back.
    assert space.from_hyperparameters(s, {**text, "gone": "1"}) == params
