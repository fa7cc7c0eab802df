"""A ModelDeployment's model history (`status.history`): the audit trail of what
served when, who changed it, and on what evaluation.

Pure: from the previous history, the stable model now, the promotion annotation a
DriftMonitor left, and the serving pods (whose `fetch-model` init container reports the
sha256 of the manifest it fetched in its termination message).
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubeloop.api.modeldeployment import HistoryEntry, Scores
from kubeloop.controllers.k8sread import termination_message
from kubeloop.names import MODEL_URI_ANNOTATION, PROMOTION_ANNOTATION
from kubeloop.render.modeldeployment import FETCH_CONTAINER

MAX_ENTRIES = 10
USER = "user"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def update(
    prev: list[HistoryEntry],
    uri: str | None,
    now: str,
    annotations: dict[str, str],
    training_job: str | None,
    pods: list[dict[str, Any]],
) -> list[HistoryEntry]:
    """The new history, newest first: a new entry when the stable model changed (the
    previous one closed at `now`), else the same with the manifest hash filled in."""
    if not uri:
        return prev
    history = [entry.model_copy(deep=True) for entry in prev]
    if not history or history[0].uri != uri:
        if history and history[0].to is None:
            history[0].to = now
        by, run, scores = promoted_by(annotations, uri)
        if by != USER and any(e.changed_by == by and e.training_job == run for e in history):
            # That promotion is already recorded: the model came back by another hand.
            by, run, scores = USER, None, None
        entry = HistoryEntry.model_validate(
            {"uri": uri, "from": now, "changedBy": by, "trainingJob": run or training_job}
        )
        entry.evaluation = scores
        history.insert(0, entry)
    if history[0].manifest_sha256 is None:
        history[0].manifest_sha256 = manifest_sha256(pods, uri)
    return history[:MAX_ENTRIES]


def promoted_by(annotations: dict[str, str], uri: str) -> tuple[str, str | None, Scores | None]:
    """`DriftMonitor/NAME`, its retrain and its scores when the loop's annotation names
    this model; else the change is the user's."""
    raw = annotations.get(PROMOTION_ANNOTATION)
    if not raw:
        return USER, None, None
    try:
        note = json.loads(raw)
    except ValueError:
        return USER, None, None
    if not isinstance(note, dict) or note.get("uri") != uri or not isinstance(note.get("by"), str):
        return USER, None, None
    scores = None
    ev = note.get("evaluation")
    if isinstance(ev, dict) and isinstance(ev.get("metric"), str):
        try:
            scores = Scores.model_validate(ev)
        except ValueError:
            scores = None
    run = note.get("trainingJob")
    return note["by"][:128], run[:253] if isinstance(run, str) else None, scores


def manifest_sha256(pods: list[dict[str, Any]], uri: str) -> str | None:
    """What a pod of this model fetched, from its init container's termination message."""
    for pod in pods:
        if (pod["metadata"].get("annotations") or {}).get(MODEL_URI_ANNOTATION) != uri:
            continue
        digest = _digest(termination_message(pod, FETCH_CONTAINER, init=True))
        if digest:
            return digest
    return None


def _digest(message: Any) -> str | None:
    if not isinstance(message, str) or len(message) > 4096:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    value = data.get("manifestSha256") if isinstance(data, dict) else None
    return value if isinstance(value, str) and _SHA256.match(value) else None
