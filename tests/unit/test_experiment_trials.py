"""A trial's TrainingJob spec from the template, its record from the TrainingJob's
status, and the status figures (counts, trials done, the best trial and its model)."""

from __future__ import annotations

from typing import Any

from experiment_specs import spec, trial  # pytest puts tests/unit on sys.path

from kubeloop.api.experiment import StepValue
from kubeloop.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeloop.experiment.trials import (
    best_trial,
    counts,
    observe,
    pruned,
    thin,
    trial_name,
    trial_spec,
    trials_done,
)

P = {"c": "b", "n": "3", "x": "1.25"}


def status(phase: str, step: int | None = None, **metrics: float) -> TrainingJobStatus:
    body: dict[str, Any] = {"phase": phase, "metrics": metrics}
    if step is not None:
        body["progress"] = {"step": step, "totalSteps": 30}
    return TrainingJobStatus.model_validate(body)


def test_a_trials_training_job_is_the_template_with_the_chosen_values() -> None:
    s = spec(compute="small", trainingJob={
        "image": "registry.local/train:1", "args": ["--steps=30"],
        "hyperparameters": {"epochs": "3"},
        "output": {"uri": "pvc://models/search/{trainingJob}"}})
    name = trial_name("search", 7)
    assert name == "search-trial-7"
    made = trial_spec(s, name, P)
    assert made["hyperparameters"] == {"epochs": "3", **P}
    assert made["compute"] == "small"
    assert made["output"] == {"uri": "pvc://models/search/search-trial-7"}
    assert made["args"] == ["--steps=30"]
    TrainingJobSpec.model_validate(made)  # a valid TrainingJob spec
    # The template itself is left as it was.
    assert s.training_job.output and s.training_job.output.uri.endswith("{trainingJob}")
    assert "x" not in s.training_job.hyperparameters


def test_the_record_follows_the_training_job() -> None:
    record = trial(0, "Pending", parameters=P)
    assert observe(record, None, "loss") == record  # not seen yet
    queued = observe(record, status("Queued"), "loss")
    assert queued.state == "Pending"
    running = observe(queued, status("Running", 4, loss=2.5, accuracy=0.3), "loss")
    assert running.state == "Running"
    assert running.intermediate == [StepValue(step=4, value=2.5)]
    again = observe(running, status("Running", 4, loss=2.4), "loss")  # the same step
    assert again.intermediate == [StepValue(step=4, value=2.4)]
    later = observe(again, status("Running", 9, loss=1.5), "loss")
    assert [p.step for p in later.intermediate] == [4, 9]
    done = observe(later, status("Succeeded", 30, loss=0.75), "loss")
    assert (done.state, done.value) == ("Succeeded", 0.75)
    assert observe(done, status("Failed"), "loss") == done  # finished: no change
    assert record.state == "Pending" and not record.intermediate  # nothing changed in place


def test_a_run_without_the_metric_or_failing_records_no_value() -> None:
    record = trial(0, parameters=P)
    silent = observe(record, status("Running", 4, accuracy=0.5), "loss")
    assert silent.intermediate == []
    silent_end = observe(record, status("Succeeded", 30, accuracy=0.9), "loss")
    # Without its objective a run cannot be ranked: the trial failed, and says why.
    assert (silent_end.state, silent_end.value) == ("Failed", None)
    assert silent_end.message == "the run succeeded without reporting loss"
    nan = observe(record, status("Succeeded", 30, loss=float("nan")), "loss")
    assert nan.state == "Failed" and nan.message is not None and "not a finite" in nan.message
    assert observe(record, status("Failed"), "loss").state == "Failed"


def test_a_pruned_trial_keeps_its_last_report_and_stays_pruned() -> None:
    running = trial(0, parameters=P, intermediate={3: 4.0, 6: 3.0})
    stopped = pruned(running)
    assert (stopped.state, stopped.pruned, stopped.value) == ("Pruned", True, 3.0)
    assert observe(stopped, status("Failed"), "loss") == stopped


def test_thin_keeps_the_latest_and_a_coarser_history() -> None:
    points = [StepValue(step=s, value=float(s)) for s in range(1, 41)]
    kept = thin(points, 32)
    assert len(kept) <= 32 and kept[-1].step == 40 and kept[0].step == 1
    assert [p.step for p in kept] == sorted(p.step for p in kept)
    assert thin(points[:5], 32) == points[:5]


def test_counts_trials_done_and_the_best_trial_with_its_model() -> None:
    s = spec(maxTrials=10)
    records = [trial(0, "Succeeded", 2.0, P), trial(1, "Succeeded", 0.5, P),
               trial(2, "Failed"), trial(3, "Pruned", 0.1, P), trial(4, "Running"),
               trial(5, "Pending")]
    c = counts(records)
    assert (c.total, c.pending, c.running, c.succeeded, c.failed, c.pruned) == (6, 1, 1, 2, 1, 1)
    assert trials_done(s, records) == "4/10"
    top = best_trial(s, records, {"exp-1": "pvc://models/search/exp-1"})
    assert top is not None
    assert (top.name, top.value, top.model_uri) == ("exp-1", 0.5, "pvc://models/search/exp-1")
    assert best_trial(s, records[2:3], {}) is None
