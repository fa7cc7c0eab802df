"""Readings of pods shared by the kinds: the scheduler's words and a log's tail."""

from __future__ import annotations

import json
from typing import Any

from kubeloop.controllers.k8sread import TAIL_CHARS, message_tail, scheduler_message

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
    log = "\n".join([
        json.dumps({"time": "t", "level": "info", "logger": "kubeloop", "message": "fetching"}),
        json.dumps({"time": "t", "level": "error", "logger": "kubeloop",
                    "message": "Failed to fetch the model: /m/v9/manifest.json: No such file"}),
        json.dumps({"level": "error", "message": "crashed",
                    "error": "Traceback (most recent call last):\n  f\nValueError: bad\n"}),
        json.dumps({"loss": 0.5}),
    ])
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
    return {"metadata": meta, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": message}]}}


def test_the_scheduler_is_quoted_for_a_pod_it_cannot_place() -> None:
    words = '0/3 nodes are available: persistentvolumeclaim "nosuchclaim" not found.'
    assert scheduler_message([pending(words)]) == words


def test_a_pod_on_its_way_out_is_not_quoted() -> None:
    assert scheduler_message([pending("0/3 nodes are available", deleting=True)]) is None
    assert scheduler_message([{"metadata": {"name": "p"}, "status": {"phase": "Running"}}]) is None
