"""`fromExperiment` as a model source (controllers/modeldeployment_resolve.py): the
best trial's model, followed as it changes, or one pinned trial's; a condition that
says why while there is none. Shared by ModelDeployment (model, canary) and
BatchPrediction."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubeloop import conditions as c
from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.api.common import ExperimentRef
from kubeloop.api.driftmonitor import RetrainRecord
from kubeloop.api.modeldeployment import ModelDeploymentStatus, ModelSource
from kubeloop.controllers import modeldeployment_plan as mp
from kubeloop.controllers import modeldeployment_tracks as mt
from kubeloop.controllers.batchprediction_plan import choose_model
from kubeloop.controllers.modeldeployment_resolve import (
    referenced_experiments,
    referenced_jobs,
    resolve,
)
from kubeloop.controllers.retrain_render import promotion_patch

V1, V2 = "pvc://models/search-trial-1", "pvc://models/search-trial-3"


def experiment(phase: str = "Running", best: dict[str, Any] | None = None, **status: Any):
    return {
        "metadata": {"name": "search", "namespace": "ns"},
        "status": {"phase": phase, "trialsDone": "1/6", **({"bestTrial": best} if best else {}),
                   **status},
    }


def trial_job(name: str, phase: str, uri: str | None = None, exp: str = "search"):
    return {
        "metadata": {"name": name, "labels": {"kubeloop.io/experiment": exp}},
        "status": {"phase": phase, **({"modelUri": uri} if uri else {})},
    }


def source(**ref: Any) -> ModelSource:
    return ModelSource.model_validate({"fromExperiment": {"name": "search", **ref}})


def test_the_best_trial_is_served_and_followed_as_it_changes() -> None:
    first = experiment(best={"name": "search-trial-1", "value": 0.3, "modelUri": V1})
    got = resolve(source(), "ns", {}, {"search": first})
    assert (got.uri, got.reason, got.training_job, got.experiment) == (
        V1, c.RESOLVED, "search-trial-1", "search")
    better = experiment(best={"name": "search-trial-3", "value": 0.1, "modelUri": V2})
    assert resolve(source(), "ns", {}, {"search": better}).uri == V2


def test_no_best_trial_yet_waits_with_a_condition_that_says_so() -> None:
    got = resolve(source(), "ns", {}, {"search": experiment()})
    assert got.uri is None and got.reason == c.NO_BEST_TRIAL
    assert "search" in got.message and "1/6" in got.message
    cond = got.cond()
    assert cond.type == c.MODEL_RESOLVED and not cond.status
    missing = resolve(source(), "ns", {}, {})
    assert missing.uri is None and missing.reason == c.EXPERIMENT_NOT_FOUND


def test_an_ended_search_without_a_best_trial_fails_the_deployment() -> None:
    ended = experiment("Failed", message="4 trials failed, more than maxFailedTrials (3)")
    got = resolve(source(), "ns", {}, {"search": ended})
    assert got.reason == c.EXPERIMENT_FAILED and "maxFailedTrials" in got.message
    spec = mp.ModelDeploymentSpec.model_validate({"model": {"fromExperiment": {"name": "search"}}})
    b = {"kind": "ModelDeployment", "spec": {}, "status": {},
         "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1}}
    obs = mt.Observed(None, None, None, None, [], {}, experiments={"search": ended})
    out = mp.plan(spec, b, obs, "img", mp.dt.datetime.now(mp.dt.UTC))
    assert out.status.phase == "Failed"
    assert any(x.type == c.STALLED and x.reason == c.EXPERIMENT_FAILED for x in out.conds)


def test_a_pinned_trial_is_served_once_it_succeeded_and_only_if_it_is_the_experiments() -> None:
    best = {"name": "search-trial-3", "value": 0.1, "modelUri": V2}
    exp = {"search": experiment(best=best)}
    pinned = source(trial="search-trial-1")
    running = resolve(pinned, "ns", {"search-trial-1": trial_job("search-trial-1", "Running")}, exp)
    assert running.uri is None and running.reason == c.TRAINING_JOB_NOT_SUCCEEDED
    done = {"search-trial-1": trial_job("search-trial-1", "Succeeded", V1)}
    got = resolve(pinned, "ns", done, exp)
    assert got.uri == V1 and got.experiment == "search" and got.training_job == "search-trial-1"
    someone_elses = {"search-trial-1": trial_job("search-trial-1", "Succeeded", V1, exp="other")}
    assert resolve(pinned, "ns", someone_elses, exp).reason == c.TRIAL_NOT_FOUND
    assert resolve(pinned, "ns", {}, exp).reason == c.TRIAL_NOT_FOUND


def test_lineage_names_the_experiment_and_its_trial() -> None:
    spec = mp.ModelDeploymentSpec.model_validate({"model": {"fromExperiment": {"name": "search"}}})
    b = {"kind": "ModelDeployment", "spec": {}, "status": {},
         "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1}}
    exp = experiment(best={"name": "search-trial-3", "value": 0.1, "modelUri": V2})
    obs = mt.Observed(None, None, None, None, [], {}, experiments={"search": exp})
    out = mp.plan(spec, b, obs, "img", mp.dt.datetime.now(mp.dt.UTC))
    status: ModelDeploymentStatus = out.status
    assert status.active_model_uri == V2
    assert (status.source_experiment, status.source_training_job) == ("search", "search-trial-3")


def test_references_read_from_the_raw_body() -> None:
    body = {"spec": {"model": {"fromExperiment": {"name": "search", "trial": "search-trial-2"}},
                     "canary": {"model": {"fromExperiment": {"name": "other"}}}}}
    assert referenced_experiments(body) == {"search", "other"}
    assert referenced_jobs(body) == {"search-trial-2"}


def test_exactly_one_source_and_the_promotion_clears_from_experiment() -> None:
    with pytest.raises(ValidationError):
        ExperimentRef.model_validate({"name": ""})
    record = RetrainRecord.model_validate({"trainingJob": "dm-retrain-1", "time": "t"})
    patch = promotion_patch({"spec": {}}, V1, "dm", record)
    assert patch["spec"]["model"] == {"uri": V1, "fromTrainingJob": None, "fromExperiment": None}


def test_a_batch_prediction_takes_the_best_trial_when_it_starts() -> None:
    spec = BatchPredictionSpec.model_validate({
        "model": {"fromExperiment": {"name": "search"}},
        "input": {"uri": "pvc://data/in"},
        "output": {"uri": "pvc://data/out"},
    })
    waiting = choose_model(spec, "ns", None, None, experiment())
    assert waiting.uri is None and waiting.reason == c.NO_BEST_TRIAL and not waiting.final
    best = {"name": "search-trial-3", "value": 0.1, "modelUri": V2}
    got = choose_model(spec, "ns", None, None, experiment(best=best))
    assert got.uri == V2 and got.source == "Experiment/search trial search-trial-3"
    failed = choose_model(spec, "ns", None, None, experiment("Failed"))
    assert failed.final and failed.reason == c.EXPERIMENT_FAILED
