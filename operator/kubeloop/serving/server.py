"""``kubeloop serve``: the reference model server.

Speaks the Open Inference Protocol v2 over HTTP (the REST dialect KServe, Triton and
MLServer share) and exports on ``/metrics`` what the DriftMonitor reads: per-feature
input histograms on the reference profile's own bin edges.

The hot path is kept lean on purpose: stdlib ``json`` with a shared encoder, hand-written
request checks instead of pydantic, numpy for every per-row operation, and prediction on
the event loop for small batches, where a thread-pool hop costs more than the predict
itself. Every metric is mutated on the event loop only, so none needs a lock.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import sklearn
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from kubeloop import __version__
from kubeloop.modeldir import (
    LoadedModel,
    ModelLoadError,
    ModelMetadata,
    load_model,
    read_metadata,
)
from kubeloop.serving import binary, workers
from kubeloop.serving.batcher import Batcher
from kubeloop.serving.livestats import LiveStats

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 << 20
# Batches up to this many rows are predicted on the event loop: measured with wrk, that
# answers 3-7% more requests a second than a worker-thread hop at 1 and 64 rows. Larger
# batches go to a thread so that health probes still get answers (the GIL switches
# every 5 ms) while a long predict runs.
INLINE_MAX_ROWS = 256
# Adaptive batching: requests waiting together are predicted as one, up to this many rows.
DEFAULT_MAX_BATCH_SIZE = 64
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
DATATYPES = ("FP32", "FP64", "INT64")
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

try:  # orjson (the `serve` extra) decodes a 64-row request body ~7x faster than json.
    import orjson

    def _loads(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            # json also reads NaN literals, which are then refused with a clear message.
            return json.loads(body)

except ImportError:  # pragma: no cover - the standard library is the fallback

    def _loads(body: bytes) -> Any:
        return json.loads(body)


def _encode_json(payload: Any) -> bytes:
    # Bytes, not str: aiohttp wraps a str body in a slower payload object.
    return _encoder.encode(payload).encode()


class RequestError(Exception):
    """A request the server refuses: answered with ``status`` and a v2 error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def error_response(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=_encode_json({"error": message}), content_type="application/json"
    )


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encode_json(payload), content_type="application/json")


# -- request decoding ---------------------------------------------------------------


@dataclass(frozen=True)
class InferRequest:
    rows: np.ndarray
    """Shape (N, F), float64, columns in the model's feature order."""
    request_id: str | None
    outputs: tuple[str, ...]


def _shape(tensor: dict[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"input {name!r}: 'shape' must be a list of non-negative integers")
    return shape


def _tensor_values(tensor: Any, index: int) -> tuple[str, np.ndarray]:
    """Name and values of one v2 input tensor, reshaped to its declared shape."""
    if not isinstance(tensor, dict):
        raise _bad(f"inputs[{index}] must be an object")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise _bad(f"inputs[{index}]: 'name' must be a string")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(
            f"input {name!r}: datatype {datatype!r} not supported; use one of "
            + ", ".join(DATATYPES)
        )
    shape = _shape(tensor, name)
    raw = tensor.get(binary.VALUES)
    if isinstance(raw, np.ndarray):  # binary data, decoded and size-checked already
        return name, raw.astype(np.float64).reshape(shape)
    if "data" not in tensor:
        raise _bad(f"input {name!r}: 'data' is missing")
    try:
        values = np.asarray(tensor["data"])
    except ValueError as exc:  # ragged nesting
        raise _bad(f"input {name!r}: 'data' is not a regular array") from exc
    # Inferring first, then casting, refuses strings, booleans and nulls, which a direct
    # cast would parse or turn into NaN.
    allowed_kinds = "iu" if datatype == "INT64" else "iuf"
    if values.dtype.kind not in allowed_kinds:
        kind = "integers" if datatype == "INT64" else "numbers"
        raise _bad(f"input {name!r}: 'data' must hold only {kind} for datatype {datatype}")
    expected = math.prod(shape)
    if values.size != expected:
        raise _bad(f"input {name!r}: shape {shape} needs {expected} values, got {values.size}")
    if datatype == "FP32":
        # Out-of-range values become inf, which the finiteness check then refuses.
        with np.errstate(over="ignore"):
            values = values.astype(np.float32)
    values = values.astype(np.float64, copy=False)
    return name, values.reshape(shape)


def parse_infer_request(payload: Any, model: LoadedModel) -> InferRequest:
    """Turn a decoded v2 inference request into a row matrix for the model.

    Accepts either one tensor of shape [N, F] or one tensor per feature, each of shape
    [N] or [N, 1]: when every input is named like a feature, the request is read as
    columns, otherwise its single input as the row matrix.
    """
    if not isinstance(payload, dict):
        raise _bad("the request body must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' must be a non-empty list of tensors")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("'id' must be a string")
    outputs = _requested_outputs(payload, model)

    features = model.feature_names
    tensors = dict(_tensor_values(t, i) for i, t in enumerate(inputs))
    if len(tensors) != len(inputs):
        raise _bad("input names must be unique")
    if all(name in features for name in tensors):
        rows = _rows_from_columns(tensors, features)
    elif len(tensors) == 1:
        ((name, rows),) = tensors.items()
        if rows.ndim != 2 or rows.shape[1] != len(features):
            raise _bad(
                f"input {name!r}: shape must be [N, {len(features)}] "
                f"(features: {', '.join(features)}), got {list(rows.shape)}"
            )
    else:
        raise _bad(
            f"expected one [N, {len(features)}] tensor or one tensor per feature "
            f"({', '.join(features)}), got {', '.join(tensors)}"
        )
    if rows.shape[0] == 0:
        raise _bad("the batch is empty")
    if not np.isfinite(rows).all():
        if not model.allow_nan:
            raise _bad("inputs must be finite numbers; this model does not accept NaN")
        if np.isinf(rows).any():
            raise _bad("inputs must be finite numbers or NaN")
    return InferRequest(rows=rows, request_id=request_id, outputs=outputs)


def _rows_from_columns(tensors: dict[str, np.ndarray], features: list[str]) -> np.ndarray:
    missing = [f for f in features if f not in tensors]
    if missing:
        raise _bad(f"missing inputs for features: {', '.join(missing)}")
    columns = []
    for name in features:
        column = tensors[name]
        if column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise _bad(f"input {name!r}: shape must be [N] or [N, 1], got {list(column.shape)}")
        columns.append(column)
    if len({len(c) for c in columns}) != 1:
        raise _bad("all feature inputs must have the same number of rows")
    return np.column_stack(columns)


def _requested_outputs(payload: dict[str, Any], model: LoadedModel) -> tuple[str, ...]:
    """Outputs named in the v2 ``outputs`` field, else ``predict`` (plus
    ``predict_proba`` when ``parameters: {"probabilities": true}``)."""
    available = (PREDICT, PREDICT_PROBA) if model.has_proba else (PREDICT,)
    requested = payload.get("outputs")
    if requested is None:
        parameters = payload.get("parameters")
        if parameters is None:
            return (PREDICT,)
        if not isinstance(parameters, dict):
            raise _bad("'parameters' must be an object")
        if parameters.get("probabilities") is True:
            if not model.has_proba:
                raise _bad("this model does not give probabilities")
            return (PREDICT, PREDICT_PROBA)
        return (PREDICT,)
    if not isinstance(requested, list) or not requested:
        raise _bad("'outputs' must be a non-empty list of {\"name\": ...}")
    names: list[str] = []
    for entry in requested:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in available:
            raise _bad(f"unknown output {name!r}; available: {', '.join(available)}")
        names.append(name)
    return tuple(names)


def _datatype(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"


def _output_tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    datatype = _datatype(values)
    data = values.ravel().tolist()
    if datatype == "BYTES":
        data = [str(v) for v in data]
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data}


# -- the server ---------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_as_v2(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error, the router's 404/405 included, with a v2 error body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception:
        log.exception("Failed to answer %s %s", request.method, request.path)
        return error_response(500, "internal server error")


class ModelServer:
    """One served model behind the v2 REST API; ready once :meth:`set_model` ran."""

    def __init__(
        self,
        metadata: ModelMetadata,
        *,
        name: str | None = None,
        monitoring: bool = True,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_batch_wait: float = 0.0,
    ) -> None:
        self.name = name or metadata.name
        self.metadata = metadata
        self.monitoring = monitoring
        self.model: LoadedModel | None = None
        self.stats: LiveStats | None = None
        self.batcher: Batcher | None = None
        # With several worker processes: where the others answer their own /metrics.
        self.peers: Path | None = None
        self.peer_index = 0
        self.max_batch_size, self.max_batch_wait = max_batch_size, max_batch_wait
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "kubeloop_model_requests",
            "Inference requests answered, by HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        # Label lookups take a lock and a dict probe; the children never change.
        self._requests_by_status: dict[int, Any] = {}
        self._duration = Histogram(
            "kubeloop_model_request_duration_seconds",
            "Time to answer an inference request.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        ).labels(self.name)
        self._server_metadata = _encode_json(
            {"name": "kubeloop", "version": __version__, "extensions": ["binary_tensor_data"]}
        )
        self._model_metadata = _encode_json(
            {
                "name": self.name,
                "versions": [metadata.version],
                "platform": metadata.framework,
                "inputs": [spec.model_dump() for spec in metadata.inputs],
                "outputs": [spec.model_dump() for spec in metadata.outputs],
            }
        )

    def set_model(self, model: LoadedModel) -> None:
        self.stats = LiveStats(self.name, model, monitoring=self.monitoring)
        self.registry.register(self.stats)
        if self.max_batch_size > 1:
            self.batcher = Batcher(
                self._predict_current,
                self.stats.observe,
                max_batch_size=self.max_batch_size,
                max_wait=self.max_batch_wait,
                inline_rows=INLINE_MAX_ROWS,
            )
        self.model = model

    def _predict_current(self, rows: np.ndarray, proba: bool) -> dict[str, np.ndarray]:
        assert self.model is not None  # a batch exists only once a model is set
        return _predict_rows(self.model, rows, proba)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors_as_v2])
        routes = app.router
        routes.add_get("/v2/health/live", self.live)
        routes.add_get("/v2/health/ready", self.ready)
        routes.add_get("/v2", self.server_metadata)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes.add_get(prefix, self.model_metadata)
            routes.add_get(prefix + "/ready", self.model_ready)
            routes.add_post(prefix + "/infer", self.infer)
            routes.add_get(prefix + "/profile", self.model_profile)
        routes.add_get("/metrics", self.metrics)
        return app

    def _check_model(self, request: web.Request) -> None:
        name = request.match_info["name"]
        version = request.match_info.get("version")
        if name != self.name:
            raise RequestError(404, f"model {name!r} not found")
        if version is not None and version != self.metadata.version:
            raise RequestError(404, f"model {name!r} has no version {version!r}")

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.model is not None
        return json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=self._server_metadata, content_type="application/json")

    async def model_metadata(self, request: web.Request) -> web.Response:
        try:
            self._check_model(request)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        return web.Response(body=self._model_metadata, content_type="application/json")

    async def model_profile(self, request: web.Request) -> web.Response:
        """The model's reference profile (profile.json), so that a DriftMonitor can compare
        against the very model this pod serves without reading its storage."""
        try:
            self._check_model(request)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        profile = self.model.profile if self.model is not None else None
        if profile is None:
            return error_response(404, f"model {self.name!r} has no reference profile")
        return web.Response(
            body=profile.model_dump_json(by_alias=True, exclude_none=True),
            content_type="application/json",
        )

    async def model_ready(self, request: web.Request) -> web.Response:
        try:
            self._check_model(request)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        return await self.ready(request)

    async def own_metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        if self.peers is None:
            return await self.own_metrics(request)
        texts = [generate_latest(self.registry).decode()]
        texts += await peer_metrics(self.peers, self.peer_index)
        response = web.Response(body=workers.merge(texts).encode())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            response = await self._infer(request)
        except RequestError as exc:
            response = error_response(exc.status, exc.message)
        except Exception:
            log.exception("Failed to answer an inference request for model %s", self.name)
            response = error_response(500, "internal error while predicting; see server log")
        self.count(response.status, started)
        return response

    def count(self, status: int, started: float) -> None:
        """One inference request answered (REST or gRPC, by its HTTP-like status)."""
        self._duration.observe(time.perf_counter() - started)
        counter = self._requests_by_status.get(status)
        if counter is None:
            counter = self._requests.labels(self.name, str(status))
            self._requests_by_status[status] = counter
        counter.inc()

    def loaded(self) -> LoadedModel:
        model = self.model
        if model is None or self.stats is None:
            raise RequestError(503, f"model {self.name!r} is still loading")
        return model

    async def predict(self, parsed: InferRequest) -> dict[str, np.ndarray]:
        """The model's outputs for a validated request: batched with others, or alone."""
        model = self.loaded()
        proba = PREDICT_PROBA in parsed.outputs
        if self.batcher is not None:
            return await self.batcher.submit(parsed.rows, proba)
        if len(parsed.rows) <= INLINE_MAX_ROWS:
            results = _predict_rows(model, parsed.rows, proba)
        else:
            results = await asyncio.to_thread(_predict_rows, model, parsed.rows, proba)
        assert self.stats is not None
        self.stats.observe(parsed.rows, results[PREDICT])
        return results

    async def _infer(self, request: web.Request) -> web.Response:
        self._check_model(request)
        model = self.loaded()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestError(413, f"request body larger than {MAX_BODY_BYTES} bytes") from exc
        header, blob = binary.split(body, request.headers.get(binary.HEADER), _bad)
        try:
            payload = _loads(header)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise _bad(f"the request body is not valid JSON: {exc}") from exc
        if blob or binary.HEADER in request.headers:
            binary.attach_inputs(payload, blob, _bad)
        parsed = parse_infer_request(payload, model)
        results = await self.predict(parsed)

        as_binary = binary.wanted(payload, parsed.outputs)
        blobs: list[bytes] = []
        outputs = []
        for name in parsed.outputs:
            if name in as_binary:
                values = results[name]
                datatype = _datatype(values)
                blobs.append(binary.encode(values, datatype))
                outputs.append(
                    {
                        "name": name,
                        "datatype": datatype,
                        "shape": list(values.shape),
                        "parameters": {"binary_data_size": len(blobs[-1])},
                    }
                )
            else:
                outputs.append(_output_tensor(name, results[name]))
        answer: dict[str, Any] = {
            "model_name": self.name,
            "model_version": self.metadata.version,
            "outputs": outputs,
        }
        if parsed.request_id is not None:
            answer["id"] = parsed.request_id
        if not blobs:
            return json_response(answer)
        head = _encode_json(answer)
        return web.Response(
            body=head + b"".join(blobs),
            headers={binary.HEADER: str(len(head))},
            content_type="application/octet-stream",
        )


def _predict_rows(model: LoadedModel, rows: np.ndarray, proba: bool) -> dict[str, np.ndarray]:
    results = {PREDICT: model.predict(rows)}
    if proba:
        results[PREDICT_PROBA] = model.predict_proba(rows)
    return results


async def start(
    server: ModelServer, host: str, port: int, *, reuse_port: bool = False
) -> web.AppRunner:
    """Start answering on ``host:port`` (0 picks a free port: see ``runner.addresses``);
    as one of several workers (`reuse_port`), also its own /metrics on its unix socket."""
    # No access log: formatting a line per request would cost more than the predict.
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(
        runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
    )
    await site.start()
    if server.peers is not None:
        own = web.Application()
        own.router.add_get("/metrics", server.own_metrics)
        own_runner = web.AppRunner(own, access_log=None)
        await own_runner.setup()
        path = workers.socket_path(server.peers, server.peer_index)
        path.unlink(missing_ok=True)
        await web.UnixSite(own_runner, str(path)).start()
    return runner


async def peer_metrics(directory: Path, own: int) -> list[str]:
    """The other workers' own /metrics, read over their unix sockets; a worker that is
    starting again is left out."""

    async def one(path: Path) -> str | None:
        try:
            connector = aiohttp.UnixConnector(path=str(path))
            timeout = aiohttp.ClientTimeout(total=2.0)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get("http://worker/metrics") as response,
            ):
                return await response.text() if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    paths = [
        p
        for p in sorted(directory.glob("worker-*.sock"))
        if p != workers.socket_path(directory, own)
    ]
    texts = await asyncio.gather(*(one(p) for p in paths))
    return [t for t in texts if t is not None]


def base_url(address: Any) -> str:
    """``http://host:port`` of one of ``AppRunner.addresses`` (IPv6 in brackets)."""
    host, port = address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
) -> int:
    """Serve until SIGTERM or SIGINT; answer health probes while the model loads. As
    one of several workers (`worker_of`: their directory), share the port."""
    metadata = await asyncio.to_thread(read_metadata, model_dir)
    server = ModelServer(
        metadata,
        name=name,
        monitoring=monitoring,
        max_batch_size=max_batch_size,
        max_batch_wait=max_batch_wait,
    )
    server.peers, server.peer_index = worker_of, worker_index
    if worker_of is not None:
        # One of several workers: the port is taken only once the model is loaded, so
        # that no connection reaches a worker that would answer "still loading".
        return await _serve_loaded(server, model_dir, metadata, host, port, grpc_port)
    try:
        runner = await start(server, host, port)
        extra = await _start_grpc(server, host, grpc_port)
    except OSError as exc:
        log.error("Failed to listen on %s:%s: %s", host, port, exc)
        return 1
    stop = _stop_on_signals()
    try:
        for address in runner.addresses:
            log.info("Started listening on %s", base_url(address))
        if not await _load_into(server, model_dir, metadata):
            return 1
        await stop.wait()
        log.info("Stopped on signal")
        return 0
    finally:
        if extra is not None:
            await extra.stop(2.0)
        await runner.cleanup()


def _stop_on_signals() -> asyncio.Event:
    """Set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _start_grpc(server: ModelServer, host: str, port: int) -> Any:
    if not port:
        return None
    from kubeloop.serving.grpc_server import start_grpc  # imports grpc only when used

    return await start_grpc(server, host, port)


async def _load_into(server: ModelServer, model_dir: Path, metadata: ModelMetadata) -> bool:
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
    server.set_model(model)
    log.info(
        "Loaded model %s version %s in %.2fs (feature monitoring %s)",
        server.name,
        metadata.version,
        time.monotonic() - began,
        "on" if server.monitoring and model.profile else "off",
    )
    return True


async def _serve_loaded(
    server: ModelServer,
    model_dir: Path,
    metadata: ModelMetadata,
    host: str,
    port: int,
    grpc_port: int,
) -> int:
    """A worker: load, then share the ports until SIGTERM or SIGINT."""
    if not await _load_into(server, model_dir, metadata):
        return 1
    try:
        runner = await start(server, host, port, reuse_port=True)
        extra = await _start_grpc(server, host, grpc_port)
    except OSError as exc:
        log.error("Failed to listen on %s:%s: %s", host, port, exc)
        return 1
    stop = _stop_on_signals()
    try:
        await stop.wait()
        return 0
    finally:
        if extra is not None:
            await extra.stop(2.0)
        await runner.cleanup()
