"""A pod's progress, reported the way a TrainingJob's script reports it
(:mod:`kubeloop.train`, docs/training-progress.md), so the operator reads both alike.

Steps are rows: ``step`` the rows this pod has done (shards found complete count as
done), ``totalSteps`` the rows of its shards (unknown, so left out, while a CSV shard
is unread). Metrics: ``rows_per_second`` (rows scored by this pod since it started
scoring), ``shards_done`` and ``shards_total``. Worker 0 serves the live numbers and
every pod writes its final ones to its termination message.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import kubeloop.train
from kubeloop.batch.report import with_batch

REPORT_INTERVAL = 1.0


class Meter:
    def __init__(
        self,
        total_rows: int | None,
        total_shards: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_rows = total_rows
        self.total_shards = total_shards
        self.rows_done = 0
        self.rows_scored = 0
        self.shards_done = 0
        self._clock = clock
        self._started = clock()
        self._reported = float("-inf")

    def rows_per_second(self) -> float:
        elapsed = self._clock() - self._started
        return self.rows_scored / elapsed if elapsed > 0 else 0.0

    def scored(self, rows: int) -> None:
        """Rows predicted and written (not yet committed)."""
        self.rows_done += rows
        self.rows_scored += rows
        self._maybe_report()

    def shard_done(self, skipped_rows: int = 0) -> None:
        """A shard committed, or found complete (its ``skipped_rows`` count as done)."""
        self.rows_done += skipped_rows
        self.shards_done += 1
        self._maybe_report(force=True)

    def metrics(self) -> dict[str, float]:
        return {
            "rows_per_second": round(self.rows_per_second(), 1),
            "shards_done": self.shards_done,
            "shards_total": self.total_shards,
        }

    def _maybe_report(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._reported < REPORT_INTERVAL:
            return
        self._reported = now
        self.report()

    def report(self) -> None:
        kubeloop.train.report(
            step=self.rows_done, total_steps=self.total_rows, metrics=self.metrics()
        )

    def finish(self, extras: dict[str, Any] | None = None) -> None:
        """The final numbers: every row is known by now, CSV shards' too; ``extras``
        (the model's and the output's identity, drift counts) go with them under
        ``batch`` (:mod:`kubeloop.batch.report`)."""
        self.total_rows = self.rows_done
        self.report()
        path = kubeloop.train.finish(self.metrics())
        if path is not None and extras:
            try:
                path.write_text(with_batch(path.read_text(encoding="utf-8"), extras))
            except OSError as exc:
                why = exc.strerror or exc
                print(f"kubeloop batch: cannot write {path}: {why}", file=sys.stderr)
