"""The REST front end of the model server: the Open Inference Protocol v2 over HTTP (the
dialect KServe, Triton and MLServer share), JSON or the binary tensor extension, and
``/metrics``. It only translates between HTTP and the data plane
(:mod:`kubeloop.serving.dataplane`).

Lean on purpose, as the hot path: stdlib ``json`` with a shared encoder (or orjson to
decode), metadata encoded once, and no access log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from kubeloop.jsoncodec import loads
from kubeloop.serving import binary, labelled_rows, workers
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.protocol import (
    RequestError,
    bad,
    datatype_of,
    encode_json,
    output_tensor,
    parse_infer_request,
)

log = logging.getLogger("kubeloop.serving")

MAX_BODY_BYTES = 8 << 20
JSON = "application/json"


def error_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=encode_json({"error": message}), content_type=JSON)


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode_json(payload), content_type=JSON)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_as_v2(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error, the router's 404/405 included, with a v2 error body."""
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception:
        log.exception("Failed to answer %s %s", request.method, request.path)
        return error_response(500, "internal server error")


class RestFrontEnd:
    """The v2 REST routes of one data plane. With several worker processes, ``peers``
    is where the others answer their own /metrics, added up into this one's."""

    def __init__(self, plane: DataPlane, *, peers: Path | None = None, peer_index: int = 0):
        self.plane = plane
        self.peers, self.peer_index = peers, peer_index
        self._server_metadata = encode_json(plane.server_metadata)
        self._model_metadata = encode_json(plane.model_metadata)

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
        # Not under /versions/{version}: a label may be for another version's answer,
        # which each record names (docs/serving.md).
        routes.add_post("/v2/models/{name}/feedback", self.feedback)
        routes.add_get("/v2/models/{name}/feedback/rows", self.feedback_rows)
        routes.add_get("/metrics", self.metrics)
        return app

    def _check(self, request: web.Request) -> None:
        self.plane.check(request.match_info["name"], request.match_info.get("version"))

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.plane.ready
        return json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=self._server_metadata, content_type=JSON)

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.Response(body=self._model_metadata, content_type=JSON)

    async def model_ready(self, request: web.Request) -> web.Response:
        self._check(request)
        return await self.ready(request)

    async def model_profile(self, request: web.Request) -> web.Response:
        """The model's reference profile (profile.json), so that a DriftMonitor can compare
        against the very model this pod serves without reading its storage."""
        profile = self.plane.profile(request.match_info["name"], request.match_info.get("version"))
        return web.Response(
            body=profile.model_dump_json(by_alias=True, exclude_none=True), content_type=JSON
        )

    async def feedback(self, request: web.Request) -> web.Response:
        """Labels for answers given (by any replica); all counted or none (400)."""
        name = request.match_info["name"]
        self.plane.check(name, None)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestError(413, f"request body larger than {MAX_BODY_BYTES} bytes") from exc
        try:
            payload = loads(body)
        except (ValueError, RecursionError) as exc:
            raise bad(f"the request body is not valid JSON: {exc}") from exc
        counted = self.plane.feedback(name, payload)
        return json_response({"model_name": self.plane.name, "counted": counted})

    async def own_feedback_rows(self, request: web.Request) -> web.Response:
        return json_response(self.plane.labelled_rows(request.match_info["name"]))

    async def feedback_rows(self, request: web.Request) -> web.Response:
        """The labelled rows kept (feedback records with inputs), of every worker: JSON,
        or CSV with ``?format=csv`` (docs/quality.md)."""
        snapshot = self.plane.labelled_rows(request.match_info["name"])
        if self.peers is not None:
            path = f"/v2/models/{self.plane.name}/feedback/rows"
            texts = await workers.peer_get(self.peers, self.peer_index, path)
            snapshot = labelled_rows.merge(
                [snapshot, *(loads(t.encode()) for t in texts)], snapshot["capacity"]
            )
        if request.query.get("format") == "csv":
            return web.Response(text=labelled_rows.to_csv(snapshot), content_type="text/csv")
        return json_response(snapshot)

    async def own_metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.plane.metrics_text())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        if self.peers is None:
            return await self.own_metrics(request)
        texts = [self.plane.metrics_text().decode()]
        texts += await workers.peer_metrics(self.peers, self.peer_index)
        response = web.Response(body=workers.merge(texts).encode())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        plane = self.plane
        try:
            response = await self._infer(request)
        except RequestError as exc:
            response = error_response(exc.status, exc.message)
        except Exception:
            error = plane.internal_error("REST")
            response = error_response(error.status, error.message)
        plane.count(response.status, started)
        return response

    async def _infer(self, request: web.Request) -> web.Response:
        plane = self.plane
        model = plane.model_for(request.match_info["name"], request.match_info.get("version"))
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestError(413, f"request body larger than {MAX_BODY_BYTES} bytes") from exc
        header, blob = binary.split(body, request.headers.get(binary.HEADER), bad)
        try:
            payload = loads(header)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise bad(f"the request body is not valid JSON: {exc}") from exc
        if blob or binary.HEADER in request.headers:
            binary.attach_inputs(payload, blob, bad)
        parsed = parse_infer_request(payload, model)
        request_id = plane.request_id(parsed)
        results = await plane.predict(parsed, request_id)

        as_binary = binary.wanted(payload, parsed.outputs)
        blobs: list[bytes] = []
        outputs = []
        for name in parsed.outputs:
            if name in as_binary:
                values = results[name]
                datatype = datatype_of(values)
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
                outputs.append(output_tensor(name, results[name]))
        answer: dict[str, Any] = {
            "model_name": plane.name,
            "model_version": plane.version,
            "outputs": outputs,
        }
        if request_id is not None:
            answer["id"] = request_id
        if not blobs:
            return json_response(answer)
        head = encode_json(answer)
        return web.Response(
            body=head + b"".join(blobs),
            headers={binary.HEADER: str(len(head))},
            content_type="application/octet-stream",
        )


async def start(
    plane: DataPlane,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    peers: Path | None = None,
    peer_index: int = 0,
) -> web.AppRunner:
    """Start answering on ``host:port`` (0 picks a free port: see ``runner.addresses``);
    as one of several workers (`reuse_port`, `peers`), also its own /metrics on its unix
    socket."""
    front = RestFrontEnd(plane, peers=peers, peer_index=peer_index)
    # No access log: formatting a line per request would cost more than the predict.
    runner = web.AppRunner(front.app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
        )
        await site.start()
        if peers is not None:
            own = web.Application()
            own.router.add_get("/metrics", front.own_metrics)
            own.router.add_get("/v2/models/{name}/feedback/rows", front.own_feedback_rows)
            own_runner = web.AppRunner(own, access_log=None)
            await own_runner.setup()
            path = workers.socket_path(peers, peer_index)
            path.unlink(missing_ok=True)
            await web.UnixSite(own_runner, str(path)).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def base_url(address: Any) -> str:
    """``http://host:port`` of one of ``AppRunner.addresses`` (IPv6 in brackets)."""
    host, port = address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
