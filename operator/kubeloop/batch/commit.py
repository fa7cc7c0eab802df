"""Exactly once: each shard's output is complete, or it is not there; of two attempts
at one shard, the first to commit wins and the other changes nothing of it.

Layout of an output directory (a local one, or an S3 prefix: :mod:`.place`)::

    part-00000-1a2b3c4d.parquet  a shard's file: the shard's number and the attempt's id
    _shards/part-00000.json      the shard's manifest: its input, the run, and the one
                                 file it committed, with its rows, size and sha256
    _manifest.json               the output's manifest, once every shard is in (:mod:`.finalize`)
    .part-00000-1a2b3c4d.parquet.*.tmp  a file being written (local only)

A Job may run two pods for one index for a while (a replacement started while the old
pod is still terminating, or runs on a node that is lost), and S3 has no rename. So
every attempt at a shard writes a file of its own, named with a random attempt id, and
no attempt writes, replaces or deletes a file that another attempt wrote:

1. The shard's manifest there, for this run and this input, naming a file of this
   shard that is there with the recorded size: the shard is done, and skipped.
2. Otherwise the attempt writes its own file: locally under a temporary name, flushed
   and renamed; on S3 straight to its key (an upload is seen only once complete). A
   write that fails is aborted (:class:`.output.ShardWriter`): no Parquet footer, the
   file deleted, no manifest.
3. Before writing the manifest the attempt looks again: a complete manifest written
   meanwhile by another attempt wins, and this attempt deletes its own file (no
   manifest names it) and reports the winner's.
4. Otherwise it writes the manifest (whole, :func:`.place.write_whole`): the commit
   marker, naming exactly the file this attempt wrote.

Files no manifest names (a losing or killed attempt's) are removed when the output's
manifest is written. Without a conditional write (pyarrow's S3 filesystem has none),
3 and 4 are not one step: two attempts committing within the same instant may both
write the manifest. The last one stands; each names a whole file of its own, with its
rows and sha256, and finalization keeps every file a shard manifest names.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from kubeloop.batch import BatchError
from kubeloop.batch import place as places
from kubeloop.batch.output import EXTENSIONS
from kubeloop.batch.place import Place
from kubeloop.batch.shards import Shard

SHARDS_DIR = "_shards"
MANIFEST_FILE = "_manifest.json"
CHUNK_BYTES = 1 << 20
ATTEMPT_BYTES = 4
PART = re.compile(r"^(part-\d{5,})(?:-([0-9a-f]+))?\.(parquet|csv)$")
"""A shard's file: ``part-NNNNN-ATTEMPT.EXT`` (``part-NNNNN.EXT`` from older versions)."""


class OutputFile(BaseModel):
    path: str
    rows: int
    size: int
    sha256: str


class ShardManifest(BaseModel):
    version: Literal[1] = 1
    shard: str
    run: str
    """The run's key: the model and the output's shape (:func:`run_key`)."""
    input: dict[str, Any]
    output: OutputFile
    drift: dict[str, Any] | None = None
    """The shard's inputs counted on the model's profile bins (:mod:`.drift`)."""


def run_key(model_sha256: str, settings: dict[str, Any]) -> str:
    """What makes two runs' shard outputs interchangeable: the same model and the same
    output settings (format, columns). Batch size and parallelism do not count."""
    digest = hashlib.sha256(model_sha256.encode())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()


def new_attempt() -> str:
    """An attempt's id: random, so that two pods of one index never share a name."""
    return secrets.token_hex(ATTEMPT_BYTES)


def part_name(shard: Shard, format: str, attempt: str) -> str:
    return f"{shard.name}-{attempt}.{EXTENSIONS[format]}"


def is_part_of(name: str, shard: Shard, format: str) -> bool:
    """Whether ``name`` is an attempt's file of ``shard`` in ``format``."""
    match = PART.fullmatch(name)
    return (
        match is not None
        and match[1] == shard.name
        and match[2] is not None
        and match[3] == EXTENSIONS[format]
    )


def manifest_name(shard: Shard) -> str:
    return f"{SHARDS_DIR}/{shard.name}.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def to_json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=1) + "\n").encode()


def read_manifest(out: Place, shard: Shard) -> ShardManifest | None:
    raw = places.read_bytes(out, manifest_name(shard))
    try:
        return ShardManifest.model_validate_json(raw) if raw is not None else None
    except ValidationError:
        return None


def completed(out: Place, shard: Shard, run: str, format: str) -> ShardManifest | None:
    """The shard's manifest if the shard is done for this run, else None."""
    manifest = read_manifest(out, shard)
    if (
        manifest is None
        or manifest.shard != shard.name
        or manifest.run != run
        or manifest.input != shard.identity()
        or not is_part_of(manifest.output.path, shard, format)
    ):
        return None
    size = places.size(out, manifest.output.path)
    return manifest if size == manifest.output.size else None


def commit(
    out: Place,
    shard: Shard,
    temp: str,
    name: str,
    rows: int,
    run: str,
    format: str,
    drift: dict[str, Any] | None = None,
) -> ShardManifest:
    """Move this attempt's whole file ``temp`` to ``name`` (nothing to move on S3) and
    vouch for it with the shard's manifest, unless another attempt committed the shard
    first: the manifest that stands, this attempt's or the winner's."""
    places.move_into_place(out, temp, name)
    size = places.size(out, name)
    if size is None:
        raise BatchError(f"{out.show(name)}: not there after it was written")
    manifest = ShardManifest(
        shard=shard.name,
        run=run,
        input=shard.identity(),
        output=OutputFile(path=name, rows=rows, size=size, sha256=places.sha256(out, name)),
        drift=drift,
    )
    winner = completed(out, shard, run, format)
    if winner is not None:
        places.delete(out, name)
        return winner
    places.write_whole(out, manifest_name(shard), to_json(manifest))
    return manifest
