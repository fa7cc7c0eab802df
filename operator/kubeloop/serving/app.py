"""``kubeloop serve``: the reference model server's process, from start to stop.

It reads the model's metadata, opens the front ends (REST, :mod:`kubeloop.serving.rest`,
and when asked gRPC, :mod:`kubeloop.serving.grpc`) on one data plane
(:mod:`kubeloop.serving.dataplane`), loads the model, and serves until SIGTERM or
SIGINT. Health probes are answered while the model loads. A port it cannot have is one
line in the log and exit status 3 (``workers.CANNOT_LISTEN``), with nothing left
listening.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from pathlib import Path
from typing import Any

import sklearn
from aiohttp import web

from kubeloop.modeldir import ModelLoadError, ModelMetadata, load_model, read_metadata
from kubeloop.serving.dataplane import DEFAULT_MAX_BATCH_SIZE, DataPlane
from kubeloop.serving.labelled_rows import DEFAULT_CAPACITY
from kubeloop.serving.rest import base_url, start
from kubeloop.serving.workers import CANNOT_LISTEN

log = logging.getLogger(__name__)


async def serve(
    model_dir: Path,
    host: str,
    port: int,
    name: str | None,
    monitoring: bool,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_batch_wait: float = 0.0,
    worker_of: Path | None = None,
    worker_index: int = 0,
    grpc_port: int = 0,
    shadow_url: str | None = None,
    shadow_percent: int = 100,
    labelled_rows: int = DEFAULT_CAPACITY,
) -> int:
    """Serve until SIGTERM or SIGINT; answer health probes while the model loads. As
    one of several workers (`worker_of`: their directory), share the ports, taken only
    once the model is loaded, so that no connection reaches a worker that would answer
    "still loading"."""
    metadata = await asyncio.to_thread(read_metadata, model_dir)
    plane = DataPlane(
        metadata,
        name=name,
        monitoring=monitoring,
        max_batch_size=max_batch_size,
        max_batch_wait=max_batch_wait,
        shadow_url=shadow_url,
        shadow_percent=shadow_percent,
        labelled_rows=labelled_rows,
    )
    worker = worker_of is not None
    if worker and not await _load_into(plane, model_dir, metadata):
        return 1
    listening = await _listen(plane, host, port, grpc_port, worker_of, worker_index)
    if listening is None:
        return CANNOT_LISTEN
    stop = _stop_on_signals()
    try:
        if not worker:
            for address in listening[0].addresses:
                log.info("Started listening on %s", base_url(address))
            if not await _load_into(plane, model_dir, metadata):
                return 1
        await stop.wait()
        log.info("Stopped on signal")
        return 0
    finally:
        await _close(*listening)
        await plane.close()


async def _listen(
    plane: DataPlane,
    host: str,
    port: int,
    grpc_port: int,
    worker_of: Path | None,
    worker_index: int,
) -> tuple[web.AppRunner, Any] | None:
    """Both front ends listening, or neither (None, the reason logged in one line)."""
    try:
        runner = await start(
            plane, host, port, reuse_port=worker_of is not None, peers=worker_of,
            peer_index=worker_index,
        )
    except OSError as exc:
        log.error("Failed to listen on %s:%s: %s", host, port, exc)
        return None
    if not grpc_port:
        return runner, None
    from kubeloop.serving.grpc import ListenError, start_grpc  # grpc only when used

    try:
        return runner, await start_grpc(plane, host, grpc_port)
    except ListenError as exc:
        log.error("Failed to listen for gRPC on %s:%s: %s", host, grpc_port, exc)
        await runner.cleanup()
        return None


async def _close(runner: web.AppRunner, grpc_server: Any) -> None:
    if grpc_server is not None:
        await grpc_server.stop(2.0)
    await runner.cleanup()


def _stop_on_signals() -> asyncio.Event:
    """Set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _load_into(plane: DataPlane, model_dir: Path, metadata: ModelMetadata) -> bool:
    began = time.monotonic()
    try:
        model = await asyncio.to_thread(load_model, model_dir, metadata)
    except ModelLoadError as exc:
        log.error("Failed to load model from %s: %s", model_dir, exc)
        return False
    # Requests are checked for finite values before they reach the model, so
    # scikit-learn's own check (on this, the event loop's, thread) is redundant.
    sklearn.set_config(assume_finite=True)
    # The model and the libraries are long-lived: keep them out of every future
    # full garbage collection.
    gc.freeze()
    plane.set_model(model)
    log.info(
        "Loaded model %s version %s in %.2fs (feature monitoring %s)",
        plane.name,
        metadata.version,
        time.monotonic() - began,
        "on" if plane.monitoring and model.profile else "off",
    )
    return True
