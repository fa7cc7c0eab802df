"""Batch prediction's pure parts: shards from row groups, their assignment to pods
(every shard exactly once, for any parallelism and layout), input locations, and the
pod's CPU count."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kubeloop.batch import BatchError
from kubeloop.batch.cpus import quota_cpus
from kubeloop.batch.locations import check_apart, list_inputs, local_path
from kubeloop.batch.shards import Shard, assign, group_row_groups


def shard(number: int, weight: int) -> Shard:
    return Shard(number, f"f{number}.parquet", "parquet", 1, (0, 1), weight, weight)


def test_row_groups_are_joined_into_runs_covering_each_once() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        counts = [rng.choice([0, 1, 5, 100, 1000, 70_000]) for _ in range(rng.randint(0, 30))]
        min_rows = rng.choice([1, 10, 1000, 100_000, 10**9])
        runs = group_row_groups(counts, min_rows)
        covered = [g for start, stop in runs for g in range(start, stop)]
        assert covered == list(range(len(counts)))
        assert all(start < stop for start, stop in runs)
        # Every run but the last reaches min_rows; a run ends as soon as it does.
        for start, stop in runs[:-1]:
            assert sum(counts[start:stop]) >= min_rows
            assert sum(counts[start : stop - 1]) < min_rows


def test_one_row_group_per_shard_when_groups_are_large() -> None:
    assert group_row_groups([200_000, 150_000, 5], 100_000) == [(0, 1), (1, 2), (2, 3)]
    assert group_row_groups([10, 10, 10, 10, 10], 25) == [(0, 3), (3, 5)]
    assert group_row_groups([], 5) == []


def test_every_shard_goes_to_exactly_one_index_for_any_parallelism() -> None:
    rng = random.Random(11)
    for _ in range(150):
        shards = [shard(i, rng.choice([1, 3, 10, 1000, 99_999])) for i in range(rng.randint(0, 60))]
        for count in (1, 2, 3, 4, 7, 16, 61, 100):
            parts = [assign(shards, index, count) for index in range(count)]
            numbers = sorted(s.number for part in parts for s in part)
            assert numbers == list(range(len(shards))), (len(shards), count)
            for part in parts:
                assert [s.number for s in part] == sorted(s.number for s in part)
            # Deterministic: a retried pod (or another pod) computes the same split.
            assert parts == [assign(list(reversed(shards)), i, count) for i in range(count)]
            # Greedy heaviest-first: no index carries more than one shard's weight above
            # the lightest.
            loads = [sum(s.weight for s in part) for part in parts]
            if shards:
                assert max(loads) - min(loads) <= max(s.weight for s in shards)


def test_more_pods_than_shards_leaves_some_idle() -> None:
    shards = [shard(0, 5), shard(1, 5)]
    parts = [assign(shards, i, 4) for i in range(4)]
    assert [len(p) for p in parts] == [1, 1, 0, 0]


@pytest.mark.parametrize(("index", "count"), [(0, 0), (-1, 2), (2, 2)])
def test_an_index_outside_the_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError):
        assign([shard(0, 1)], index, count)


def test_shard_identity_and_description() -> None:
    s = Shard(3, "a/b.parquet", "parquet", 1234, (2, 5), 300, 300)
    assert s.name == "part-00003"
    assert s.identity() == {"file": "a/b.parquet", "size": 1234, "rowGroups": [2, 5], "rows": 300}
    assert s.describe() == "a/b.parquet (row groups 2-4)"
    assert s.describe("/mnt/x/a/b.parquet") == "/mnt/x/a/b.parquet (row groups 2-4)"
    assert Shard(0, "c.csv", "csv", 9, None, None, 9).describe() == "c.csv"


# -- locations ------------------------------------------------------------------------


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_directory_means_its_data_files_at_any_depth(tmp_path: Path) -> None:
    for name in ("b.csv", "a.parquet", "sub/c.pq", "sub/deeper/d.CSV"):
        touch(tmp_path / name)
    for name in ("_SUCCESS", ".a.parquet.crc", "_tmp/e.csv", ".hidden/f.csv", "README.md"):
        touch(tmp_path / name)
    files = list_inputs(str(tmp_path))
    assert [f.relpath for f in files] == ["a.parquet", "b.csv", "sub/c.pq", "sub/deeper/d.CSV"]
    assert [f.format for f in files] == ["parquet", "csv", "parquet", "csv"]
    assert list_inputs(f"file://{tmp_path}") == files


def test_a_glob_and_a_single_file(tmp_path: Path) -> None:
    for name in ("day=1/x.parquet", "day=2/y.parquet", "day=2/z.csv"):
        touch(tmp_path / name)
    files = list_inputs(f"file://{tmp_path}/**/*.parquet")
    assert [f.relpath for f in files] == ["day=1/x.parquet", "day=2/y.parquet"]
    single = list_inputs(str(tmp_path / "day=2" / "z.csv"))
    assert [(f.relpath, f.size) for f in single] == [("z.csv", 1)]
    touch(tmp_path / "notes.txt")
    with pytest.raises(BatchError, match=r"notes.txt: unsupported file type '.txt'"):
        list_inputs(str(tmp_path / "*.txt"))


def test_locations_that_name_nothing_say_so(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="nope: no such file or directory"):
        list_inputs(str(tmp_path / "nope"))
    with pytest.raises(BatchError, match="no file matches"):
        list_inputs(str(tmp_path / "*.csv"))
    touch(tmp_path / "README.md")
    with pytest.raises(BatchError, match=r"no \.csv or \.parquet files"):
        list_inputs(str(tmp_path))


def test_pvc_locations_are_the_claims_mount_and_s3_is_not_a_path() -> None:
    assert local_path("pvc://data/scores/in") == Path("/mnt/pvc/data/scores/in")
    assert local_path("file:///srv/in") == Path("/srv/in")
    with pytest.raises(BatchError, match="an S3 location, not a path"):
        local_path("s3://bucket/in/")
    with pytest.raises(BatchError, match="unsupported scheme 'gs'"):
        local_path("gs://bucket/in/")


def test_output_and_input_must_not_overlap(tmp_path: Path) -> None:
    check_apart(str(tmp_path / "in"), str(tmp_path / "out"))
    for output in ("in", "in/out"):
        with pytest.raises(BatchError, match="overlap"):
            check_apart(str(tmp_path / "in"), str(tmp_path / output))
    with pytest.raises(BatchError, match="overlap"):
        check_apart(str(tmp_path / "in" / "*.csv"), str(tmp_path / "in" / "scores"))
    with pytest.raises(BatchError, match="overlap"):
        check_apart(str(tmp_path / "out" / "in"), str(tmp_path / "out"))


def test_s3_output_and_input_must_not_overlap(tmp_path: Path) -> None:
    check_apart("s3://data/in/", "s3://data/out/")
    check_apart("s3://data/in/", "s3://other/in/")
    check_apart("s3://data/in/", str(tmp_path / "in"))
    check_apart("s3://data/input/", "s3://data/in")  # a key prefix, not a folder
    for output in ("s3://data/in", "s3://data/in/scores/", "s3://data/"):
        with pytest.raises(BatchError, match="overlap"):
            check_apart("s3://data/in/", output)
    with pytest.raises(BatchError, match="overlap"):
        check_apart("s3://data/in/**/*.parquet", "s3://data/in/scores")


# -- cores ------------------------------------------------------------------------------


def test_the_pods_cpu_limit_counts_not_the_nodes_cores() -> None:
    assert quota_cpus("max 100000\n") is None
    assert quota_cpus("200000 100000\n") == 2
    assert quota_cpus("150000 100000") == 2  # 1.5 cores: two processes, each one throttled
    assert quota_cpus("50000 100000") == 1
    assert quota_cpus(None, "-1", "100000") is None
    assert quota_cpus(None, "400000", "100000") == 4
    assert quota_cpus(None) is None
    assert quota_cpus("garbage") is None


def test_the_command_line_loads_pyarrow_only_for_a_batch_command() -> None:
    """`kubeloop run` builds the same parser: the operator must not pay for pyarrow."""
    code = "import sys; from kubeloop.cli import build_parser; build_parser(); " + (
        "print(sorted(m for m in ('pyarrow', 'sklearn') if m in sys.modules))"
    )
    operator = str(Path(__file__).resolve().parents[2] / "operator")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": operator},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
