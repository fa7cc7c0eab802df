"""The output's manifest, ``_manifest.json``: written once every shard is done, by
whichever pod finds them so (or ``kubeloop batch finalize``). It lists the files that
are the output, each with its rows, size and sha256: the way to read a run's output. A
file it does not list is not output.

Writing it is also when what is not output goes: files that no shard manifest names (an
attempt that lost to another, one killed between its upload and its manifest, an earlier
run's), temporary shard files of killed pods, and shard manifests of shards this run
has not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from kubeloop.batch import BatchError
from kubeloop.batch import place as places
from kubeloop.batch.commit import (
    MANIFEST_FILE,
    PART,
    SHARDS_DIR,
    OutputFile,
    ShardManifest,
    completed,
    read_manifest,
    to_json,
)
from kubeloop.batch.drift import add_up
from kubeloop.batch.place import TEMP_SUFFIX, Place
from kubeloop.batch.shards import Shard

_SHARD_MANIFEST = re.compile(r"^part-\d{5,}\.json$")


class OutputManifest(BaseModel):
    version: Literal[1] = 1
    run: str
    model: dict[str, Any]
    format: str
    rows: int
    files: list[OutputFile]
    drift: dict[str, Any] | None = None
    """Every shard's drift counts added up; absent when a shard has none."""


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


def _temporary(name: str) -> bool:
    """A shard file being written, or left by a killed pod. Not the temporary name of
    a manifest: another pod may be writing the same output manifest now."""
    return name.startswith(".part-") and name.endswith(TEMP_SUFFIX)


def remove_leftovers(out: Place, shards: Sequence[Shard], named: set[str]) -> None:
    """Remove every shard file that neither ``named`` (the output manifest's files) nor
    a shard manifest as it is now names, temporary shard files, and shard manifests of
    shards not in ``shards``. A file a shard manifest names is never removed: an attempt
    that committed while the output's manifest was written keeps its file."""
    shard_names = {s.name for s in shards}
    for name in places.names(out, SHARDS_DIR):
        if _SHARD_MANIFEST.fullmatch(name) and name[:-5] not in shard_names:
            places.delete(out, f"{SHARDS_DIR}/{name}")
    keep = set(named)
    for shard in shards:
        manifest = read_manifest(out, shard)
        if manifest is not None:
            keep.add(manifest.output.path)
    for name in places.names(out):
        if (PART.fullmatch(name) and name not in keep) or _temporary(name):
            places.delete(out, name)


def finalize(
    out: Place, shards: Sequence[Shard], run: str, format: str, model: dict[str, Any]
) -> OutputManifest:
    """Write the output's manifest once every shard is done, then remove what is not
    output; otherwise raise naming the shards that are not. Idempotent: every caller
    writes the same manifest."""
    done, missing = missing_shards(out, shards, run, format)
    if missing:
        shown = ", ".join(f"{s.name} ({s.describe()})" for s in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BatchError(f"{len(missing)} of {len(shards)} shards not done: {shown}{more}")
    manifest = OutputManifest(
        run=run,
        model=model,
        format=format,
        rows=sum(m.output.rows for m in done),
        files=[m.output for m in done],
        drift=add_up(m.drift for m in done),
    )
    places.write_whole(out, MANIFEST_FILE, to_json(manifest))
    remove_leftovers(out, shards, {f.path for f in manifest.files})
    return manifest
