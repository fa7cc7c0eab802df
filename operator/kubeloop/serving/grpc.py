"""The gRPC front end of the model server: the Open Inference Protocol v2 over gRPC,
beside the REST one and answering as it does. It only translates between protobuf
messages and the data plane (:mod:`kubeloop.serving.dataplane`): the same model names
and versions, the same checks and words, the same metadata, the same batcher and the
same metrics (a gRPC answer is counted under the HTTP status it corresponds to: 200,
400, 404, 503 or 500)."""

from __future__ import annotations

import logging
import math
import socket
import time
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from kubeloop.serving import binary
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.grpc_schema import METHODS, SERVICE, message
from kubeloop.serving.protocol import (
    DATATYPES,
    RequestError,
    bad,
    check_shape,
    datatype_of,
    parse_infer_request,
    unsupported_datatype,
)

log = logging.getLogger("kubeloop.serving.grpc")

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
CONTENTS = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents"}
assert set(CONTENTS) == set(DATATYPES)


class ListenError(OSError):
    """The gRPC port cannot be had (taken, or an address that is not this host's)."""


def code_for(status: int) -> grpc.StatusCode:
    return CODES.get(status, grpc.StatusCode.INTERNAL)


class InferenceService:
    """The handlers of `inference.GRPCInferenceService` for one data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        # Built once from the data plane's own metadata, as the REST side encodes it once.
        self._server_metadata = json_format.ParseDict(
            plane.server_metadata, message("ServerMetadataResponse")()
        )
        self._model_metadata = json_format.ParseDict(
            plane.model_metadata, message("ModelMetadataResponse")()
        )

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {}
        for name, (request, response) in METHODS.items():
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
            methods[name] = grpc.unary_unary_rpc_method_handler(
                getattr(self, snake),
                request_deserializer=message(request).FromString,
                response_serializer=message(response).SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def server_live(self, request: Any, context: Any) -> Any:
        return message("ServerLiveResponse")(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return message("ServerReadyResponse")(ready=self.plane.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        await self._check(request.name, request.version, context)
        return message("ModelReadyResponse")(ready=self.plane.ready)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return self._server_metadata

    async def model_metadata(self, request: Any, context: Any) -> Any:
        await self._check(request.name, request.version, context)
        return self._model_metadata

    async def _check(self, name: str, version: str, context: Any) -> None:
        try:
            self.plane.check(name, version)
        except RequestError as exc:
            await context.abort(code_for(exc.status), exc.message)

    async def model_infer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        status = 200
        try:
            return await self._infer(request)
        except RequestError as exc:
            status = exc.status
            await context.abort(code_for(exc.status), exc.message)
        except Exception:
            error = self.plane.internal_error("gRPC")
            status = error.status
            await context.abort(code_for(error.status), error.message)
        finally:
            self.plane.count(status, started)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _infer(self, request: Any) -> Any:
        plane = self.plane
        model = plane.model_for(request.model_name, request.model_version)
        parsed = parse_infer_request(_payload(request), model)
        request_id = plane.request_id(parsed)
        results = await plane.predict(parsed, request_id)
        answer = message("ModelInferResponse")(model_name=plane.name, model_version=plane.version)
        if request_id:
            answer.id = request_id
        for name in parsed.outputs:
            values = results[name]
            datatype = datatype_of(values)
            answer.outputs.add(name=name, datatype=datatype, shape=list(values.shape))
            answer.raw_output_contents.append(binary.encode(values, datatype))
        return answer


def _payload(request: Any) -> dict[str, Any]:
    """The request as the protocol's payload (the shape of a REST body): each input's
    values decoded here, every other check left to the protocol."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        if tensor.datatype not in CONTENTS:
            raise unsupported_datatype(tensor.name, tensor.datatype)
        shape = check_shape(list(tensor.shape), tensor.name)
        if raw:
            dtype = np.dtype(binary.INPUT_TYPES[tensor.datatype])
            if len(raw[index]) != math.prod(shape) * dtype.itemsize:
                raise bad(
                    f"input {tensor.name!r}: {len(raw[index])} raw bytes do not match "
                    f"shape {shape} of {tensor.datatype}"
                )
            values = np.frombuffer(raw[index], dtype=dtype)
        else:
            values = np.asarray(getattr(tensor.contents, CONTENTS[tensor.datatype]))
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": shape,
                binary.VALUES: values,
            }
        )
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if request.outputs:
        payload["outputs"] = [{"name": out.name} for out in request.outputs]
    return payload


async def start_grpc(plane: DataPlane, host: str, port: int) -> Any:
    """The gRPC server on `host:port` (several workers share it: SO_REUSEPORT is gRPC's
    default on Linux). Raises :class:`ListenError` when the port cannot be had."""
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers((InferenceService(plane).handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    _check_free(host, port)
    try:
        # grpcio raises RuntimeError ("Failed to bind to address ...") where older
        # releases returned 0.
        bound = grpc_server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ListenError(str(exc)) from None
    if bound == 0:
        raise ListenError(f"Failed to bind to address {address}")
    await grpc_server.start()
    log.info("Started listening for gRPC on %s", address)
    return grpc_server


def _check_free(host: str, port: int) -> None:
    """Bind the address as gRPC will (SO_REUSEADDR and SO_REUSEPORT, so that workers
    sharing it pass), to refuse a taken port with the kernel's words: gRPC's own
    refusal is a log line of its core and an exception that says only "Failed to bind"."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(str(exc)) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            raise ListenError(str(exc)) from None
