"""Exactly once: each shard's output is complete, or it is not there.

Layout of an output directory::

    part-00000.parquet        one file per shard, named by the shard's number
    _shards/part-00000.json   the shard's manifest: its input, the run, rows, sha256
    _manifest.json            the output's manifest, written once every shard is in
    .part-00000.parquet.*.tmp a shard being written (or left by a killed pod)

A shard is written under a temporary name, flushed to disk and renamed, and only then
is its manifest written (itself through a temporary name): a manifest present means
its file is whole. A retried pod skips a shard whose manifest matches (same input,
same run, the file there with the recorded size) and redoes any other, after removing
its temporary leftovers and its stale manifest. Readers such as pyarrow's datasets and
Spark skip names starting with ``_`` and ``.``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from kubeloop.batch import BatchError
from kubeloop.batch.drift import add_up
from kubeloop.batch.output import EXTENSIONS
from kubeloop.batch.shards import Shard

SHARDS_DIR = "_shards"
MANIFEST_FILE = "_manifest.json"
TEMP_SUFFIX = ".tmp"
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


def manifest_path(out_dir: Path, shard: Shard) -> Path:
    return out_dir / SHARDS_DIR / f"{shard.name}.json"


def temp_path(out_dir: Path, shard: Shard, format: str) -> Path:
    """A fresh temporary name beside the shard's file, unique to this writer."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return out_dir / f".{output_name(shard, format)}.{token}{TEMP_SUFFIX}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(target: Path, text: str) -> None:
    tmp = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(target.parent)


def read_manifest(out_dir: Path, shard: Shard) -> ShardManifest | None:
    try:
        return ShardManifest.model_validate_json(manifest_path(out_dir, shard).read_bytes())
    except (OSError, ValidationError):
        return None


def completed(out_dir: Path, shard: Shard, run: str, format: str) -> ShardManifest | None:
    """The shard's manifest if the shard is done for this run, else None."""
    manifest = read_manifest(out_dir, shard)
    if (
        manifest is None
        or manifest.shard != shard.name
        or manifest.run != run
        or manifest.input != shard.identity()
        or manifest.output.path != output_name(shard, format)
    ):
        return None
    try:
        size = (out_dir / manifest.output.path).stat().st_size
    except OSError:
        return None
    return manifest if size == manifest.output.size else None


def prepare(out_dir: Path, shard: Shard, format: str) -> None:
    """Before (re)writing a shard: remove its stale manifest first (so no manifest
    ever vouches for a file being replaced), then its temporary leftovers."""
    (out_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    manifest_path(out_dir, shard).unlink(missing_ok=True)
    prefix = f".{output_name(shard, format)}."
    for leftover in out_dir.glob(f"{prefix}*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def commit(
    out_dir: Path,
    shard: Shard,
    tmp: Path,
    rows: int,
    run: str,
    format: str,
    drift: dict[str, Any] | None = None,
) -> ShardManifest:
    """Move a fully written temporary file into place, then vouch for it."""
    _fsync(tmp)
    target = out_dir / output_name(shard, format)
    manifest = ShardManifest(
        shard=shard.name,
        run=run,
        input=shard.identity(),
        output=OutputFile(
            path=target.name, rows=rows, size=tmp.stat().st_size, sha256=sha256_file(tmp)
        ),
        drift=drift,
    )
    os.replace(tmp, target)
    _fsync(out_dir)
    _write_atomically(manifest_path(out_dir, shard), manifest.model_dump_json(indent=1) + "\n")
    return manifest


def missing_shards(
    out_dir: Path, shards: Sequence[Shard], run: str, format: str
) -> tuple[list[ShardManifest], list[Shard]]:
    """(manifests of the shards done, the shards not done) for this run."""
    done: list[ShardManifest] = []
    missing: list[Shard] = []
    for shard in shards:
        manifest = completed(out_dir, shard, run, format)
        if manifest is None:
            missing.append(shard)
        else:
            done.append(manifest)
    return done, missing


def _remove_strays(out_dir: Path, shards: Sequence[Shard], format: str) -> None:
    """Parts and shard manifests of an earlier run with more shards: not this output."""
    ours = {output_name(s, format) for s in shards}
    for path in out_dir.iterdir():
        if _PART.match(path.name) and path.name not in ours:
            path.unlink(missing_ok=True)
    names = {s.name for s in shards}
    for path in (out_dir / SHARDS_DIR).glob("part-*.json"):
        if path.stem not in names:
            path.unlink(missing_ok=True)


def finalize(
    out_dir: Path, shards: Sequence[Shard], run: str, format: str, model: dict[str, Any]
) -> OutputManifest:
    """Write the output's manifest once every shard is done; otherwise raise naming
    the shards that are not. Idempotent: every caller writes the same manifest."""
    done, missing = missing_shards(out_dir, shards, run, format)
    if missing:
        shown = ", ".join(f"{s.name} ({s.describe()})" for s in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BatchError(f"{len(missing)} of {len(shards)} shards not done: {shown}{more}")
    _remove_strays(out_dir, shards, format)
    manifest = OutputManifest(
        run=run,
        model=model,
        format=format,
        rows=sum(m.output.rows for m in done),
        files=[m.output for m in done],
        drift=add_up(m.drift for m in done),
    )
    _write_atomically(out_dir / MANIFEST_FILE, manifest.model_dump_json(indent=1) + "\n")
    return manifest
