"""The Open Inference Protocol v2 over gRPC, beside the REST side: the same model, the
same validation, the same batcher and the same metrics (a gRPC answer is counted under
the HTTP status it corresponds to: 200, 400, 404, 503 or 500)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import grpc
import numpy as np

from kubeloop import __version__
from kubeloop.serving import binary
from kubeloop.serving.grpc_schema import METHODS, SERVICE, message
from kubeloop.serving.server import (
    ModelServer,
    RequestError,
    _datatype,
    parse_infer_request,
)

log = logging.getLogger("kubeloop.serving.grpc")

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}
CONTENTS = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents"}


def _bad(text: str) -> RequestError:
    return RequestError(400, text)


class InferenceService:
    """The handlers of `inference.GRPCInferenceService` for one ModelServer."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

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
        return message("ServerReadyResponse")(ready=self.server.model is not None)

    async def model_ready(self, request: Any, context: Any) -> Any:
        await self._known(request.name, context)
        return message("ModelReadyResponse")(ready=self.server.model is not None)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return message("ServerMetadataResponse")(
            name="kubeloop", version=__version__, extensions=["binary_tensor_data"]
        )

    async def model_metadata(self, request: Any, context: Any) -> Any:
        await self._known(request.name, context)
        metadata = self.server.metadata
        answer = message("ModelMetadataResponse")(
            name=self.server.name, versions=[metadata.version], platform=metadata.framework
        )
        for specs, out in ((metadata.inputs, answer.inputs), (metadata.outputs, answer.outputs)):
            for spec in specs:
                out.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        return answer

    async def _known(self, name: str, context: Any) -> None:
        if name != self.server.name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}")

    async def model_infer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        status = 200
        try:
            return await self._infer(request)
        except RequestError as exc:
            status = exc.status
            await context.abort(CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
        except Exception:
            status = 500
            log.exception("Failed to answer a gRPC inference request for %s", self.server.name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error while predicting")
        finally:
            self.server.count(status, started)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _infer(self, request: Any) -> Any:
        if request.model_name != self.server.name:
            raise RequestError(404, f"unknown model {request.model_name!r}")
        model = self.server.loaded()
        parsed = parse_infer_request(self._payload(request), model)
        results = await self.server.predict(parsed)
        answer = message("ModelInferResponse")(
            model_name=self.server.name, model_version=self.server.metadata.version
        )
        if parsed.request_id:
            answer.id = parsed.request_id
        for name in parsed.outputs:
            values = results[name]
            datatype = _datatype(values)
            answer.outputs.add(name=name, datatype=datatype, shape=list(values.shape))
            answer.raw_output_contents.append(binary.encode(values, datatype))
        return answer

    @staticmethod
    def _payload(request: Any) -> dict[str, Any]:
        """The request as the REST parser takes it: each input's values decoded here."""
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise _bad(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
        inputs = []
        for index, tensor in enumerate(request.inputs):
            shape = list(tensor.shape)
            if any(d < 0 for d in shape):
                raise _bad(f"input {tensor.name!r}: 'shape' must be non-negative")
            if tensor.datatype not in CONTENTS:
                raise _bad(
                    f"input {tensor.name!r}: datatype {tensor.datatype!r} not supported; "
                    f"use one of {', '.join(CONTENTS)}"
                )
            if raw:
                dtype = np.dtype(binary.INPUT_TYPES[tensor.datatype])
                if len(raw[index]) != math.prod(shape) * dtype.itemsize:
                    raise _bad(
                        f"input {tensor.name!r}: {len(raw[index])} raw bytes do not match "
                        f"shape {shape} of {tensor.datatype}"
                    )
                values = np.frombuffer(raw[index], dtype=dtype)
            else:
                values = np.asarray(getattr(tensor.contents, CONTENTS[tensor.datatype]))
                if values.size != math.prod(shape):
                    raise _bad(
                        f"input {tensor.name!r}: shape {shape} needs {math.prod(shape)} "
                        f"values, got {values.size}"
                    )
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


async def start_grpc(server: ModelServer, host: str, port: int) -> Any:
    """The gRPC server on `host:port` (several workers share it: SO_REUSEPORT is gRPC's
    default on Linux)."""
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers((InferenceService(server).handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if grpc_server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address} for gRPC")
    await grpc_server.start()
    log.info("Started listening for gRPC on %s", address)
    return grpc_server
