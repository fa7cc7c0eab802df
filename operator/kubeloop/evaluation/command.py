"""``kubeloop evaluate``: score a champion and a challenger model directory on the same
labelled data and decide with :func:`kubeloop.evaluation.gate.decide`.

The result is one JSON-able object (:func:`evaluate`); the CLI prints it and writes it,
compact, to the container's termination log, where the operator reads the verdict.
Kubernetes keeps at most 4096 bytes of a termination message, so
:func:`termination_message` and :func:`error_message` always fit in that.

Security: ``model.joblib`` is a pickle; evaluate only model directories from a source
you trust as much as the image that runs this. The manifest check proves that the
files are whole, not who wrote them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kubeloop.evaluation import EvaluationError, live
from kubeloop.evaluation.data import (
    Table,
    declared_label_column,
    local_path,
    read_table,
    resolve_label_column,
    select,
)
from kubeloop.evaluation.gate import Verdict, decide
from kubeloop.evaluation.metrics import get_metric, score
from kubeloop.modeldir import LoadedModel, ModelLoadError, load_model, verify

TERMINATION_MESSAGE_LIMIT = 4096
"""Bytes of a termination message that Kubernetes keeps."""


def evaluate(
    champion: str | None,
    challenger: str,
    data: str | None,
    metric: str,
    label_column: str | None,
    min_improvement: float,
    floor: float | None,
    live_urls: list[str] | None = None,
    live_min_rows: int = 1,
    live_mode: str = live.BESIDE,
) -> dict[str, Any]:
    """Score both models on ``data`` with ``metric`` (and on the live labelled rows the
    pods at ``live_urls`` keep, as ``live_mode`` says: evaluation/live.py) and decide;
    the result is described in docs/evaluation.md. Raises :class:`EvaluationError` when
    no verdict can be reached (bad input, a model that does not load or cannot be
    scored, too few live rows without a holdout)."""
    spec = get_metric(metric)
    if live_mode not in live.MODES:
        raise EvaluationError(f"live mode {live_mode!r}: use {' or '.join(live.MODES)}")
    if data is None and not (live_urls and live_mode == live.INSTEAD):
        raise EvaluationError("no data: give --data, or --live-rows with --live-mode instead")
    models = {"challenger": load_side("challenger", challenger)}
    if champion:
        models["champion"] = load_side("champion", champion)
    holdout = _scored(models, spec.name, read_table(data), label_column) if data else None
    if live_mode == live.INSTEAD:
        holdout = None
    held = None if holdout is None else _decided(spec.name, holdout[0], min_improvement, floor)
    result: dict[str, Any] = {"metric": spec.name, "direction": spec.direction}
    on_live = live_scored = None
    if live_urls:
        fetched = live.fetch(live_urls)
        result["live"] = {"rows": fetched.rows, "minRows": live_min_rows, "mode": live_mode}
        if fetched.problems:
            result["live"]["problems"] = "; ".join(fetched.problems)[:512]
        if fetched.table is not None and fetched.rows >= live_min_rows:
            live_scored = _scored(models, spec.name, fetched.table, fetched.label_column)
            on_live = _decided(spec.name, live_scored[0], min_improvement, floor)
            result["live"].update(
                champion=_finite(live_scored[0].get("champion")),
                challenger=_finite(live_scored[0]["challenger"]),
                passed=on_live.passed,
                reason=on_live.reason,
            )
    if live_urls:
        passed, reason, message = live.combine(
            live_mode, held, on_live, result["live"]["rows"], live_min_rows
        )
    else:
        assert held is not None
        passed, reason, message = held.passed, held.reason, held.message
    # The scores the verdict rests on first: the holdout's, else the live rows'.
    first, verdict = (holdout, held) if holdout is not None else (live_scored, on_live)
    assert first is not None and verdict is not None  # else combine() raised
    result.update(
        champion=_finite(first[0].get("champion")),
        challenger=_finite(first[0]["challenger"]),
        improvement=_finite(verdict.improvement),
        minImprovement=min_improvement,
        floor=floor,
        passed=passed,
        verdict="Passed" if passed else "Rejected",
        reason=reason,
        message=message,
        rows=first[1],
    )
    return result


def _scored(
    models: dict[str, LoadedModel], metric: str, table: Table, label_column: str | None
) -> tuple[dict[str, float], int]:
    """Each side's score on ``table``, and its rows."""
    declared = [_declared(side, model) for side, model in models.items()]
    label = resolve_label_column(table, label_column, declared)
    scores: dict[str, float] = {}
    for side, model in models.items():
        try:
            selected = select(table, model, label)
            scores[side] = score(model, metric, selected.features, selected.labels)
        except EvaluationError as exc:
            raise EvaluationError(f"{side} model: {exc}") from exc
    return scores, table.rows


def _decided(
    metric: str, scores: dict[str, float], min_improvement: float, floor: float | None
) -> Verdict:
    return decide(metric, scores.get("champion"), scores["challenger"], min_improvement, floor)


def _finite(value: float | None) -> float | None:
    """A score for JSON, which has no NaN: null instead (the message says NaN)."""
    return value if value is not None and math.isfinite(value) else None


def _declared(side: str, model: LoadedModel) -> str | None:
    try:
        return declared_label_column(model)
    except EvaluationError as exc:
        raise EvaluationError(f"{side} model: {exc}") from exc


REMOTE_SCHEMES = ("http://", "https://", "s3://")


def load_side(side: str, uri: str) -> LoadedModel:
    """Verify the model directory at ``uri`` against its manifest (when it has one)
    and load it; errors name the side (champion or challenger). A remote model
    (``http(s)://``, ``s3://``) is fetched first, as the model server does, into a
    temporary directory, which checks every file against the manifest on the way."""
    if uri.startswith(REMOTE_SCHEMES):
        return _fetched(side, uri)
    try:
        model_dir = local_path(uri)
        if not model_dir.is_dir():
            raise EvaluationError(f"{model_dir}: no such directory")
        # A directory made by hand, without a manifest, is scored unchecked
        # (docs/evaluation.md); one with a manifest must match it.
        verify(model_dir, required=False)
        return load_model(model_dir)
    except (EvaluationError, ModelLoadError) as exc:
        raise EvaluationError(f"{side} model: {exc}") from exc


def _fetched(side: str, uri: str) -> LoadedModel:
    import tempfile

    from kubeloop.serving.fetch import FetchError, fetch_model

    with tempfile.TemporaryDirectory(prefix=f"kubeloop-{side}-") as tmp:
        try:
            fetch_model(uri, tmp)
            # Loaded into memory: the files may go with the directory.
            return load_model(tmp)
        except (FetchError, ModelLoadError) as exc:
            raise EvaluationError(f"{side} model: {exc}") from exc


def to_json(result: dict[str, Any], indent: int | None = None) -> str:
    """Strict JSON (no NaN): compact without ``indent``."""
    separators = (",", ":") if indent is None else None
    return json.dumps(result, indent=indent, separators=separators, allow_nan=False)


def termination_message(result: dict[str, Any]) -> str:
    """``result`` as compact JSON within the termination-message limit: without
    ``message`` if it would not fit (the other fields are short)."""
    text = to_json(result)
    if _fits(text):
        return text
    return to_json({k: v for k, v in result.items() if k != "message"})


def error_message(error: str) -> str:
    """``{"error": ...}`` within the termination-message limit, the error cut short
    (and ending in ``...``) if need be."""
    text = to_json({"error": error})
    while not _fits(text):
        excess = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
        # JSON writes each character as at least one byte: cutting `excess` characters
        # (and 3 for the ellipsis) makes it fit or shrinks it for the next round.
        error = error[: max(0, len(error) - excess - 4)] + "..."
        text = to_json({"error": error})
    return text


def _fits(text: str) -> bool:
    return len(text.encode()) <= TERMINATION_MESSAGE_LIMIT


def write_termination_log(path: str, text: str) -> None:
    """Write the termination message (the kubelet reads it when the container ends)."""
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise EvaluationError(
            f"cannot write the termination log {path}: {exc.strerror or exc}"
        ) from exc


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`evaluate`'s result."""

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.6g}"

    rows = [
        ("metric", f"{result['metric']} ({result['direction']} is better)"),
        ("champion", show(result["champion"])),
        ("challenger", show(result["challenger"])),
        ("verdict", f"{result['verdict']} ({result['reason']})"),
        ("message", result["message"]),
        ("rows", str(result["rows"])),
    ]
    return "\n".join(f"{name:<12}{value}" for name, value in rows)
