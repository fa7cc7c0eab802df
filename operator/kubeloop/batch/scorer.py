"""Scoring shards: one shard read, predicted and committed; many shards over every
core of the pod, one process per core (scikit-learn's predictors run on one core, and
processes share nothing, so the cores add up).

Each worker process loads the model once and takes shards one at a time from a
common queue, so a pod's cores stay busy whatever its shards weigh. A worker's
progress (rows per batch) comes back to the parent, which reports it.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from kubeloop.batch import BatchError
from kubeloop.batch import place as places
from kubeloop.batch.commit import (
    SHARDS_DIR,
    ShardManifest,
    commit,
    completed,
    new_attempt,
    part_name,
)
from kubeloop.batch.discover import Layout
from kubeloop.batch.drift import DriftCounter
from kubeloop.batch.features import OutputSpec, feature_rows, predictions_batch
from kubeloop.batch.meter import Meter
from kubeloop.batch.output import ShardWriter
from kubeloop.batch.place import Place
from kubeloop.batch.reading import read_batches
from kubeloop.batch.shards import Shard
from kubeloop.modeldir import LoadedModel, load_model


@dataclass(frozen=True)
class Job:
    """What every worker needs to score any shard of the run (picklable)."""

    model_dir: str
    out: Place
    layout: Layout
    spec: OutputSpec
    run: str
    batch_rows: int


def score_shard(
    job: Job, model: LoadedModel, shard: Shard, progress: Callable[[int], None]
) -> tuple[ShardManifest, bool]:
    """Score ``shard`` unless it is already done; (its manifest, whether it was).

    This attempt writes a file of its own (:mod:`.commit`). When it fails, and another
    attempt at the shard (a second pod of the same index) committed it meanwhile, the
    shard is done: the other's manifest is returned, and this pod goes on."""
    out = job.out
    fmt = job.spec.format
    done = completed(out, shard, job.run, fmt)
    if done is not None:
        return done, True
    places.make_folder(out, SHARDS_DIR)
    name = part_name(shard, fmt, new_attempt())
    temp = places.temp_name(out, name)
    try:
        return _write(job, model, shard, temp, name, progress)
    except Exception as exc:
        winner = completed(out, shard, job.run, fmt)
        if winner is None or winner.output.path != name:
            places.delete(out, temp)
            places.delete(out, name)
        if winner is None:
            raise
        print(
            f"kubeloop batch: {shard.name}: committed by another attempt "
            f"({winner.output.path}) while this one failed: {exc}",
            file=sys.stderr,
        )
        return winner, False


def _write(
    job: Job,
    model: LoadedModel,
    shard: Shard,
    temp: str,
    name: str,
    progress: Callable[[int], None],
) -> tuple[ShardManifest, bool]:
    """Read, predict and write the shard to ``temp``, then commit it as ``name``. The
    checks run before the writer closes: a shard that fails them is aborted, with no
    Parquet footer ever written."""
    fmt = job.spec.format
    path = job.layout.files[shard.relpath]
    columns = job.layout.columns[shard.relpath]
    where = shard.describe(job.layout.source.show(path))
    counter = DriftCounter(model)
    with ShardWriter(job.out, temp, fmt) as writer:
        for batch in read_batches(path, shard, columns, job.batch_rows, job.layout.source):
            if batch.num_rows == 0:
                continue
            rows = feature_rows(batch, columns, model, where, writer.rows)
            writer.write(predictions_batch(batch, rows, columns, model, job.spec))
            counter.observe(rows)
            progress(batch.num_rows)
        if writer.rows == 0:
            raise BatchError(f"{path}: no rows: nothing to score")
        if shard.rows is not None and writer.rows != shard.rows:
            raise BatchError(
                f"{where}: read {writer.rows} rows, the file's footer says {shard.rows}"
            )
    manifest = commit(job.out, shard, temp, name, writer.rows, job.run, fmt, counter.counts())
    return manifest, False


# -- one process per core -------------------------------------------------------------

_worker_job: Job | None = None
_worker_model: LoadedModel | None = None
_worker_progress: Any = None


def _start_worker(job: Job, progress: Any) -> None:
    global _worker_job, _worker_model, _worker_progress
    from threadpoolctl import threadpool_limits

    # One core per process: a BLAS that spreads each predict over every core would
    # fight the other workers for them.
    threadpool_limits(1)
    _worker_job, _worker_model, _worker_progress = job, load_model(job.model_dir), progress


def _score_in_worker(shard: Shard) -> tuple[ShardManifest, bool]:
    assert _worker_job is not None and _worker_model is not None
    return score_shard(_worker_job, _worker_model, shard, _worker_progress.put)


def _drain(updates: Any) -> Iterator[int]:
    while True:
        try:
            yield updates.get_nowait()
        except queue.Empty:
            return


def score_shards(
    job: Job, shards: Sequence[Shard], workers: int, meter: Meter, model: LoadedModel
) -> list[ShardManifest]:
    """Score ``shards`` with ``workers`` processes (in this one when 1); the first
    error stops the run (shards committed so far stay done)."""
    manifests: list[ShardManifest] = []

    def finished(result: tuple[ShardManifest, bool]) -> None:
        manifest, skipped = result
        manifests.append(manifest)
        meter.shard_done(skipped_rows=manifest.output.rows if skipped else 0)

    if workers <= 1 or len(shards) <= 1:
        for shard in shards:
            finished(score_shard(job, model, shard, meter.scored))
        return manifests

    context = multiprocessing.get_context("spawn")
    updates = context.Queue()
    with ProcessPoolExecutor(
        max_workers=min(workers, len(shards)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(job, updates),
    ) as pool:
        pending: set[Future[tuple[ShardManifest, bool]]] = {
            pool.submit(_score_in_worker, shard) for shard in shards
        }
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for rows in _drain(updates):
                meter.scored(rows)
            for future in done:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                finished(future.result())
        for rows in _drain(updates):
            meter.scored(rows)
    return sorted(manifests, key=lambda m: m.shard)
