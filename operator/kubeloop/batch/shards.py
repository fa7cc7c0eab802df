"""Shards and their assignment to pods: pure functions, no I/O.

A shard is a CSV file, or a run of consecutive row groups of a Parquet file (small row
groups are joined until a shard holds at least ``min_rows`` rows, so a file written
in many small row groups does not become as many output files). Every pod computes
the same shard list from the same sorted files, and :func:`assign` hands each shard
to exactly one completion index: a retried pod gets the same shards again.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_ROWS = 100_000
DEFAULT_BATCH_ROWS = 65_536
"""Rows read and predicted at a time within a shard: what bounds a worker's memory."""


@dataclass(frozen=True)
class Shard:
    number: int
    """Position in the run's shard list: the output's part number."""
    relpath: str
    format: str
    file_size: int
    row_groups: tuple[int, int] | None
    """[start, stop) row groups of a Parquet file; None for a whole CSV file."""
    rows: int | None
    """Known up front for Parquet (the footer says), None for CSV until read."""
    weight: int
    """What balancing counts: rows for Parquet, bytes for CSV."""

    @property
    def name(self) -> str:
        return f"part-{self.number:05d}"

    def identity(self) -> dict[str, Any]:
        """What the shard's manifest records of its input: a retried pod redoes a
        shard whose input no longer matches."""
        return {
            "file": self.relpath,
            "size": self.file_size,
            "rowGroups": list(self.row_groups) if self.row_groups is not None else None,
            "rows": self.rows,
        }

    def describe(self, path: str | None = None) -> str:
        """The shard for a message: the file (``path``, this pod's, or the relative
        one) and, for Parquet, its row groups."""
        where = path or self.relpath
        if self.row_groups is None:
            return where
        start, stop = self.row_groups
        groups = f"row group {start}" if stop == start + 1 else f"row groups {start}-{stop - 1}"
        return f"{where} ({groups})"


def group_row_groups(rows_per_group: list[int], min_rows: int) -> list[tuple[int, int]]:
    """Consecutive row groups joined into [start, stop) runs of at least ``min_rows``
    rows (the last run may hold fewer); every row group in exactly one run."""
    runs: list[tuple[int, int]] = []
    start, rows = 0, 0
    for i, count in enumerate(rows_per_group):
        rows += count
        if rows >= min_rows:
            runs.append((start, i + 1))
            start, rows = i + 1, 0
    if start < len(rows_per_group):
        runs.append((start, len(rows_per_group)))
    return runs


def assign(shards: list[Shard], index: int, count: int) -> list[Shard]:
    """The shards completion index ``index`` of ``count`` scores, in shard order.

    Greedy by weight (heaviest first, ties by shard number) onto the least loaded
    index (ties by the lowest index): deterministic, so every pod agrees, and each
    shard goes to exactly one index whatever ``count`` is.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if not 0 <= index < count:
        raise ValueError(f"index must be in 0..{count - 1}, not {index}")
    loads = [(0, i) for i in range(count)]  # a heap: the least loaded, lowest index first
    mine: list[Shard] = []
    for shard in sorted(shards, key=lambda s: (-s.weight, s.number)):
        load, target = heapq.heappop(loads)
        heapq.heappush(loads, (load + shard.weight, target))
        if target == index:
            mine.append(shard)
    return sorted(mine, key=lambda s: s.number)
