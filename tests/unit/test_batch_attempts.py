"""Two attempts at one shard at once, and writes that fail half way, on a claim and on
S3 (moto's server on loopback): a Job can run two pods of one index for a while (a
replacement started while the old pod still terminates, or runs on a lost node).

Each attempt writes a file of its own; the first to commit wins; the other neither
removes nor replaces what the winner committed, whether it fails or finishes; and the
output's manifest lists every input row exactly once, in files that say what they hold.
A write that fails is aborted: no footer, no file left, no manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from test_batch_s3 import (  # pytest puts tests/unit on sys.path
    BUCKET,
    endpoint,
    objects,
    put_dataset,
    read_bytes,
    read_output,
    s3,
)
from test_batch_scoring import model_dir, quiet_progress, rows

from kubeloop.batch import place as places
from kubeloop.batch.commit import SHARDS_DIR
from kubeloop.batch.features import OutputSpec
from kubeloop.batch.locations import place_of
from kubeloop.batch.output import ShardWriter
from kubeloop.batch.run import Request, finalize_run, prepare_run, score
from kubeloop.batch.scorer import Job, score_shard

__all__ = ["endpoint", "model_dir", "quiet_progress", "s3"]  # fixtures of the other modules

SHARD = 2  # a.parquet's third row group: 200 rows, 4 batches of 64 rows or fewer


@dataclass(frozen=True)
class Store:
    """Where a run reads and writes: a claim's directory or a bucket, with a
    filesystem whose paths start with the bucket's name either way."""

    fs: pafs.FileSystem
    root: str

    def request(self, model: Path) -> Request:
        return Request(
            model_dir=str(model),
            input=f"{self.root}/{BUCKET}/in/",
            output=f"{self.root}/{BUCKET}/out/",
            spec=OutputSpec(passthrough=("id",)),
            batch_rows=64,
            min_shard_rows=150,
        )


@pytest.fixture(params=["claim", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "s3":
        yield Store(request.getfixturevalue("s3"), "s3:/")
        return
    local = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    local.create_dir(f"{BUCKET}/in/day=2")
    yield Store(local, f"file://{tmp_path}")


def shard_manifest(store: Store, number: int) -> dict[str, Any]:
    return json.loads(read_bytes(store.fs, f"out/{SHARDS_DIR}/part-{number:05d}.json"))


def attempt(req: Request, progress: Any) -> Any:
    """One pod's attempt at shard ``SHARD`` alone, calling ``progress`` after each
    batch it writes, as the scorer does."""
    prepared = prepare_run(req)
    job = Job(req.model_dir, prepared.out, prepared.layout, req.spec, prepared.run, 64)
    return lambda: score_shard(job, prepared.model, prepared.layout.shards[SHARD], progress)


def check_output(store: Store, expected: pa.Table) -> dict[str, Any]:
    """Every input row once, in files the manifest lists with their rows and sha256,
    and no other shard file in the output."""
    manifest, table = read_output(store.fs)
    assert manifest["rows"] == table.num_rows == expected.num_rows
    assert table.sort_by("id").column("id").to_pylist() == expected.column("id").to_pylist()
    for entry in manifest["files"]:
        data = read_bytes(store.fs, f"out/{entry['path']}")
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry
    parts = {name for name in objects(store.fs) if name.startswith("part-")}
    assert parts == {f["path"] for f in manifest["files"]}
    assert not [name for name in objects(store.fs) if ".tmp" in name]
    return manifest


@pytest.mark.parametrize("loser", ["fails", "finishes"])
def test_a_second_attempt_at_a_shard_never_undoes_the_first_to_commit(
    model_dir: Path, store: Store, loser: str
) -> None:
    """The slow attempt writes one batch; a whole second pod of the same index then
    scores every shard, this one included, and writes the output's manifest; then the
    slow attempt fails (an error, a lost node's pod) or finishes. Either way the
    winner's file and manifest stand, and the loser leaves nothing behind."""
    expected = put_dataset(store.fs)
    req = store.request(model_dir)
    won: dict[str, Any] = {}

    def slow_progress(rows: int) -> None:
        if not won:
            won["summary"] = score(req, 0, 1, workers=1)  # the other pod, start to end
            won["manifest"] = shard_manifest(store, SHARD)
            won["bytes"] = read_bytes(store.fs, f"out/{won['manifest']['output']['path']}")
        elif loser == "fails":
            raise OSError("the slow attempt's disk is gone")

    manifest, skipped = attempt(req, slow_progress)()
    assert won["summary"]["output"]["rows"] == expected.num_rows
    assert not skipped and manifest.model_dump() == won["manifest"]
    assert shard_manifest(store, SHARD) == won["manifest"]
    path = won["manifest"]["output"]["path"]
    assert read_bytes(store.fs, f"out/{path}") == won["bytes"]
    assert [n for n in objects(store.fs) if n.startswith(f"part-{SHARD:05d}")] == [path]

    finalize_run(req)  # again, as a late pod does: the same output
    assert check_output(store, expected)["files"][SHARD]["path"] == path


def test_the_first_attempt_to_commit_wins_and_the_second_skips(
    model_dir: Path, store: Store
) -> None:
    """Both attempts write the whole shard; the one that commits second finds the
    first's manifest, deletes its own file and keeps the first's."""
    expected = put_dataset(store.fs)
    req = store.request(model_dir)
    first: dict[str, Any] = {}

    def second_commits_first(rows: int) -> None:
        if not first:
            first["manifest"] = attempt(req, lambda rows: None)()[0]

    manifest, _ = attempt(req, second_commits_first)()
    assert manifest == first["manifest"]
    assert shard_manifest(store, SHARD) == manifest.model_dump()
    score(req, 0, 1, workers=1)
    assert check_output(store, expected)["files"][SHARD] == manifest.output.model_dump()


def test_a_write_that_fails_leaves_no_file_and_never_a_footer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a Parquet writer would write a footer: the rows so far as a valid file.
    An aborted write leaves nothing; and even before its deletion, what it wrote is not
    a Parquet file a reader would take as output."""
    place = place_of(f"{store.root}/{BUCKET}/out/")
    places.make_folder(place)
    batch = rows(100, 1).to_batches()[0]

    def fail_after_two_batches(name: str) -> None:
        with pytest.raises(RuntimeError), ShardWriter(place, name, "parquet") as writer:
            writer.write(batch)
            writer.write(batch)
            raise RuntimeError("a shard failing half way")

    fail_after_two_batches("part-00000-aaaaaaaa.parquet")
    assert objects(store.fs) == {}

    monkeypatch.setattr(places, "delete", lambda place, name: None)  # see what was there
    fail_after_two_batches("part-00000-bbbbbbbb.parquet")
    data = read_bytes(store.fs, "out/part-00000-bbbbbbbb.parquet")
    assert len(data) > 0 and data[-4:] != b"PAR1"
    with pytest.raises(pa.ArrowInvalid, match="magic bytes"):
        pq.read_table(pa.BufferReader(data))
