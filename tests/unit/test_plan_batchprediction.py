"""The BatchPrediction planner: pure, from observations to status and actions."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from kubeloop.api.batchprediction import BatchPredictionSpec
from kubeloop.controllers.batchprediction_plan import (
    ModelChoice,
    Observed,
    choose_model,
    plan,
    progress_of,
    shard_result,
)

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
OWNER = {"kind": "BatchPrediction", "name": "bp", "uid": "u"}


def spec(model: dict[str, Any], parallelism: int = 2) -> BatchPredictionSpec:
    return BatchPredictionSpec.model_validate({
        "model": model,
        "input": {"uri": "pvc://data/in"},
        "output": {"uri": "pvc://data/out"},
        "parallelism": parallelism,
    })


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "BatchPrediction",
        "metadata": {"name": "bp", "namespace": "ns", "uid": "u", "generation": 1},
        "status": status or {},
    }


def pod(index: int, phase: str, message: str = "", exit_code: int = 0,
        created: str = "2026-12-07T11:00:00Z") -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code, "message": message}} if message else {}
    return {
        "metadata": {
            "name": f"bp-score-{index}",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": created,
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "score", "state": state}]},
    }


def final(rows: int, total: int, rate: float) -> str:
    return json.dumps({"step": rows, "totalSteps": total,
                       "metrics": {"rows_per_second": rate}})


def job(*conds: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "bp-score", "uid": "j"},
        "spec": {},
        "status": {"conditions": [{"type": t, "status": "True"} for t in conds]},
    }


def test_a_deployment_that_serves_nothing_yet_is_waited_for() -> None:
    s = spec({"fromModelDeployment": {"name": "web"}})
    assert choose_model(s, "ns", None, None).reason == "ModelDeploymentNotFound"
    nothing = choose_model(s, "ns", None, {"status": {}})
    assert nothing.uri is None and nothing.reason == "ModelNotServed"
    out = plan(s, body(), nothing, Observed(None), "img", OWNER, NOW)
    assert out.status.phase == "Pending" and not out.apply
    assert out.conds[0].reason == "ModelNotServed"


def test_a_failed_training_job_fails_the_run() -> None:
    s = spec({"fromTrainingJob": {"name": "t"}})
    failed = choose_model(s, "ns", {"status": {"phase": "Failed", "message": "oom"}}, None)
    out = plan(s, body(), failed, Observed(None), "img", OWNER, NOW)
    assert out.status.phase == "Failed" and out.conds[0].reason == "TrainingJobFailed"


def test_the_served_model_is_recorded_once_and_kept() -> None:
    s = spec({"fromModelDeployment": {"name": "web"}})
    v1 = choose_model(s, "ns", None, {"status": {"activeModelUri": "s3://m/v1"}})
    first = plan(s, body(), v1, Observed(None), "img", OWNER, NOW)
    assert first.status.model is not None and first.status.model.uri == "s3://m/v1"
    assert first.status.model.source == "ModelDeployment/web"
    [child] = first.apply
    assert child.obj["spec"]["template"]["metadata"]["annotations"]["kubeloop.io/model-uri"] == (
        "s3://m/v1"
    )
    later = plan(s, body(first.status.dump()), ModelChoice("s3://m/v2", "ModelDeployment/web"),
                 Observed(job()), "img", OWNER, NOW)
    assert later.status.model is not None and later.status.model.uri == "s3://m/v1"
    assert not later.apply


def test_progress_adds_the_indexes_up() -> None:
    shards = [
        shard_result(0, pod(0, "Succeeded", final(600, 600, 300.0))),
        shard_result(1, pod(1, "Running")),
    ]
    assert progress_of(shards, 2) is not None
    half = progress_of(shards, 2)
    assert half is not None and half.rows_done == 600 and half.rows_total is None
    both = progress_of(
        [shards[0], shard_result(1, pod(1, "Succeeded", final(400, 400, 200.0)))], 2
    )
    assert both is not None and both.rows_total == 1000 and both.percent == 100.0
    assert both.rows_per_second == 500.0


def test_a_failed_index_fails_the_run_with_its_words_and_cause() -> None:
    s = spec({"uri": "s3://m/v1"})
    started = plan(s, body(), ModelChoice("s3://m/v1", "uri"), Observed(None), "i", OWNER, NOW)
    words = "kubeloop batch: /mnt/pvc/data/in: no such file or directory"
    out = plan(
        s, body(started.status.dump()), ModelChoice("s3://m/v1", "uri"),
        Observed(job("Failed"), [pod(0, "Failed", words, 2), pod(1, "Succeeded")]),
        "i", OWNER, NOW,
    )
    assert out.status.phase == "Failed"
    ready = out.conds[0]
    assert ready.reason == "InputMissing"
    assert ready.message.startswith("index 0 failed: exit code 2: kubeloop batch: /mnt/pvc")
    assert out.status.shards[0].state == "Failed"


def test_a_retried_index_is_judged_by_its_newest_pod() -> None:
    s = spec({"uri": "s3://m/v1"}, parallelism=1)
    started = plan(s, body(), ModelChoice("s3://m/v1", "uri"), Observed(None), "i", OWNER, NOW)
    pods = [
        pod(0, "Failed", "killed", 137, created="2026-12-07T11:00:00Z"),
        pod(0, "Succeeded", final(10, 10, 5.0), created="2026-12-07T11:01:00Z"),
    ]
    out = plan(s, body(started.status.dump()), ModelChoice("s3://m/v1", "uri"),
               Observed(job("Complete"), pods), "i", OWNER, NOW)
    assert out.status.phase == "Succeeded"
    assert out.status.output is not None and out.status.output.rows == 10
    assert [r.state for r in out.status.shards] == ["Succeeded"]


def test_a_finished_run_still_takes_the_final_reports_that_come_late() -> None:
    s = spec({"uri": "s3://m/v1"}, parallelism=1)
    choice = ModelChoice("s3://m/v1", "uri")
    started = plan(s, body(), choice, Observed(None), "i", OWNER, NOW)
    # The Job's end is seen before the pod's last status.
    early = plan(s, body(started.status.dump()), choice,
                 Observed(job("Complete"), [pod(0, "Running")]), "i", OWNER, NOW)
    assert early.status.phase == "Succeeded" and early.status.progress is None
    late = plan(s, body({**early.status.dump(), "conditions": [
        {"type": "Ready", "status": "True", "reason": "Succeeded"}]}), choice,
        Observed(job("Complete"), [pod(0, "Succeeded", final(10, 10, 5.0))]), "i", OWNER, NOW)
    assert late.status.phase == "Succeeded"
    assert late.status.progress is not None and late.status.progress.rows_done == 10
    assert late.status.output is not None and late.status.output.rows == 10


def reported(rows: int, model: str, output: dict[str, Any] | None = None) -> str:
    batch: dict[str, Any] = {"model": model}
    if output is not None:
        batch["output"] = output
    return json.dumps({"step": rows, "totalSteps": rows,
                       "metrics": {"rows_per_second": 5.0}, "batch": batch})


def test_the_model_and_the_output_manifest_reach_the_status() -> None:
    s = spec({"uri": "s3://m/v1"})
    choice = ModelChoice("s3://m/v1", "uri")
    started = plan(s, body(), choice, Observed(None), "i", OWNER, NOW)
    manifest = {"rows": 30, "files": 3, "sha256": "ab" * 32}
    pods = [pod(0, "Succeeded", reported(10, "cd" * 32)),
            pod(1, "Succeeded", reported(20, "cd" * 32, manifest))]
    out = plan(s, body(started.status.dump()), choice, Observed(job("Complete"), pods),
               "i", OWNER, NOW)
    assert out.status.phase == "Succeeded"
    assert out.status.model is not None and out.status.model.sha256 == "cd" * 32
    assert out.status.output is not None
    assert (out.status.output.rows, out.status.output.files, out.status.output.sha256) == (
        30, 3, "ab" * 32)
    assert out.conds[0].message == "30 rows scored into pvc://data/out"


@pytest.mark.parametrize(
    ("words", "reason"),
    [
        ("kubeloop batch: /mnt/pvc/data/in/a.csv: missing columns: petal_width_cm; the "
         "file has: id", "ColumnsMissing"),
        ("kubeloop batch: cannot load the model: /mnt/model/manifest.json: No such file or "
         "directory", "ModelMissing"),
        ("kubeloop batch: /mnt/pvc/data/out: output exists: it holds the complete output of "
         "another run", "OutputExists"),
        ("kubeloop batch: /mnt/pvc/data/in: No such file or directory", "InputMissing"),
        ("kubeloop batch: /mnt/pvc/data/in/a.parquet (row group 0): cannot read: "
         "Couldn't deserialize thrift", "ShardFailed"),
    ],
)
def test_a_failed_index_names_its_cause(words: str, reason: str) -> None:
    s = spec({"uri": "s3://m/v1"}, parallelism=1)
    choice = ModelChoice("s3://m/v1", "uri")
    started = plan(s, body(), choice, Observed(None), "i", OWNER, NOW)
    out = plan(s, body(started.status.dump()), choice,
               Observed(job("Failed"), [pod(0, "Failed", words, 2)]), "i", OWNER, NOW)
    assert (out.status.phase, out.conds[0].reason) == ("Failed", reason)
    assert words in out.conds[0].message


def test_a_model_that_cannot_be_fetched_is_model_missing() -> None:
    s = spec({"uri": "pvc://models/iris/v9"}, parallelism=1)
    choice = ModelChoice("pvc://models/iris/v9", "uri")
    started = plan(s, body(), choice, Observed(None), "i", OWNER, NOW)
    failed = pod(0, "Failed")
    failed["status"]["initContainerStatuses"] = [{"name": "fetch-model", "state": {
        "terminated": {"exitCode": 1, "message": "/mnt/pvc/models/iris/v9/manifest.json: "
                       "No such file or directory"}}}]
    out = plan(s, body(started.status.dump()), choice, Observed(job("Failed"), [failed]),
               "i", OWNER, NOW)
    assert out.conds[0].reason == "ModelMissing"
    assert "fetching the model: exit code 1" in out.conds[0].message


def test_the_last_pods_drift_counts_reach_the_status() -> None:
    s = spec({"uri": "s3://m/v1"}, parallelism=1)
    choice = ModelChoice("s3://m/v1", "uri")
    started = plan(s, body(), choice, Observed(None), "i", OWNER, NOW)
    drift = {"rows": 10, "reference": "0123456789abcdef", "features": {"x": [4, 6]}}
    message = json.dumps({"step": 10, "totalSteps": 10, "batch": {
        "model": "cd" * 32, "output": {"rows": 10, "files": 1, "sha256": "ab" * 32},
        "drift": drift}})
    out = plan(s, body(started.status.dump()), choice,
               Observed(job("Complete"), [pod(0, "Succeeded", message)]), "i", OWNER, NOW)
    assert out.status.drift is not None and out.status.drift.model_dump() == drift
    malformed = message.replace('"rows": 10, "reference"', '"rows": "ten", "reference"')
    out = plan(s, body(started.status.dump()), choice,
               Observed(job("Complete"), [pod(0, "Succeeded", malformed)]), "i", OWNER, NOW)
    assert out.status.phase == "Succeeded" and out.status.drift is None
