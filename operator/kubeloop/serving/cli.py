"""The ``serve`` and ``fetch-model`` subcommands, added to the main CLI's parser.

Every flag also reads an environment variable, so that the operator's rendered pods
and plain ``docker run`` can configure the server without rewriting its arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from kubeloop.logs import setup_logging
from kubeloop.names import SERVER_PORT

log = logging.getLogger(__name__)

FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a model directory over the Open Inference Protocol v2 (REST)",
        description="Serve a model directory (model.json, model.joblib, profile.json) "
        "over the Open Inference Protocol v2, with Prometheus metrics on /metrics. "
        "model.joblib is unpickled: serve only models from a trusted source.",
    )
    serve.add_argument(
        "--model-dir",
        type=Path,
        default=os.environ.get("KUBELOOP_MODEL_DIR"),
        required="KUBELOOP_MODEL_DIR" not in os.environ,
        help="model directory (env KUBELOOP_MODEL_DIR)",
    )
    serve.add_argument(
        "--name",
        default=os.environ.get("KUBELOOP_MODEL_NAME"),
        help="name to serve the model under (env KUBELOOP_MODEL_NAME; default: model.json's)",
    )
    serve.add_argument(
        "--host",
        default=os.environ.get("KUBELOOP_HOST", "0.0.0.0"),
        help="address to listen on (env KUBELOOP_HOST; default 0.0.0.0)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("KUBELOOP_PORT", str(SERVER_PORT))),
        help=f"port to listen on, 0 for any free one (env KUBELOOP_PORT; default {SERVER_PORT})",
    )
    serve.add_argument(
        "--no-monitoring",
        dest="monitoring",
        action="store_false",
        default=os.environ.get("KUBELOOP_MONITORING", "true").lower() not in FALSE_WORDS,
        help="do not export per-feature input histograms (env KUBELOOP_MONITORING=false)",
    )
    serve.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=int(os.environ.get("KUBELOOP_MAX_BATCH_SIZE", "64")),
        help="adaptive batching: concurrent requests are predicted together, up to this "
        "many rows; 1 turns batching off (env KUBELOOP_MAX_BATCH_SIZE; default 64)",
    )
    serve.add_argument(
        "--max-batch-wait-ms",
        type=_wait_ms,
        default=float(os.environ.get("KUBELOOP_MAX_BATCH_WAIT_MS", "0")),
        help="how long a request may wait for others to join its batch, in ms; 0 batches "
        "only requests already waiting (env KUBELOOP_MAX_BATCH_WAIT_MS; default 0)",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=int(os.environ["KUBELOOP_WORKERS"]) if os.environ.get("KUBELOOP_WORKERS") else None,
        help="server processes sharing the port, one model copy each (env KUBELOOP_WORKERS; "
        "default: the CPUs this container may use)",
    )
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=int(os.environ.get("KUBELOOP_GRPC_PORT", "0")),
        help="also serve the protocol's gRPC side on this port, 0 for none "
        "(env KUBELOOP_GRPC_PORT; default 0)",
    )
    serve.add_argument(
        "--shadow-url",
        default=os.environ.get("KUBELOOP_SHADOW_URL") or None,
        help="copy a share of the answered requests to a shadow model server at this "
        "base URL and compare its answers (env KUBELOOP_SHADOW_URL; docs/shadow.md)",
    )
    serve.add_argument(
        "--shadow-percent",
        type=_percent,
        default=int(os.environ.get("KUBELOOP_SHADOW_PERCENT", "100")),
        help="share of requests copied to the shadow, 1 to 100 "
        "(env KUBELOOP_SHADOW_PERCENT; default 100)",
    )
    serve.add_argument(
        "--labelled-rows",
        type=_non_negative_int,
        default=int(os.environ.get("KUBELOOP_LABELLED_ROWS", "10000")),
        help="keep this many of the newest feedback records that carry their inputs, for a "
        "retrain's evaluation on live labels; 0 keeps none (env KUBELOOP_LABELLED_ROWS; "
        "default 10000; docs/quality.md)",
    )
    serve.add_argument("--worker-of", type=Path, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(func=run_serve)

    fetch = subparsers.add_parser(
        "fetch-model",
        help="download a model directory and verify it against its manifest",
        description="Fetch the model directory at URI (http(s)://, s3://, file:// or a "
        "path) into DIR: every file in URI/manifest.json, checked for size and sha256, "
        "moved into place only when whole.",
    )
    fetch.add_argument("uri", metavar="URI", help="where the model directory lives")
    fetch.add_argument("dest", metavar="DIR", type=Path, help="where to put it")
    fetch.set_defaults(func=run_fetch)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _percent(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {value}")
    return value


def _wait_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000 ms, got {value}")
    return value


def _configure_logging() -> None:
    # Leaves logging alone when something (the main CLI, a test runner) set it up.
    if not logging.getLogger().handlers:
        setup_logging(
            os.environ.get("KUBELOOP_LOG_LEVEL", "INFO"),
            os.environ.get("KUBELOOP_LOG_FORMAT", "json"),
        )


def run_serve(args: argparse.Namespace) -> int:
    from kubeloop.modeldir import ModelLoadError
    from kubeloop.serving.app import serve
    from kubeloop.serving.workers import available_cpus, supervise

    _configure_logging()
    workers = args.workers if args.workers is not None else available_cpus()
    if args.port == 0:
        workers = 1  # workers share a port known in advance; "any free port" is one's own
    if workers > 1 and args.worker_of is None:
        return supervise(_serve_argv(args), workers)
    try:
        return asyncio.run(
            serve(
                args.model_dir,
                args.host,
                args.port,
                args.name,
                args.monitoring,
                max_batch_size=args.max_batch_size,
                max_batch_wait=args.max_batch_wait_ms / 1000,
                worker_of=args.worker_of,
                worker_index=args.worker_index,
                grpc_port=args.grpc_port,
                shadow_url=args.shadow_url,
                shadow_percent=args.shadow_percent,
                labelled_rows=args.labelled_rows,
            )
        )
    except ModelLoadError as exc:
        log.error("Failed to read the model directory: %s", exc)
        return 1


def _serve_argv(args: argparse.Namespace) -> list[str]:
    """The serve arguments again, for each worker process."""
    argv = [
        "--model-dir",
        str(args.model_dir),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-batch-wait-ms",
        str(args.max_batch_wait_ms),
        "--grpc-port",
        str(args.grpc_port),
        "--labelled-rows",
        str(args.labelled_rows),
    ]
    if args.name:
        argv += ["--name", args.name]
    if not args.monitoring:
        argv.append("--no-monitoring")
    if args.shadow_url:
        argv += ["--shadow-url", args.shadow_url, "--shadow-percent", str(args.shadow_percent)]
    return argv


def run_fetch(args: argparse.Namespace) -> int:
    from kubeloop.serving.fetch import FetchError, fetch_model

    _configure_logging()
    try:
        files = fetch_model(args.uri, args.dest)
    except FetchError as exc:
        log.error("Failed to fetch the model: %s", exc)
        return 1
    log.info(
        "Fetched %d files (%d bytes) from %s into %s",
        len(files),
        sum(f.size for f in files),
        args.uri,
        args.dest,
    )
    _report_manifest(args.dest)
    return 0


def _report_manifest(dest: Path) -> None:
    """The sha256 of the manifest, in the container's termination message: the operator
    records it in the ModelDeployment's history (which model, byte for byte)."""
    import hashlib
    import json

    from kubeloop.modeldir import MANIFEST_FILE
    from kubeloop.progress import DEFAULT_TERMINATION_LOG, TERMINATION_LOG_ENV

    path = os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG
    if TERMINATION_LOG_ENV not in os.environ and not Path(path).exists():
        return  # not in a container: nothing to tell
    digest = hashlib.sha256((dest / MANIFEST_FILE).read_bytes()).hexdigest()
    try:
        Path(path).write_text(json.dumps({"manifestSha256": digest}))
    except OSError as exc:
        log.warning("Cannot write the termination message %s: %s", path, exc)
