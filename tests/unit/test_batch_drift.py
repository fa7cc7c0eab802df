"""Drift counts of a batch added up over its shards: never a partial count as the whole."""

from __future__ import annotations

from kubeloop.batch.drift import add_up


def part(rows: int, counts: list[int], reference: str = "abc") -> dict[str, object]:
    return {"rows": rows, "reference": reference, "features": {"x": counts}}


def test_shards_add_up() -> None:
    assert add_up([part(3, [1, 2]), part(4, [4, 0])]) == part(7, [5, 2])
    assert add_up([]) is None


def test_a_shard_without_counts_or_on_other_bins_leaves_no_total() -> None:
    assert add_up([part(3, [1, 2]), None]) is None
    assert add_up([part(3, [1, 2]), part(3, [1, 2], reference="other")]) is None
    assert add_up([part(3, [1, 2]), part(3, [1, 1, 1])]) is None
