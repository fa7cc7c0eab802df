"""``kubeloop batch score|finalize|shards``: what a BatchPrediction's pods run.

Exit codes: 0 done, 2 a run that cannot go on (bad input, no model, a shard that
fails); the message names the file and goes to stderr and to the termination log, where
the operator reads it. 143: stopped by SIGTERM (a retried pod goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from kubeloop.batch import BatchError
from kubeloop.batch.formats import FORMATS, PARQUET
from kubeloop.batch.shards import DEFAULT_BATCH_ROWS, DEFAULT_MIN_ROWS

EXIT_OK = 0
EXIT_FAILED = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it
INDEX_ENV = "JOB_COMPLETION_INDEX"
COUNT_ENV = "KUBELOOP_BATCH_COUNT"


def _from_env(value: int | None, name: str, default: int) -> int:
    """A flag's value, else the environment's (read when the command runs, so that no
    other command depends on it), else ``default``."""
    if value is not None:
        return value
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise BatchError(f"${name}={raw!r} is not a whole number") from None


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="the model directory to score with")
    parser.add_argument(
        "--input",
        required=True,
        metavar="URI",
        help="CSV/Parquet files: a directory, a file or a glob (pvc://, s3://, file:// or a path)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="URI",
        help="the output directory (pvc://, s3://, file:// or a path)",
    )
    parser.add_argument("--format", choices=FORMATS, default=PARQUET, help="default: parquet")
    parser.add_argument(
        "--passthrough",
        action="append",
        default=[],
        metavar="COLUMN",
        help="an input column copied to the output, such as an id (repeatable)",
    )
    parser.add_argument("--no-predictions", action="store_true", help="leave predictions out")
    parser.add_argument(
        "--no-probabilities", action="store_true", help="leave class probabilities out"
    )
    parser.add_argument("--prediction-column", default="prediction")
    parser.add_argument(
        "--probability-prefix",
        default="probability_",
        help="probability columns are this prefix and the class name",
    )
    parser.add_argument(
        "--if-exists",
        choices=("refuse", "overwrite"),
        default="overwrite",
        help="the complete output of another run in --output: refuse the run, or "
        "overwrite it (default)",
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=DEFAULT_BATCH_ROWS,
        help=f"rows read and predicted at a time: bounds memory (default {DEFAULT_BATCH_ROWS})",
    )
    parser.add_argument(
        "--min-shard-rows",
        type=int,
        default=DEFAULT_MIN_ROWS,
        help="consecutive Parquet row groups are joined into shards of at least this many "
        f"rows (default {DEFAULT_MIN_ROWS}); must be the same in every pod",
    )


def _index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--count",
        type=int,
        help=f"pods sharing the run (env {COUNT_ENV}; default 1)",
    )
    parser.add_argument(
        "--index",
        type=int,
        help=f"this pod's completion index (env {INDEX_ENV}; default 0)",
    )


def _request(args: argparse.Namespace) -> Any:
    # Imported here: pyarrow and scikit-learn load only when a batch command runs.
    from kubeloop.batch.features import OutputSpec
    from kubeloop.batch.run import Request

    spec = OutputSpec(
        format=args.format,
        passthrough=tuple(args.passthrough),
        predictions=not args.no_predictions,
        probabilities=not args.no_probabilities,
        prediction_column=args.prediction_column,
        probability_prefix=args.probability_prefix,
    )
    if args.batch_rows < 1 or args.min_shard_rows < 1:
        raise BatchError("--batch-rows and --min-shard-rows must be at least 1")
    return Request(
        model_dir=args.model_dir,
        input=args.input,
        output=args.output,
        spec=spec,
        batch_rows=args.batch_rows,
        min_shard_rows=args.min_shard_rows,
        if_exists=args.if_exists,
    )


def _last_words(message: str) -> None:
    """``message`` to stderr and, not the progress so far, to the termination message."""
    import kubeloop.train

    print(message, file=sys.stderr)
    kubeloop.train.finish()
    path = kubeloop.train.termination_log()
    if path is not None:
        try:
            path.write_text(message[-4000:], encoding="utf-8")
        except OSError as exc:
            print(f"kubeloop batch: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)


def _fail(error: BatchError) -> int:
    _last_words(f"kubeloop batch: {error}")
    return EXIT_FAILED


def _stop_at_once(signum: int, frame: object) -> None:
    """SIGTERM (a pod deleted, evicted, its node drained): stop now, workers and all.
    A container's first process gets no default action for SIGTERM, so without this
    the pod would score on until the kubelet's SIGKILL. What is committed stays; a
    shard half written is a file no manifest names: the retried pod redoes the shard, and
    the output's finalization removes that file."""
    _last_words(
        "kubeloop batch: stopped by SIGTERM: the shards committed so far are kept, a "
        "retried pod scores the rest"
    )
    # No interpreter shutdown: it would wait for the worker processes' shards. In a
    # container the first process's exit ends every other; elsewhere (a test, a shell)
    # the workers would be left behind, so they are killed first.
    import multiprocessing  # loaded already by the scorer that runs

    for worker in multiprocessing.active_children():
        worker.kill()
    os._exit(EXIT_TERMINATED)


def run_score(args: argparse.Namespace) -> int:
    from kubeloop.batch.cpus import available_cpus
    from kubeloop.batch.run import score

    signal.signal(signal.SIGTERM, _stop_at_once)
    try:
        count = _from_env(args.count, COUNT_ENV, 1)
        index = _from_env(args.index, INDEX_ENV, 0)
        if not 0 <= index < count:
            raise BatchError(f"index {index} is not in 0..{count - 1} (count {count})")
        summary = score(_request(args), index, count, args.workers or available_cpus())
    except BatchError as exc:
        return _fail(exc)
    print(json.dumps(summary))
    return EXIT_OK


def run_finalize(args: argparse.Namespace) -> int:
    from kubeloop.batch.run import finalize_run

    try:
        manifest = finalize_run(_request(args))
    except BatchError as exc:
        return _fail(exc)
    print(json.dumps({"rows": manifest.rows, "files": len(manifest.files)}))
    return EXIT_OK


def run_shards(args: argparse.Namespace) -> int:
    from kubeloop.batch.run import prepare_run
    from kubeloop.batch.shards import assign

    try:
        count = _from_env(args.count, COUNT_ENV, 1)
        if count < 1:
            raise BatchError(f"count {count}: at least 1")
        prepared = prepare_run(_request(args))
    except BatchError as exc:
        print(f"kubeloop batch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    shards = list(prepared.layout.shards)
    plan = [
        {"index": i, "shards": [s.describe() for s in assign(shards, i, count)]}
        for i in range(count)
    ]
    print(json.dumps(plan, indent=1))
    return EXIT_OK


def add_commands(subparsers: Any) -> None:
    """Register ``batch`` and its subcommands on the main parser's subparsers."""
    batch = subparsers.add_parser(
        "batch",
        help="score a dataset with a model directory (a BatchPrediction's pods)",
        description="Score CSV or Parquet files with a model directory, sharded over the "
        "pods of an Indexed Job; see docs/batch-prediction.md.",
    )
    commands = batch.add_subparsers(dest="batch_command", required=True)

    score = commands.add_parser(
        "score",
        help="score this pod's shards, then finalize if every shard is in",
        description="Score the shards assigned to --index of --count, skipping shards "
        "already complete; the last pod to finish writes the output's _manifest.json.",
    )
    _run_arguments(score)
    _index_arguments(score)
    score.add_argument(
        "--workers", type=int, default=0, help="processes (default: the pod's CPU limit)"
    )
    score.set_defaults(func=run_score)

    finalize = commands.add_parser(
        "finalize",
        help="write the output's manifest, or name the shards not done",
        description="Check that every shard's output and manifest is there and write "
        "_manifest.json (files, rows, sha256).",
    )
    _run_arguments(finalize)
    finalize.set_defaults(func=run_finalize)

    shards = commands.add_parser(
        "shards", help="print which shards each index scores (JSON)", description=None
    )
    _run_arguments(shards)
    _index_arguments(shards)
    shards.set_defaults(func=run_shards)
