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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from kubeloop.batch import BatchError
from kubeloop.batch import place as places
from kubeloop.batch.commit import ShardManifest, commit, completed, prepare, temp_name
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
    """Score ``shard`` unless it is already done; (its manifest, whether it was)."""
    out = job.out
    fmt = job.spec.format
    done = completed(out, shard, job.run, fmt)
    if done is not None:
        return done, True
    prepare(out, shard, fmt)
    path = job.layout.files[shard.relpath]
    columns = job.layout.columns[shard.relpath]
    where = shard.describe(job.layout.source.show(path))
    temp = temp_name(out, shard, fmt)
    counter = DriftCounter(model)
    try:
        with ShardWriter(out, temp, fmt) as writer:
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
        manifest = commit(out, shard, temp, writer.rows, job.run, fmt, counter.counts())
        return manifest, False
    except BaseException:
        # On S3 an upload cut short by an error was still completed by its close:
        # no manifest vouches for it, and it goes.
        places.delete(out, temp)
        raise


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
