"""The operator names itself on every request it sends: the API server's audit log and
request logs attribute its writes by this User-Agent (bench/operator_bench.py counts
them so), instead of aiohttp's generic one."""

from __future__ import annotations

import asyncio

from aiohttp import web
from kubernetes.client import Configuration

from kubeloop import __version__
from kubeloop.kube import Kube


async def _agents_seen() -> list[str]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = Configuration(host=f"http://127.0.0.1:{port}")
    kube = Kube(cfg)
    try:
        await kube.get("v1", "ConfigMap", "default", "x")
        await kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "x", "namespace": "default"}})
    finally:
        await kube.close()
        await runner.cleanup()
    return seen


def test_every_request_names_the_operator_and_its_version() -> None:
    assert asyncio.run(_agents_seen()) == [f"kubeloop/{__version__}"] * 2
