"""Live labels for the evaluation gate: the labelled rows the serving pods keep
(`GET /v2/models/{name}/feedback/rows`, serving/labelled_rows.py), read from every pod
the operator named and scored like a holdout file; and how their verdict combines with
the holdout's (docs/safe-retraining.md, "Live labels").

Modes: ``beside`` — the challenger must pass on the holdout and on the live rows; with
fewer than ``min_rows`` live rows, on the holdout alone (the result says so).
``instead`` — on the live rows alone; too few is an error (no verdict, not promoted).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeloop.evaluation import EvaluationError
from kubeloop.evaluation.data import Table
from kubeloop.evaluation.gate import Verdict

BESIDE, INSTEAD = "beside", "instead"
MODES = (BESIDE, INSTEAD)
TIMEOUT = 10.0
MAX_BYTES = 256 << 20
SOURCE = "the live labelled rows"


@dataclass(frozen=True)
class LiveRows:
    """The rows read (None when there were none to read) and what went wrong where."""

    table: Table | None
    rows: int
    problems: list[str]
    label_column: str


def fetch(urls: list[str], timeout: float = TIMEOUT) -> LiveRows:
    """Every pod's rows, one table; a pod that cannot be read (gone, not yet serving)
    or that keeps other features than the first is left out and named."""
    features: list[str] | None = None
    inputs: list[list[float]] = []
    labels: list[Any] = []
    problems = []
    for url in urls:
        try:
            snap = _get(url, timeout)
        except EvaluationError as exc:
            problems.append(str(exc))
            continue
        if features is None:
            features = snap["features"]
        elif snap["features"] != features:
            problems.append(f"{url}: other features {snap['features'][:5]}: left out")
            continue
        inputs += snap["inputs"]
        labels += snap["labels"]
    label = "label"
    while features is not None and label in features:
        label += "_"
    if features is None or not labels:
        return LiveRows(None, 0, problems, label)
    cells = np.empty((len(labels), len(features)), dtype=object)
    cells[:] = inputs
    columns = {name: cells[:, i] for i, name in enumerate(features)}
    column = np.empty(len(labels), dtype=object)
    column[:] = labels
    columns[label] = column
    table = Table(SOURCE, columns, len(labels), header_lines=0)
    return LiveRows(table, len(labels), problems, label)


def _get(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(MAX_BYTES + 1)
    except (OSError, urllib.error.URLError) as exc:
        raise EvaluationError(f"{url}: {getattr(exc, 'reason', None) or exc}") from exc
    if len(body) > MAX_BYTES:
        raise EvaluationError(f"{url}: more than {MAX_BYTES} bytes")
    try:
        snap = json.loads(body)
        features, inputs, labels = snap["features"], snap["inputs"], snap["labels"]
    except (ValueError, TypeError, KeyError) as exc:
        raise EvaluationError(f"{url}: not the labelled rows of a model server: {exc}") from exc
    if not (
        isinstance(features, list)
        and isinstance(inputs, list)
        and isinstance(labels, list)
        and len(inputs) == len(labels)
        and all(isinstance(r, list) and len(r) == len(features) for r in inputs)
    ):
        raise EvaluationError(f"{url}: malformed labelled rows")
    return {"features": [str(f) for f in features], "inputs": inputs, "labels": labels}


def combine(
    mode: str, holdout: Verdict | None, live: Verdict | None, rows: int, min_rows: int
) -> tuple[bool, str, str]:
    """(passed, reason, message) of the gate from the holdout's verdict and the live
    rows' (None: not scored, too few rows)."""
    live_words = f"live labels ({rows} rows)"
    if live is None:
        few = f"{live_words}: fewer than minRows {min_rows}"
        if mode == INSTEAD or holdout is None:
            raise EvaluationError(f"{few}: no verdict without a holdout (mode instead)")
        message = f"{holdout.message}; {few}, judged on the holdout only"
        return holdout.passed, holdout.reason, message
    if holdout is None:
        return live.passed, live.reason, f"{live_words}: {live.message}"
    both = f"holdout: {holdout.message}; {live_words}: {live.message}"
    if not holdout.passed:
        return False, holdout.reason, both
    if not live.passed:
        return False, live.reason, both
    return True, holdout.reason, both
