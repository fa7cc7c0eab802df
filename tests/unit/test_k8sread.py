"""Readings of pods shared by the kinds: the scheduler's words and a log's tail."""

from __future__ import annotations

import json
from typing import Any

from kubeloop.controllers.k8sread import (
    TAIL_CHARS,
    crash_reason,
    exit_text,
    job_condition,
    job_finished,
    message_tail,
    newest,
    owned_by,
    pod_ready,
    scheduler_message,
    terminated,
    termination_message,
)

ARGPARSE = (
    "usage: train.py [-h] [--n-estimators N_ESTIMATORS]\n"
    "train.py: error: unrecognized arguments: --n_estimators=50\n"
)


def test_a_short_log_is_quoted_whole_on_one_line() -> None:
    assert message_tail(ARGPARSE) == (
        "usage: train.py [-h] [--n-estimators N_ESTIMATORS] | "
        "train.py: error: unrecognized arguments: --n_estimators=50"
    )


def test_only_the_last_ten_lines_are_kept() -> None:
    log = "\n".join(f"line {i}" for i in range(80)) + "\n\n"
    assert message_tail(log) == " | ".join(f"line {i}" for i in range(70, 80))


def test_a_long_tail_keeps_its_end() -> None:
    log = "x" * 5000 + "\nOSError: /mnt/pvc/models/v9/manifest.json: No such file or directory"
    tail = message_tail(log)
    assert len(tail) == TAIL_CHARS and tail.startswith("...")
    assert tail.endswith("manifest.json: No such file or directory")


def test_a_json_log_line_is_quoted_as_its_text() -> None:
    log = "\n".join(
        [
            json.dumps({"time": "t", "level": "info", "logger": "kubeloop", "message": "fetching"}),
            json.dumps(
                {
                    "time": "t",
                    "level": "error",
                    "logger": "kubeloop",
                    "message": "Failed to fetch the model: /m/v9/manifest.json: No such file",
                }
            ),
            json.dumps(
                {
                    "level": "error",
                    "message": "crashed",
                    "error": "Traceback (most recent call last):\n  f\nValueError: bad\n",
                }
            ),
            json.dumps({"loss": 0.5}),
        ]
    )
    assert message_tail(log) == (
        "fetching | Failed to fetch the model: /m/v9/manifest.json: No such file"
        ' | crashed: ValueError: bad | {"loss": 0.5}'
    )


def test_no_message_is_empty() -> None:
    assert message_tail(None) == message_tail("") == message_tail("\n \n") == ""


def pending(message: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                }
            ],
        },
    }


def test_the_scheduler_is_quoted_for_a_pod_it_cannot_place() -> None:
    words = '0/3 nodes are available: persistentvolumeclaim "nosuchclaim" not found.'
    assert scheduler_message([pending(words)]) == words


def test_a_pod_on_its_way_out_is_not_quoted() -> None:
    assert scheduler_message([pending("0/3 nodes are available", deleting=True)]) is None
    assert scheduler_message([{"metadata": {"name": "p"}, "status": {"phase": "Running"}}]) is None


def job(*conds: tuple[str, str]) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": t, "status": s} for t, s in conds]}}


def test_a_job_is_finished_by_a_true_complete_or_failed() -> None:
    assert job_finished(job(("Complete", "False"), ("Suspended", "True"))) is None
    assert job_finished(None) is None
    assert job_finished(job(("Failed", "True")))["type"] == "Failed"
    assert job_condition(job(("Complete", "True")), "Complete") == {
        "type": "Complete",
        "status": "True",
    }


def pod_with(name: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> dict:
    return {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {"name": "other", "state": {"terminated": {"exitCode": 9, "message": "no"}}},
                {"name": name, "state": state, "lastState": last or {}},
            ]
        },
    }


def test_a_termination_is_read_from_the_named_container_now_or_last() -> None:
    ended = {"terminated": {"exitCode": 3, "reason": "Error", "message": "a\nboom\n"}}
    assert terminated(pod_with("worker", ended), "worker") == ended["terminated"]
    assert terminated(pod_with("worker", {"running": {}}, ended), "worker")["exitCode"] == 3
    assert terminated(pod_with("worker", {"running": {}}), "worker") is None
    assert terminated(None, "worker") is None
    assert termination_message(pod_with("worker", ended), "worker") == "a\nboom\n"
    assert termination_message(pod_with("worker", {"running": {}}), "worker") is None
    assert exit_text(ended["terminated"]) == "exit code 3 (Error): a | boom"
    assert exit_text(None) == ""
    init = {"status": {"initContainerStatuses": [{"name": "fetch", "state": ended}]}}
    assert termination_message(init, "fetch", init=True) == "a\nboom\n"
    assert termination_message(init, "fetch") is None


def test_readiness_and_crash_reasons() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_ready(ready)
    assert not pod_ready({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not pod_ready({"metadata": {}})
    looping = {
        "metadata": {"name": "p1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "server",
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "no model.json"}},
                }
            ]
        },
    }
    assert crash_reason([ready | {"metadata": {"name": "p0"}}, looping]) == (
        "pod p1 container server: CrashLoopBackOff: no model.json"
    )
    assert crash_reason([ready | {"metadata": {"name": "p0"}}]) is None


def test_only_objects_owned_by_the_uid_count() -> None:
    def obj(name: str, stamp: str, *uids: str) -> dict[str, Any]:
        refs = [{"uid": u, "kind": "Job", "name": "j"} for u in uids]
        return {"metadata": {"name": name, "creationTimestamp": stamp, "ownerReferences": refs}}

    mine, planted, other = obj("a", "1", "u1"), obj("b", "3"), obj("c", "2", "u2", "u3")
    assert owned_by([mine, planted, other], "u1") == [mine]
    assert owned_by([mine, planted, other], "u3") == [other]
    assert owned_by([mine, planted], None) == []
    assert newest([mine, planted, other]) is planted
    assert newest([]) is None
