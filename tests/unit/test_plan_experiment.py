"""The Experiment planner, without a cluster: passes over a simulated set of trial
TrainingJobs whose statuses the tests set, the plan's writes carried out by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubeloop.api.experiment import ExperimentSpec
from kubeloop.controllers.common import finish_status
from kubeloop.controllers.experiment_plan import Observed, plan, uid_seed
from tests.unit.experiment_specs import loss

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
UID = "uid-exp"


def exp_spec(**fields: Any) -> ExperimentSpec:
    body: dict[str, Any] = {
        "trainingJob": {"image": "registry.local/train:1",
                        "output": {"uri": "s3://models/{trainingJob}"}},
        "parameters": [{"name": "x", "type": "float", "min": -5, "max": 5},
                       {"name": "n", "type": "int", "min": 1, "max": 4},
                       {"name": "c", "type": "categorical", "values": ["a", "b"]}],
        "objective": {"metric": "loss", "direction": "minimize"},
        "algorithm": {"name": "random", "seed": 7},
        "maxTrials": 6,
        "parallelTrials": 2,
    }
    body.update(fields)
    return ExperimentSpec.model_validate(body)


class Bed:
    """One Experiment and its trials' TrainingJobs, by number; each pass plans and
    carries out the plan's status, creates and patches as execute would."""

    def __init__(self, spec: ExperimentSpec, uid: str = UID) -> None:
        self.spec = spec
        self.body: dict[str, Any] = {
            "apiVersion": "kubeloop.io/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "exp", "namespace": "ns", "uid": uid, "generation": 1},
            "spec": spec.dump(), "status": {}}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.created: list[str] = []
        self.taken: frozenset[str] = frozenset()

    def step(self) -> Any:
        decided = plan(self.spec, self.body, Observed(dict(self.jobs), self.taken), NOW)
        self.body["status"] = finish_status(self.body, decided.status, decided.conds, "t")
        for child in decided.apply:
            obj = child.obj
            number = int(obj["metadata"]["labels"]["kubeloop.io/trial"])
            assert number not in self.jobs, f"{obj['metadata']['name']} created twice"
            self.jobs[number] = {**obj, "status": {}}
            self.created.append(obj["metadata"]["name"])
        for change in decided.patch:
            number = int(change.name.rsplit("-", 1)[1])
            self.jobs[number]["spec"].update(change.patch["spec"])
        return decided

    def set(self, number: int, phase: str, value: float | None = None,
            step: int | None = None) -> None:
        status: dict[str, Any] = {"phase": phase}
        if value is not None:
            status["metrics"] = {"loss": value}
        if step is not None:
            status["progress"] = {"step": step}
        if phase == "Succeeded":
            status["modelUri"] = f"s3://models/exp-trial-{number}"
        self.jobs[number]["status"] = status

    def finish(self, number: int) -> None:
        """Trial `number` succeeds with the known loss of its values."""
        self.set(number, "Succeeded", loss(self.params(number)))

    def params(self, number: int) -> dict[str, str]:
        return {k: str(v) for k, v in self.jobs[number]["spec"]["hyperparameters"].items()}

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body["status"])

    def states(self) -> list[str]:
        return [t["state"] for t in self.status["trials"]]

    def ready(self) -> dict[str, Any]:
        return next(cd for cd in self.status["conditions"] if cd["type"] == "Ready")


def test_first_pass_creates_parallel_trials_owned_labelled_and_numbered() -> None:
    bed = Bed(exp_spec())
    decided = bed.step()
    assert bed.created == ["exp-trial-0", "exp-trial-1"]
    # The records are written before the TrainingJobs are created.
    assert decided.status_first
    job = bed.jobs[0]
    assert job["metadata"]["labels"]["kubeloop.io/experiment"] == "exp"
    assert job["metadata"]["labels"]["kubeloop.io/trial"] == "0"
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID
    assert job["spec"]["output"]["uri"] == "s3://models/exp-trial-0"
    assert set(job["spec"]["hyperparameters"]) == {"x", "n", "c"}
    assert bed.states() == ["Pending", "Pending"]
    assert bed.status["phase"] == "Pending"
    assert bed.status["counts"]["pending"] == 2
    assert bed.status["trialsDone"] == "0/6"
    assert any(e[1] == "TrialsCreated" for e in decided.events)


def test_a_second_pass_creates_nothing_and_queued_trials_hold_their_place() -> None:
    bed = Bed(exp_spec())
    bed.step()
    bed.set(0, "Queued")
    bed.set(1, "Running")
    again = bed.step()
    assert again.apply == [] and bed.created == ["exp-trial-0", "exp-trial-1"]
    assert not again.status_first
    counts = bed.status["counts"]
    assert (counts["pending"], counts["running"]) == (1, 1)
    assert bed.status["phase"] == "Running"


def test_a_finished_trial_makes_room_for_the_next_number() -> None:
    bed = Bed(exp_spec())
    bed.step()
    bed.finish(0)
    bed.set(1, "Running")
    bed.step()
    assert bed.created == ["exp-trial-0", "exp-trial-1", "exp-trial-2"]
    assert bed.states() == ["Succeeded", "Running", "Pending"]
    assert bed.status["bestTrial"]["name"] == "exp-trial-0"
    assert bed.status["bestTrial"]["modelUri"] == "s3://models/exp-trial-0"


def test_a_lost_record_is_recovered_from_its_training_job_and_not_run_again() -> None:
    bed = Bed(exp_spec())
    bed.step()
    params = bed.params(1)
    # The status write of trial 1's record was lost (or the status was wiped).
    bed.body["status"] = {"trials": [bed.status["trials"][0]]}
    bed.finish(0)
    bed.step()
    assert bed.created == ["exp-trial-0", "exp-trial-1", "exp-trial-2"]
    assert bed.status["trials"][1]["parameters"] == params
    assert bed.status["trials"][2]["name"] == "exp-trial-2"


def test_a_record_whose_training_job_was_never_created_gets_it_with_its_values() -> None:
    bed = Bed(exp_spec())
    bed.step()
    params = bed.params(1)
    del bed.jobs[1]  # the operator stopped between the status write and the create
    bed.created.remove("exp-trial-1")
    bed.step()
    assert bed.created == ["exp-trial-0", "exp-trial-1"]
    assert bed.params(1) == params


def test_the_same_records_give_the_same_trials_after_a_restart() -> None:
    one, two = Bed(exp_spec()), Bed(exp_spec())
    one.step()
    two.step()
    assert [one.params(n) for n in (0, 1)] == [two.params(n) for n in (0, 1)]


def test_without_a_seed_the_uid_seeds_the_search() -> None:
    spec = exp_spec(algorithm={"name": "random"})
    a, b, a_again = Bed(spec, "uid-a"), Bed(spec, "uid-b"), Bed(spec, "uid-a")
    for bed in (a, b, a_again):
        bed.step()
    assert a.params(0) == a_again.params(0) != b.params(0)
    assert uid_seed("uid-a") == uid_seed("uid-a") != uid_seed("uid-b")


def test_too_many_failures_ends_the_search_and_stops_what_runs() -> None:
    bed = Bed(exp_spec(maxFailedTrials=1, parallelTrials=3))
    bed.step()
    bed.set(0, "Failed")
    bed.set(1, "Failed")
    bed.set(2, "Running")
    decided = bed.step()
    assert bed.status["phase"] == "Failed"
    assert bed.ready()["reason"] == "TooManyFailures" and bed.ready()["status"] == "False"
    assert any(cd["type"] == "Stalled" for cd in bed.status["conditions"])
    assert bed.states() == ["Failed", "Failed", "Pruned"]
    assert bed.jobs[2]["spec"]["suspend"] is True
    assert len(bed.created) == 3
    assert ("Warning", "TooManyFailures") in [(e[0], e[1]) for e in decided.events]
    assert bed.status["completionTime"]


def test_the_goal_ends_the_search_with_the_best_model() -> None:
    bed = Bed(exp_spec(objective={"metric": "loss", "direction": "minimize", "goal": 0.5}))
    bed.step()
    bed.set(0, "Succeeded", 0.25)
    bed.set(1, "Running")
    bed.step()
    assert bed.status["phase"] == "Succeeded"
    assert bed.ready()["reason"] == "GoalReached"
    assert bed.status["bestTrial"] == {
        "name": "exp-trial-0", "parameters": bed.params(0), "value": 0.25,
        "modelUri": "s3://models/exp-trial-0"}
    assert bed.jobs[1]["spec"].get("suspend") is True
    assert len(bed.created) == 2
    # Ended: later passes create nothing and announce nothing again.
    later = bed.step()
    assert later.apply == [] and later.patch == [] and later.events == []


def test_every_trial_run_is_max_trials_reached() -> None:
    bed = Bed(exp_spec(maxTrials=3, parallelTrials=3))
    bed.step()
    for n in range(3):
        bed.finish(n)
    bed.step()
    assert bed.status["phase"] == "Succeeded"
    assert bed.ready()["reason"] == "MaxTrialsReached"
    assert bed.status["trialsDone"] == "3/3"
    assert len(bed.created) == 3


def test_a_trial_behind_the_median_is_pruned_and_its_training_job_suspended() -> None:
    spec = exp_spec(maxTrials=10, parallelTrials=3,
                    earlyStopping={"name": "median", "startupTrials": 2})
    bed = Bed(spec)
    bed.step()
    # Trials 0 and 1 report 1.0 at step 5 and finish there; trial 2 reports 9.0.
    for n in (0, 1):
        bed.set(n, "Running", 1.0, step=5)
    bed.step()
    for n in (0, 1):
        bed.set(n, "Succeeded", 1.0)
    bed.step()
    bed.set(2, "Running", 9.0, step=5)
    decided = bed.step()
    trial = bed.status["trials"][2]
    assert trial["state"] == "Pruned" and trial["pruned"] is True and trial["value"] == 9.0
    assert bed.jobs[2]["spec"]["suspend"] is True
    assert decided.status_first
    assert any(e[1] == "TrialPruned" for e in decided.events)
    # Its TrainingJob now shows Suspended: the record stays pruned, no second patch.
    bed.set(2, "Suspended")
    again = bed.step()
    assert bed.status["trials"][2]["state"] == "Pruned" and again.patch == []


def test_a_trial_name_held_by_another_owner_is_not_taken_over() -> None:
    bed = Bed(exp_spec())
    bed.taken = frozenset({"exp-trial-0"})
    decided = bed.step()
    assert bed.created == ["exp-trial-1"]
    assert decided.requeue_after is not None
    assert bed.states() == ["Pending", "Pending"]
    bed.taken = frozenset()
    bed.step()
    assert bed.created == ["exp-trial-1", "exp-trial-0"]


def test_an_unsearchable_space_is_invalid_and_creates_nothing() -> None:
    spec = exp_spec()
    spec.parameters[0].min = 10.0  # above max: a body written before the rule existed
    bed = Bed(spec)
    decided = bed.step()
    assert decided.apply == [] and bed.status["phase"] == "Invalid"
    assert bed.ready()["reason"] == "InvalidSpec"
