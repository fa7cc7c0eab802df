"""Exactly once: each shard's output is complete, or it is not there.

Layout of an output directory (a local one, or an S3 prefix: :mod:`.place`)::

    part-00000.parquet        one file per shard, named by the shard's number
    _shards/part-00000.json   the shard's manifest: its input, the run, rows, sha256
    _manifest.json            the output's manifest, written once every shard is in
    .part-00000.parquet.*.tmp a shard being written (or left by a killed pod; local only)

A shard is written whole before its manifest is written: locally under a temporary
name, flushed and renamed; on S3 straight to its key, since an upload is seen only once
complete (S3 has no rename). Its manifest (itself written whole) is the commit marker:
a manifest present, naming the file with the size it has, means the file is whole. A
retried pod skips a shard whose manifest matches (same input, same run, the file there
with the recorded size) and redoes any other, after removing its stale manifest first
and then its temporary leftovers. Readers such as pyarrow's datasets and Spark skip
names starting with ``_`` and ``.``; the output's manifest lists the files that count.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from kubeloop.batch import BatchError
from kubeloop.batch import place as places
from kubeloop.batch.drift import add_up
from kubeloop.batch.output import EXTENSIONS
from kubeloop.batch.place import TEMP_SUFFIX, Place
from kubeloop.batch.shards import Shard

SHARDS_DIR = "_shards"
MANIFEST_FILE = "_manifest.json"
CHUNK_BYTES = 1 << 20
_PART = re.compile(r"^part-(\d{5,})\.(parquet|csv)$")


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


class OutputManifest(BaseModel):
    version: Literal[1] = 1
    run: str
    model: dict[str, Any]
    format: str
    rows: int
    files: list[OutputFile]
    drift: dict[str, Any] | None = None
    """Every shard's drift counts added up; absent when a shard has none."""


def run_key(model_sha256: str, settings: dict[str, Any]) -> str:
    """What makes two runs' shard outputs interchangeable: the same model and the same
    output settings (format, columns). Batch size and parallelism do not count."""
    digest = hashlib.sha256(model_sha256.encode())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()


def output_name(shard: Shard, format: str) -> str:
    return f"{shard.name}.{EXTENSIONS[format]}"


def manifest_name(shard: Shard) -> str:
    return f"{SHARDS_DIR}/{shard.name}.json"


def temp_name(out: Place, shard: Shard, format: str) -> str:
    """Where a writer writes the shard's file before its commit, unique to the writer
    on a local place (:func:`.place.temp_name`)."""
    return places.temp_name(out, output_name(shard, format))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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
        or manifest.output.path != output_name(shard, format)
    ):
        return None
    size = places.size(out, manifest.output.path)
    return manifest if size == manifest.output.size else None


def prepare(out: Place, shard: Shard, format: str) -> None:
    """Before (re)writing a shard: remove its stale manifest first (so no manifest
    ever vouches for a file being replaced), then its temporary leftovers."""
    places.make_folder(out, SHARDS_DIR)
    places.delete(out, manifest_name(shard))
    prefix = f".{output_name(shard, format)}."
    for name in places.names(out):
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            places.delete(out, name)


def commit(
    out: Place,
    shard: Shard,
    temp: str,
    rows: int,
    run: str,
    format: str,
    drift: dict[str, Any] | None = None,
) -> ShardManifest:
    """Move a fully written file into place (nothing to move on S3), then vouch for it
    with the shard's manifest: the commit marker."""
    target = output_name(shard, format)
    places.move_into_place(out, temp, target)
    size = places.size(out, target)
    if size is None:
        raise BatchError(f"{out.show(target)}: not there after it was written")
    manifest = ShardManifest(
        shard=shard.name,
        run=run,
        input=shard.identity(),
        output=OutputFile(path=target, rows=rows, size=size, sha256=places.sha256(out, target)),
        drift=drift,
    )
    places.write_whole(out, manifest_name(shard), _json(manifest))
    return manifest


def _json(model: BaseModel) -> bytes:
    return (model.model_dump_json(indent=1) + "\n").encode()


def missing_shards(
    out: Place, shards: Sequence[Shard], run: str, format: str
) -> tuple[list[ShardManifest], list[Shard]]:
    """(manifests of the shards done, the shards not done) for this run."""
    done: list[ShardManifest] = []
    missing: list[Shard] = []
    for shard in shards:
        manifest = completed(out, shard, run, format)
        if manifest is None:
            missing.append(shard)
        else:
            done.append(manifest)
    return done, missing


def _remove_strays(out: Place, shards: Sequence[Shard], format: str) -> None:
    """Parts and shard manifests of an earlier run with more shards: not this output."""
    ours = {output_name(s, format) for s in shards}
    for name in places.names(out):
        if _PART.match(name) and name not in ours:
            places.delete(out, name)
    shard_names = {s.name for s in shards}
    for name in places.names(out, SHARDS_DIR):
        if name.startswith("part-") and name.endswith(".json") and name[:-5] not in shard_names:
            places.delete(out, f"{SHARDS_DIR}/{name}")


def finalize(
    out: Place, shards: Sequence[Shard], run: str, format: str, model: dict[str, Any]
) -> OutputManifest:
    """Write the output's manifest once every shard is done; otherwise raise naming
    the shards that are not. Idempotent: every caller writes the same manifest."""
    done, missing = missing_shards(out, shards, run, format)
    if missing:
        shown = ", ".join(f"{s.name} ({s.describe()})" for s in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BatchError(f"{len(missing)} of {len(shards)} shards not done: {shown}{more}")
    _remove_strays(out, shards, format)
    manifest = OutputManifest(
        run=run,
        model=model,
        format=format,
        rows=sum(m.output.rows for m in done),
        files=[m.output for m in done],
        drift=add_up(m.drift for m in done),
    )
    places.write_whole(out, MANIFEST_FILE, _json(manifest))
    return manifest
