"""Readings of Kubernetes objects that more than one kind shares: a Job's conditions,
a container's termination (its exit code, reason and message, and the message's tail),
a pod's readiness, crash reasons, the scheduler's words for a pod it cannot place, and
the objects a given owner (by UID) owns.

They are the cluster's own words, quoted into a resource's conditions and Events, so
that the cause of a failure is on the resource the user looks at. Every function here
is pure: it reads the dicts the API server (or the store) hands out.
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


# --- Jobs ----------------------------------------------------------------------------


def job_condition(job: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """The Job's condition of that type when it is True (e.g. Complete, Failed)."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Job's Complete or Failed condition, whichever is True; None while it runs."""
    return job_condition(job, "Complete") or job_condition(job, "Failed")


# --- Containers and pods ---------------------------------------------------------------


def terminated(
    pod: dict[str, Any] | None, container: str, *, init: bool = False
) -> dict[str, Any] | None:
    """The named container's termination (exitCode, reason, message): its current state,
    else its last one (a restarted container); None while it never ended."""
    key = "initContainerStatuses" if init else "containerStatuses"
    for cs in ((pod or {}).get("status") or {}).get(key) or []:
        if cs.get("name") != container:
            continue
        for state_key in ("state", "lastState"):
            term = (cs.get(state_key) or {}).get("terminated")
            if term:
                return dict(term)
    return None


def termination_message(
    pod: dict[str, Any] | None, container: str, *, init: bool = False
) -> str | None:
    """What the named container wrote to its termination message (or, under
    FallbackToLogsOnError, the end of its log); None for none."""
    message = (terminated(pod, container, init=init) or {}).get("message")
    return str(message) if message else None


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(cd.get("type") == "Ready" and cd.get("status") == "True" for cd in conds)


# Waiting reasons of a container that cannot run as it is (not a pass-through state).
CRASH_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "CreateContainerError",
        "InvalidImageName",
        "CreateContainerConfigError",
    }
)


def crash_reason(pods: list[dict[str, Any]]) -> str | None:
    """Why pods cannot serve: crash loops, failed model fetches, bad images, in the
    container's own words (the end of its log) where it left any, for the first such
    container: `pod P container C: <reason or exit code>: <words>`."""
    for pod in pods:
        status = pod.get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for cs in status.get(key, []) or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                term = (cs.get("lastState") or {}).get("terminated") or (
                    (cs.get("state") or {}).get("terminated") or {}
                )
                if waiting.get("reason") in CRASH_REASONS or (
                    cs.get("restartCount", 0) and term.get("exitCode", 0) != 0
                ):
                    what = waiting.get("reason") or f"exit code {term.get('exitCode')}"
                    detail = message_tail(term.get("message")) or waiting.get("message") or ""
                    text = f"pod {pod['metadata']['name']} container {cs.get('name', '?')}: {what}"
                    return f"{text}: {detail}" if detail else text
    return None


def exit_text(term: dict[str, Any] | None) -> str:
    """`exit code 3 (Error): <tail of its message>`, or "" for no termination."""
    if not term:
        return ""
    text = f"exit code {term.get('exitCode')}"
    if term.get("reason"):
        text += f" ({term['reason']})"
    tail = message_tail(term.get("message"))
    return f"{text}: {tail}" if tail else text


# --- Deployments ---------------------------------------------------------------------


def deployment_ready(dep: dict[str, Any] | None) -> int:
    """Ready replicas of a Deployment (0 for none)."""
    return int(((dep or {}).get("status") or {}).get("readyReplicas", 0) or 0)


def deployment_available(dep: dict[str, Any] | None) -> int:
    """Available replicas of a Deployment (0 for none)."""
    return int(((dep or {}).get("status") or {}).get("availableReplicas", 0) or 0)


def rolled_out(dep: dict[str, Any] | None) -> bool:
    """The Deployment controller has seen the latest spec and every replica is updated."""
    if dep is None:
        return False
    status = dep.get("status") or {}
    want = dep.get("spec", {}).get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
        and int(status.get("updatedReplicas", 0) or 0) >= want
        and int(status.get("availableReplicas", 0) or 0) >= want
        and int(status.get("replicas", 0) or 0) <= want
    )


# --- Owners ------------------------------------------------------------------------------


def owned_by(objs: list[dict[str, Any]], uid: str | None) -> list[dict[str, Any]]:
    """The objects whose ownerReferences name this UID. Names and labels can be reused
    or set by anyone who may create the object; the owner's UID cannot."""
    if not uid:
        return []
    return [
        o
        for o in objs
        if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
    ]


def newest(objs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recently created object, or None."""
    ordered = sorted(objs, key=lambda o: o["metadata"].get("creationTimestamp") or "")
    return ordered[-1] if ordered else None
