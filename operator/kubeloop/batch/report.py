"""What a scoring pod tells the operator when it ends, beside its rows and rate.

The pod's termination message is the final report every run writes
(:func:`kubeloop.progress.encode_final`: ``step``, ``totalSteps``, ``metrics``) with one
more key, ``batch``::

    {"step": 300, "totalSteps": 300, "metrics": {...},
     "batch": {"model": "<sha256 of the model's manifest.json>",
               "output": {"rows": 600, "files": 4, "sha256": "<of _manifest.json>"},
               "drift": {...}}}

``output`` only from the pod that wrote the output's manifest (the last to finish).
The whole message stays within the kubelet's 4096 bytes: what does not fit is left out,
the least needed first (drift counts, then the output, then the model). Standard
library only: the operator imports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kubeloop.progress import MAX_MESSAGE_BYTES

KEY = "batch"
# Words of a pod's error that the operator reads as its reason
# (controllers/batchprediction_plan.py `cause`): one home for both sides.
MODEL_UNUSABLE = "cannot load the model"
COLUMNS_MISSING = "missing columns"
OUTPUT_EXISTS = "output exists"
# Dropped in this order while the message is too long.
DROP_ORDER = ("drift", "output", "model")


@dataclass(frozen=True)
class OutputSummary:
    rows: int
    files: int
    sha256: str


@dataclass(frozen=True)
class PodReport:
    """The ``batch`` part of one pod's final message."""

    model_sha256: str | None = None
    output: OutputSummary | None = None
    drift: dict[str, Any] | None = None
    omitted: tuple[str, ...] = field(default=())


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def with_batch(message: str, extras: dict[str, Any]) -> str:
    """``message`` (a final report, JSON) with ``extras`` under ``batch``; entries are
    left out, in DROP_ORDER, until it fits, and the ones left out are named under
    ``batch.omitted``."""
    try:
        document = json.loads(message) if message.strip() else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    kept = {k: v for k, v in extras.items() if v is not None}
    omitted: list[str] = []
    for key in (None, *DROP_ORDER):
        if key is not None and kept.pop(key, None) is not None:
            omitted.append(key)
        batch = {**kept, **({"omitted": omitted} if omitted else {})}
        text = _dump({**document, KEY: batch})
        if len(text.encode()) <= MAX_MESSAGE_BYTES:
            return text
    return message


def _summary(raw: object) -> OutputSummary | None:
    if not isinstance(raw, dict):
        return None
    rows, files, sha = raw.get("rows"), raw.get("files"), raw.get("sha256")
    if not (isinstance(rows, int) and isinstance(files, int) and isinstance(sha, str)):
        return None
    if isinstance(rows, bool) or isinstance(files, bool) or rows < 0 or files < 0:
        return None
    return OutputSummary(rows=rows, files=files, sha256=sha)


def parse(text: str | None) -> PodReport | None:
    """The ``batch`` part of a termination message; None when there is none. Never
    raises: what is malformed is left out."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_BYTES or not text.strip():
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    raw = document.get(KEY) if isinstance(document, dict) else None
    if not isinstance(raw, dict):
        return None
    model = raw.get("model")
    drift = raw.get("drift")
    omitted = raw.get("omitted")
    return PodReport(
        model_sha256=model if isinstance(model, str) else None,
        output=_summary(raw.get("output")),
        drift=drift if isinstance(drift, dict) else None,
        omitted=tuple(o for o in omitted if isinstance(o, str))
        if isinstance(omitted, list)
        else (),
    )
