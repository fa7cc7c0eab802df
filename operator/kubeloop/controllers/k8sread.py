"""Readings of pods that more than one kind shares: the scheduler's words for a pod it
cannot place, and the tail of a container's termination message.

Both are the cluster's own words, quoted into a resource's conditions and Events, so
that the cause of a failure is on the resource the user looks at.
"""

from __future__ import annotations

import json
from typing import Any

# Every container the operator creates has `terminationMessagePolicy:
# FallbackToLogsOnError` (render/common.py): one that fails without writing a termination
# message gets the end of its log as one (the kubelet keeps at most 80 lines, 2 KiB).
# A condition quotes less of it, so that the rest of its message fits beside it.
TAIL_LINES = 10
TAIL_CHARS = 512
LINE_SEPARATOR = " | "


def message_tail(message: str | None) -> str:
    """The last few non-blank lines of a termination message, on one line (status
    messages are printer columns), at most TAIL_CHARS from its end; "" for none.
    A structured log line (Kubeloop's own containers log JSON) is quoted as its text."""
    lines = [_words(line.strip()) for line in (message or "").splitlines() if line.strip()]
    text = LINE_SEPARATOR.join(lines[-TAIL_LINES:])
    if len(text) > TAIL_CHARS:
        text = "..." + text[-(TAIL_CHARS - 3) :]
    return text


def _words(line: str) -> str:
    """A JSON log line's `message` (and the last line of its `error`, an exception's
    traceback), else the line as it is."""
    if not line.startswith("{"):
        return line
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or not isinstance(entry.get("message"), str):
        return line
    error = [e for e in str(entry.get("error") or "").splitlines() if e.strip()]
    return f"{entry['message']}: {error[-1].strip()}" if error else str(entry["message"])


def scheduler_message(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's own words for a Pending pod it cannot place, e.g. `0/3 nodes are
    available: 3 Insufficient nvidia.com/gpu` or `persistentvolumeclaim "x" not found`."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Pending" or pod["metadata"].get("deletionTimestamp"):
            continue
        for cond in status.get("conditions", []) or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("message")
            ):
                return str(cond["message"])
    return None
