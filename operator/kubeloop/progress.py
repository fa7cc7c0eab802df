"""The wire formats in which a training run reports progress and metrics to Kubeloop.

Both are written by :mod:`kubeloop.train` and read by the operator, and a script that
does not use the helper can produce either by hand (docs/training-progress.md).

**Live progress** -- Prometheus text exposition, served by worker 0 (the pod whose
``JOB_COMPLETION_INDEX`` is 0) at ``GET /metrics`` on ``$KUBELOOP_PROGRESS_PORT``
(default 9464). Every gauge is optional::

    kubeloop_training_step 120
    kubeloop_training_total_steps 1000
    kubeloop_training_start_time_seconds 1712000000.5
    kubeloop_training_last_report_time_seconds 1712000360.25
    kubeloop_training_metric{name="loss"} 0.173

``# HELP``/``# TYPE`` lines and other metrics are ignored; metric values that are not
finite are dropped; at most 16 metrics are kept (the first seen), each named by
``[A-Za-z_][A-Za-z0-9_.:/-]*`` in at most 63 characters.

**Final result** -- a JSON object in the container's termination message (the file
``/dev/termination-log``, which Kubernetes caps at 4096 bytes), written when the run
ends::

    {"step": 1000, "totalSteps": 1000, "metrics": {"loss": 0.09, "accuracy": 0.97}}

Every key is optional; steps are non-negative integers and metric values finite
numbers. Anything else (log text, other JSON) is simply not read as a result.

This module uses the standard library only: it is imported by training scripts too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PORT_ENV = "KUBELOOP_PROGRESS_PORT"  # default: kubeloop.names.PROGRESS_PORT
# "1": every pod serves its live progress, not only worker 0 (a BatchPrediction's pods
# each score their own shards, and the operator adds them up).
EVERY_POD_ENV = "KUBELOOP_PROGRESS_EVERY_POD"
TERMINATION_LOG_ENV = "KUBELOOP_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096  # what the kubelet keeps of a termination message
MAX_TEXT_BYTES = 64 * 1024  # parse_text reads no more than this
MAX_METRICS = 16
MAX_NAME_LENGTH = 63
MAX_STEP = 2**63 - 1  # an int64, as the status stores it
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")

STEP = "kubeloop_training_step"
TOTAL_STEPS = "kubeloop_training_total_steps"
START_TIME = "kubeloop_training_start_time_seconds"
LAST_REPORT_TIME = "kubeloop_training_last_report_time_seconds"
METRIC = "kubeloop_training_metric"

_HELP = {
    STEP: "The last step the training run reported.",
    TOTAL_STEPS: "The steps the training run will take.",
    START_TIME: "Unix time of the run's first report.",
    LAST_REPORT_TIME: "Unix time of the run's latest report.",
    METRIC: "The latest value of a training metric, by name.",
}

# One sample line: name, optional {labels}, value, optional timestamp.
_SAMPLE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?:Inf|NaN)$", re.I)
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Report:
    """What a run said about itself: every field optional.

    ``started`` and ``updated`` are unix seconds (the run's own clock); the final JSON
    message carries neither.
    """

    step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    updated: float | None = None

    @property
    def percent(self) -> float | None:
        """``step / total_steps`` in percent, within 0..100; None without both."""
        if self.step is None or self.total_steps is None or self.total_steps <= 0:
            return None
        return min(100.0, max(0.0, 100.0 * self.step / self.total_steps))


def valid_name(name: object) -> bool:
    """A metric name both formats accept."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_NAME_LENGTH
        and METRIC_NAME.match(name) is not None
    )


def _valid_step(value: object, *, integral_floats: bool = False) -> int | None:
    """A step count: an int (not a bool) in 0..MAX_STEP, else None. With
    ``integral_floats``, ``12.0`` counts as 12 (the text format has one number type)."""
    if isinstance(value, bool):
        return None
    if integral_floats and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_STEP:
        return value
    return None


def _valid_metrics(items: Iterable[tuple[object, object]]) -> dict[str, float]:
    """The first MAX_METRICS entries with a valid name and a finite number (not a bool)."""
    kept: dict[str, float] = {}
    for name, value in items:
        if len(kept) >= MAX_METRICS:
            break
        if not valid_name(name) or name in kept:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            continue
        if math.isfinite(number):
            kept[str(name)] = number
    return kept


# -- Prometheus text ------------------------------------------------------------------


def _format_value(value: float) -> str:
    """A sample value as the exposition format writes it (NaN, +Inf, -Inf spelled so)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label(value: str) -> str:
    """A label value escaped for the exposition format: backslash, quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape_label(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], value)


def _gauge(name: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", *samples]


def render_text(report: Report) -> str:
    """The report as Prometheus text exposition (version 0.0.4); None fields are left out."""
    lines: list[str] = []
    for name, value in (
        (STEP, report.step),
        (TOTAL_STEPS, report.total_steps),
        (START_TIME, report.started),
        (LAST_REPORT_TIME, report.updated),
    ):
        if value is not None:
            lines += _gauge(name, [f"{name} {_format_value(value)}"])
    if report.metrics:
        samples = [
            f'{METRIC}{{name="{escape_label(key)}"}} {_format_value(value)}'
            for key, value in report.metrics.items()
        ]
        lines += _gauge(METRIC, samples)
    return "".join(line + "\n" for line in lines)


def _parse_labels(text: str) -> dict[str, str] | None:
    """``a="x",b="y"`` as a dict; None when it does not parse."""
    labels: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None:
            return None
        labels[match.group(1)] = _unescape_label(match.group(2))
        position = match.end()
    return labels


def _parse_number(text: str) -> float | None:
    """A sample value; None when it is not a number in the exposition format's syntax."""
    if _NUMBER.match(text) is None:
        return None
    return float(text)


def _parse_sample(line: str) -> tuple[str, dict[str, str], float] | None:
    """(name, labels, value) of one sample line; None for comments and garbage."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    match = _SAMPLE.match(line)
    if match is None:
        return None
    labels = _parse_labels(match.group("labels") or "")
    value = _parse_number(match.group("value"))
    if labels is None or value is None:
        return None
    return match.group("name"), labels, value


def parse_text(text: str) -> Report | None:
    """The Report in a Prometheus text page, or None when it holds none of our gauges.

    Tolerant and bounded: other metrics, comments and lines that do not parse are
    skipped, the first of a repeated gauge wins, at most MAX_METRICS metrics with valid
    names and finite values are kept, and a page over 64 KiB is not read at all.
    """
    if not isinstance(text, str) or len(text) > MAX_TEXT_BYTES:
        return None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        return None
    scalars: dict[str, float] = {}
    metric_items: list[tuple[object, object]] = []
    for line in text.splitlines():
        sample = _parse_sample(line)
        if sample is None:
            continue
        name, labels, value = sample
        if name == METRIC:
            if "name" in labels:
                metric_items.append((labels["name"], value))
        elif name in _HELP and name not in scalars:
            scalars[name] = value
    return _report_from(scalars, _valid_metrics(metric_items))


def _timestamp(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _report_from(scalars: Mapping[str, float], metrics: dict[str, float]) -> Report | None:
    report = Report(
        step=_valid_step(scalars.get(STEP), integral_floats=True),
        total_steps=_valid_step(scalars.get(TOTAL_STEPS), integral_floats=True),
        metrics=metrics,
        started=_timestamp(scalars.get(START_TIME)),
        updated=_timestamp(scalars.get(LAST_REPORT_TIME)),
    )
    return None if report == Report() else report


# -- the final JSON message -----------------------------------------------------------


def _dump(document: Mapping[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def encode_final(report: Report) -> str:
    """The termination message: compact JSON, at most MAX_MESSAGE_BYTES bytes.

    Keys whose value is None are left out, as are metrics parse_final would drop
    (non-finite values, invalid names, all after the first MAX_METRICS); if it is still
    too long, metrics are dropped from the end until it fits.
    """
    document: dict[str, Any] = {}
    step, total = _valid_step(report.step), _valid_step(report.total_steps)
    if step is not None:
        document["step"] = step
    if total is not None:
        document["totalSteps"] = total
    metrics = list(_valid_metrics(report.metrics.items()).items())
    while True:
        if metrics:
            document["metrics"] = dict(metrics)
        else:
            document.pop("metrics", None)
        message = _dump(document)  # ASCII: its length is its size in bytes
        if len(message) <= MAX_MESSAGE_BYTES or not metrics:
            return message if len(message) <= MAX_MESSAGE_BYTES else "{}"
        metrics.pop()


def parse_final(text: str | None) -> Report | None:
    """The Report in a pod's termination message, or None when it holds none.

    Never raises: None for no message, one over MAX_MESSAGE_BYTES, one that is not a
    JSON object, and one in which nothing valid is left once invalid entries (negative
    or non-integer steps, metrics that are not finite numbers or whose names are
    invalid, metrics after the first MAX_METRICS) are dropped.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_MESSAGE_BYTES:
        return None
    try:
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            return None
        document = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError: not JSON, a lone surrogate, or an int of too many digits;
        # RecursionError: arrays nested deeper than the decoder follows.
        return None
    if not isinstance(document, dict):
        return None
    raw_metrics = document.get("metrics")
    metrics = _valid_metrics(raw_metrics.items()) if isinstance(raw_metrics, dict) else {}
    report = Report(
        step=_valid_step(document.get("step")),
        total_steps=_valid_step(document.get("totalSteps")),
        metrics=metrics,
    )
    return None if report == Report() else report
