"""Experiments on the local control plane, operator in-process: the trials are
TrainingJobs whose pods kwok holds (HOLD) until the test ends each one, with a
termination message carrying the run's final report (its `loss`) or a failure."""

from __future__ import annotations

import json
from typing import Any

from tests.kubetest import HOLD, Cluster, InProcessOperator, stays, wait_for

EXP, TJ, MD = "Experiment", "TrainingJob", "ModelDeployment"


def exp_spec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "trainingJob": {
            "image": "registry.local/train:1",
            "command": ["python", "quadratic.py"],
            "maxRestarts": 0,
            "output": {"uri": "s3://models/{trainingJob}"},
            "podMetadata": {"annotations": HOLD},
        },
        "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 1, "log": True},
                       {"name": "depth", "type": "int", "min": 1, "max": 10}],
        "objective": {"metric": "loss", "direction": "minimize"},
        "algorithm": {"name": "random", "seed": 3},
        "maxTrials": 4,
        "parallelTrials": 2,
    }
    base.update(extra)
    return base


def trials(cluster: Cluster, ns: str, exp: str) -> dict[str, dict[str, Any]]:
    """The Experiment's TrainingJobs, by name."""
    items = cluster.custom.list_namespaced_custom_object(
        "kubeloop.io", "v1alpha1", ns, "trainingjobs",
        label_selector=f"kubeloop.io/experiment={exp}")["items"]
    return {tj["metadata"]["name"]: tj for tj in items}


def unfinished(cluster: Cluster, ns: str, exp: str) -> list[str]:
    return sorted(
        name for name, tj in trials(cluster, ns, exp).items()
        if (tj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    )


def end(cluster: Cluster, ns: str, trial: str, loss: float | None = None) -> None:
    """End the held pod of `trial`: it succeeds reporting `loss`, or fails (None)."""

    def held() -> list[Any] | None:
        pods = cluster.core.list_namespaced_pod(
            ns, label_selector=f"kubeloop.io/training-job={trial}").items
        return [p for p in pods if set(HOLD) <= set(p.metadata.annotations or {})] or None

    annotations: dict[str, str | None] = dict.fromkeys(HOLD)
    if loss is None:
        annotations["kubeloop.io/fake-exit-code"] = "1"
    else:
        annotations["kubeloop.io/fake-message"] = json.dumps({"metrics": {"loss": loss}})
    for pod in wait_for(held, 30, f"a held pod of {trial}"):
        cluster.core.patch_namespaced_pod(
            pod.metadata.name, ns, {"metadata": {"annotations": annotations}})


def created(cluster: Cluster, ns: str, exp: str, count: int) -> list[str]:
    def enough() -> list[str] | None:
        names = sorted(trials(cluster, ns, exp))
        return names if len(names) >= count else None

    return wait_for(enough, 30, f"{count} trials of {exp}")


def test_parallel_trials_and_the_best_model_in_status(cluster: Cluster, namespace: str) -> None:
    cluster.create(EXP, namespace, "para", exp_spec())
    assert created(cluster, namespace, "para", 2) == ["para-trial-0", "para-trial-1"]
    stays(lambda: len(trials(cluster, namespace, "para")) == 2, 3, "two trials at once")
    tj = trials(cluster, namespace, "para")["para-trial-0"]
    assert tj["metadata"]["ownerReferences"][0]["kind"] == EXP
    assert set(tj["spec"]["hyperparameters"]) == {"lr", "depth"}
    end(cluster, namespace, "para-trial-0", 0.9)
    created(cluster, namespace, "para", 3)
    stays(lambda: len(unfinished(cluster, namespace, "para")) <= 2, 2, "at most two running")
    end(cluster, namespace, "para-trial-1", 0.2)
    end(cluster, namespace, "para-trial-2", 0.5)
    created(cluster, namespace, "para", 4)
    end(cluster, namespace, "para-trial-3", 0.7)
    done = cluster.wait_phase(EXP, namespace, "para", "Succeeded", 60)
    assert cluster.condition(EXP, namespace, "para", "Ready")["reason"] == "MaxTrialsReached"
    assert done["bestTrial"]["name"] == "para-trial-1" and done["bestTrial"]["value"] == 0.2
    assert done["bestTrial"]["modelUri"] == "s3://models/para-trial-1"
    assert done["counts"]["succeeded"] == 4 and done["trialsDone"] == "4/4"
    assert [t["value"] for t in done["trials"]] == [0.9, 0.2, 0.5, 0.7]
    assert sorted(trials(cluster, namespace, "para")) == [f"para-trial-{n}" for n in range(4)]
    cluster.await_events(namespace, "para", {"TrialsCreated", "MaxTrialsReached"}, kind=EXP)


def test_failed_trials_are_counted_and_too_many_end_the_search(
    cluster: Cluster, namespace: str
) -> None:
    cluster.create(EXP, namespace, "fails", exp_spec(maxFailedTrials=1))
    created(cluster, namespace, "fails", 2)
    end(cluster, namespace, "fails-trial-0", None)
    wait_for(lambda: cluster.status(EXP, namespace, "fails").get("counts", {}).get("failed") == 1,
             30, "one failed trial counted")
    end(cluster, namespace, "fails-trial-1", None)
    done = cluster.wait_phase(EXP, namespace, "fails", "Failed", 30)
    assert cluster.condition(EXP, namespace, "fails", "Ready")["reason"] == "TooManyFailures"
    assert done["counts"]["failed"] == 2
    # The trial asked after the first failure was stopped when the search ended.
    assert [t["state"] for t in done["trials"]] == ["Failed", "Failed", "Pruned"]
    assert trials(cluster, namespace, "fails")["fails-trial-2"]["spec"]["suspend"] is True


def test_the_goal_ends_the_search_and_frees_the_running_trials_pods(
    cluster: Cluster, namespace: str
) -> None:
    goal = {"metric": "loss", "direction": "minimize", "goal": 0.1}
    cluster.create(EXP, namespace, "goal", exp_spec(objective=goal))
    created(cluster, namespace, "goal", 2)
    end(cluster, namespace, "goal-trial-0", 0.05)
    done = cluster.wait_phase(EXP, namespace, "goal", "Succeeded", 30)
    assert cluster.condition(EXP, namespace, "goal", "Ready")["reason"] == "GoalReached"
    assert done["bestTrial"]["modelUri"] == "s3://models/goal-trial-0"
    assert trials(cluster, namespace, "goal")["goal-trial-1"]["spec"]["suspend"] is True
    wait_for(lambda: not cluster.core.list_namespaced_pod(
        namespace, label_selector="kubeloop.io/training-job=goal-trial-1").items,
        30, "the stopped trial's pods gone")
    stays(lambda: len(trials(cluster, namespace, "goal")) == 2, 2, "no trial after the goal")


def test_a_restart_mid_search_loses_and_repeats_no_trial(
    cluster: Cluster, namespace: str, operator: InProcessOperator
) -> None:
    cluster.create(EXP, namespace, "again", exp_spec(maxTrials=5))
    created(cluster, namespace, "again", 2)
    end(cluster, namespace, "again-trial-0", 0.6)
    created(cluster, namespace, "again", 3)
    before = {n: tj["metadata"]["uid"] for n, tj in trials(cluster, namespace, "again").items()}
    operator.stop()
    try:
        # While it is down, two trials end: only their TrainingJobs' pods know it.
        end(cluster, namespace, "again-trial-1", 0.3)
        end(cluster, namespace, "again-trial-2", 0.4)
    finally:
        operator.start()
    created(cluster, namespace, "again", 5)
    end(cluster, namespace, "again-trial-3", 0.8)
    end(cluster, namespace, "again-trial-4", 0.9)
    done = cluster.wait_phase(EXP, namespace, "again", "Succeeded", 60)
    after = trials(cluster, namespace, "again")
    assert sorted(after) == [f"again-trial-{n}" for n in range(5)]
    assert {n: after[n]["metadata"]["uid"] for n in before} == before  # none made again
    assert [t["value"] for t in done["trials"]] == [0.6, 0.3, 0.4, 0.8, 0.9]
    for record in done["trials"]:
        given = after[record["name"]]["spec"]["hyperparameters"]
        assert record["parameters"] == {k: str(v) for k, v in given.items()}
    # No two trials with the same values.
    assert len({json.dumps(t["parameters"], sort_keys=True) for t in done["trials"]}) == 5
    assert done["bestTrial"]["name"] == "again-trial-1"


def test_a_model_deployment_serves_the_best_trial_and_follows_it(
    cluster: Cluster, namespace: str
) -> None:
    """`fromExperiment`: no model (a condition that says why) until a trial succeeds;
    then the best trial's model, moved to each better one; a pinned trial stays."""
    cluster.create(EXP, namespace, "srch", exp_spec(maxTrials=3, parallelTrials=1))
    follow = {"model": {"fromExperiment": {"name": "srch"}}, "replicas": 1}
    pinned = {"model": {"fromExperiment": {"name": "srch", "trial": "srch-trial-0"}}, "replicas": 1}
    cluster.create(MD, namespace, "best", follow)
    cluster.create(MD, namespace, "first", pinned)
    created(cluster, namespace, "srch", 1)

    def resolved(md: str) -> dict[str, Any] | None:
        return cluster.condition(MD, namespace, md, "ModelResolved")

    # Until the Experiment's first status write, the message counts "0" trials; then
    # "0/3": wait for the count out of maxTrials, not one read.
    cond = wait_for(
        lambda: (c := resolved("best")) and c["reason"] == "NoBestTrial" and "0/3" in c[
            "message"] and c,
        60,
        "best waiting for a best trial, 0/3 trials finished",
    )
    assert cond["status"] == "False" and "srch" in cond["message"], cond
    assert cluster.status(MD, namespace, "best")["phase"] == "Pending"

    def serving(md: str, uri: str) -> bool:
        status = cluster.status(MD, namespace, md)
        dep = cluster.apps.list_namespaced_deployment(
            namespace, field_selector=f"metadata.name={md}").items
        annotations = (dep[0].spec.template.metadata.annotations or {}) if dep else {}
        return (status.get("activeModelUri") == uri
                and annotations.get("kubeloop.io/model-uri") == uri)

    end(cluster, namespace, "srch-trial-0", 0.5)
    wait_for(lambda: serving("best", "s3://models/srch-trial-0"), 60, "best serving trial 0")
    wait_for(lambda: serving("first", "s3://models/srch-trial-0"), 60, "first serving trial 0")
    status = cluster.status(MD, namespace, "best")
    assert (status["sourceExperiment"], status["sourceTrainingJob"]) == ("srch", "srch-trial-0")
    created(cluster, namespace, "srch", 2)
    end(cluster, namespace, "srch-trial-1", 0.2)
    wait_for(lambda: serving("best", "s3://models/srch-trial-1"), 60, "best following trial 1")
    created(cluster, namespace, "srch", 3)
    end(cluster, namespace, "srch-trial-2", 0.9)  # worse: the best stays trial 1
    cluster.wait_phase(EXP, namespace, "srch", "Succeeded", 30)
    stays(lambda: serving("best", "s3://models/srch-trial-1"), 2, "best keeps trial 1")
    assert serving("first", "s3://models/srch-trial-0")


def test_a_trial_name_held_by_another_training_job_is_never_taken_over(
    cluster: Cluster, namespace: str
) -> None:
    """A TrainingJob that is not the Experiment's holds its first trial's name: the
    search waits for the name (no apply over it, no trial under another number); once
    that TrainingJob is gone, the trial is created as the Experiment's own."""
    cluster.create(TJ, namespace, "held-trial-0", {"image": "registry.local/other:1",
                                                  "suspend": True})
    cluster.create(EXP, namespace, "held", exp_spec(maxTrials=2, parallelTrials=1))
    wait_for(lambda: [t["name"] for t in cluster.status(EXP, namespace, "held").get("trials", [])]
             == ["held-trial-0"], 30, "trial 0 recorded")

    def untouched() -> bool:
        tj = cluster.get(TJ, namespace, "held-trial-0")
        return (not tj["metadata"].get("ownerReferences")
                and "hyperparameters" not in tj["spec"]
                and tj["spec"]["image"] == "registry.local/other:1")

    stays(untouched, 3, "the other TrainingJob left alone")
    assert sorted(trials(cluster, namespace, "held")) == []  # none labelled as its trial
    cluster.delete(TJ, namespace, "held-trial-0")
    wait_for(lambda: "held-trial-0" in trials(cluster, namespace, "held"), 40,
             "trial 0 created as the Experiment's own once the name is free")
    mine = cluster.get(TJ, namespace, "held-trial-0")
    assert mine["metadata"]["ownerReferences"][0]["name"] == "held"
    assert set(mine["spec"]["hyperparameters"]) == {"lr", "depth"}


def test_a_batch_prediction_starts_with_the_best_trial_once_there_is_one(
    cluster: Cluster, namespace: str
) -> None:
    """BatchPrediction `fromExperiment`: it waits (NoBestTrial) while no trial has
    finished, then records the best trial's model and keeps it for its run."""
    cluster.create(EXP, namespace, "bsrch", exp_spec(maxTrials=1, parallelTrials=1))
    cluster.create("BatchPrediction", namespace, "scores", {
        "model": {"fromExperiment": {"name": "bsrch"}},
        "input": {"uri": "/data/events"},
        "output": {"uri": "/data/scores"},
    })
    created(cluster, namespace, "bsrch", 1)
    waiting = wait_for(
        lambda: (c := cluster.condition("BatchPrediction", namespace, "scores", "Ready"))
        and c["reason"] == "NoBestTrial" and c, 30, "the search to be waited for")
    assert "bsrch" in waiting["message"]
    assert cluster.status("BatchPrediction", namespace, "scores").get("model") is None
    end(cluster, namespace, "bsrch-trial-0", 0.3)
    model = wait_for(lambda: cluster.status("BatchPrediction", namespace, "scores").get("model"),
                     60, "the model recorded")
    assert model == {"uri": "s3://models/bsrch-trial-0",
                     "source": "Experiment/bsrch trial bsrch-trial-0"}, model
