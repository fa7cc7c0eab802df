"""The most recent labelled rows this server was sent: a feedback record that carries the
request's ``inputs`` beside its label is kept (inputs and label) in a bounded ring, so
that a retrain's evaluation can score the champion and the challenger on live labelled
traffic (``GET /v2/models/{name}/feedback/rows``, docs/quality.md).

Memory is fixed when the model loads, whatever clients send: ``capacity`` rows of the
model's features (float64) and a label each, at most ``MAX_BYTES`` in all. A full ring
overwrites its oldest row and counts it in ``evicted``. Each worker process keeps its
own ring; the route reads every worker's and answers the newest ``capacity`` rows.
"""

from __future__ import annotations

import csv
import io
import math
import time
from typing import Any

import numpy as np

from kubeloop.serving.protocol import bad

DEFAULT_CAPACITY = 10_000
MAX_BYTES = 64 << 20


class LabelledRows:
    """A ring of (received time, inputs, label); mutated on the event loop only."""

    def __init__(
        self,
        feature_names: list[str],
        class_labels: list[str] | None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        allow_nan: bool = False,
    ) -> None:
        """``class_labels`` for a classifier (a label is kept as its index), else None."""
        self.feature_names = list(feature_names)
        self.class_labels = class_labels
        self.allow_nan = allow_nan
        width = len(self.feature_names) + 2  # the features, the label and the time
        self.capacity = max(0, min(capacity, MAX_BYTES // (8 * width)))
        self._inputs = np.zeros((self.capacity, len(self.feature_names)), dtype=np.float64)
        self._labels = np.zeros(self.capacity, dtype=np.float64)
        self._times = np.zeros(self.capacity, dtype=np.float64)
        self.kept = 0  # rows ever added
        self.evicted = 0

    @property
    def rows(self) -> int:
        return min(self.kept, self.capacity)

    def parse(self, record: dict[str, Any], where: str) -> np.ndarray | None:
        """A record's ``inputs`` (optional) as one row in the model's feature order: a
        list in that order or an object by feature name. Raises a 400 when malformed."""
        inputs = record.get("inputs")
        if inputs is None:
            return None
        names = self.feature_names
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            if missing or len(inputs) != len(names):
                extra = sorted(set(inputs) - set(names))[:5]
                raise bad(
                    f"{where}: 'inputs' must name exactly the model's features "
                    f"({', '.join(names)}); missing {missing[:5]}, unknown {extra}"[:300]
                )
            values = [inputs[n] for n in names]
        elif isinstance(inputs, list):
            if len(inputs) != len(names):
                raise bad(
                    f"{where}: 'inputs' holds {len(inputs)} values, the model has "
                    f"{len(names)} features"
                )
            values = inputs
        else:
            raise bad(f"{where}: 'inputs' must be a list or an object of the model's features")
        row = np.empty(len(names), dtype=np.float64)
        for i, value in enumerate(values):
            row[i] = self._value(value, f"{where}: inputs[{names[i]!r}]")
        return row

    def _value(self, value: Any, where: str) -> float:
        if value is None and self.allow_nan:
            return math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return number
        raise bad(f"{where} must be a finite number, got {value!r}"[:200])

    def add(self, rows: list[np.ndarray], labels: list[float], now: float | None = None) -> None:
        """Keep ``rows`` with their labels (a class index, or a regressor's value)."""
        if not self.capacity:
            self.evicted += len(rows)
            return
        at = time.time() if now is None else now
        for row, label in zip(rows, labels, strict=True):
            slot = self.kept % self.capacity
            if self.kept >= self.capacity:
                self.evicted += 1
            self._inputs[slot], self._labels[slot], self._times[slot] = row, label, at
            self.kept += 1

    def snapshot(self) -> dict[str, Any]:
        """The rows, oldest first, as one JSON-able object (columns by name)."""
        order = np.arange(self.rows)
        if self.kept > self.capacity:
            order = np.roll(order, -(self.kept % self.capacity))
        labels: list[Any] = self._labels[order].tolist()
        if self.class_labels is not None:
            labels = [self.class_labels[int(i)] for i in labels]
        return {
            "features": self.feature_names,
            "rows": len(order),
            "capacity": self.capacity,
            "evicted": self.evicted,
            "times": self._times[order].tolist(),
            "inputs": self._inputs[order].tolist(),
            "labels": labels,
        }


def merge(snapshots: list[dict[str, Any]], capacity: int) -> dict[str, Any]:
    """Several workers' snapshots as one: the newest ``capacity`` rows, oldest first,
    and the evictions of all."""
    first = snapshots[0]
    rows = [
        (t, x, y)
        for s in snapshots
        for t, x, y in zip(s["times"], s["inputs"], s["labels"], strict=True)
    ]
    rows.sort(key=lambda r: r[0])
    dropped = max(0, len(rows) - capacity)
    rows = rows[dropped:]
    return {
        "features": first["features"],
        "rows": len(rows),
        "capacity": capacity,
        "evicted": sum(int(s["evicted"]) for s in snapshots) + dropped,
        "times": [r[0] for r in rows],
        "inputs": [r[1] for r in rows],
        "labels": [r[2] for r in rows],
    }


LABEL_COLUMN = "label"


def to_csv(snapshot: dict[str, Any]) -> str:
    """The rows as CSV: the features, then ``label`` (``label_`` beside a feature of
    that name)."""
    label = LABEL_COLUMN
    while label in snapshot["features"]:
        label += "_"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*snapshot["features"], label])
    for inputs, value in zip(snapshot["inputs"], snapshot["labels"], strict=True):
        writer.writerow([*(repr(float(v)) for v in inputs), value])
    return out.getvalue()
