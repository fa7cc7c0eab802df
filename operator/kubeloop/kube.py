"""The single adapter to the API server.

Every write goes through here: server-side apply under one field manager, status
through the status subresource, deletes, events. Credentials come from the official
kubernetes client's config loaders (kubeconfig or in-cluster); requests go over one
shared aiohttp session, so reconciles never block Kopf's event loop on I/O.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from kubeloop import __version__, metrics
from kubeloop.jsoncodec import loads
from kubeloop.names import API_VERSION

FIELD_MANAGER = "kubeloop"
# Names the operator in the API server's audit log and request logs.
USER_AGENT = f"kubeloop/{__version__}"
TOKEN_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class Resource:
    plural: str
    namespaced: bool = True


RESOURCES: dict[tuple[str, str], Resource] = {
    ("v1", "Pod"): Resource("pods"),
    ("v1", "Service"): Resource("services"),
    ("v1", "Event"): Resource("events"),
    ("v1", "ConfigMap"): Resource("configmaps"),
    ("v1", "Node"): Resource("nodes", namespaced=False),
    ("v1", "Namespace"): Resource("namespaces", namespaced=False),
    ("batch/v1", "Job"): Resource("jobs"),
    ("apps/v1", "Deployment"): Resource("deployments"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): Resource("horizontalpodautoscalers"),
    ("discovery.k8s.io/v1", "EndpointSlice"): Resource("endpointslices"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): Resource("httproutes"),
    (API_VERSION, "TrainingJob"): Resource("trainingjobs"),
    (API_VERSION, "ModelDeployment"): Resource("modeldeployments"),
    (API_VERSION, "DriftMonitor"): Resource("driftmonitors"),
    (API_VERSION, "ComputeTemplate"): Resource("computetemplates", namespaced=False),
    (API_VERSION, "Experiment"): Resource("experiments"),
    (API_VERSION, "BatchPrediction"): Resource("batchpredictions"),
    ("kopf.dev/v1", "KopfPeering"): Resource("kopfpeerings"),
    ("kopf.dev/v1", "ClusterKopfPeering"): Resource("clusterkopfpeerings", namespaced=False),
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


def load_configuration(kubeconfig: str | None = None) -> Configuration:
    """Kubeconfig (explicit, $KUBECONFIG or ~/.kube/config), else in-cluster."""
    cfg = Configuration()
    # Read $KUBECONFIG now, not the client library's import-time default.
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if os.path.exists(path.split(os.pathsep)[0]):
        kube_config.load_kube_config(config_file=path, client_configuration=cfg)
    else:
        kube_config.load_incluster_config(client_configuration=cfg)
    return cfg


def path_for(
    api_version: str,
    kind: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    res = RESOURCES[(api_version, kind)]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if res.namespaced and namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(res.plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Kube:
    def __init__(self, cfg: Configuration, field_manager: str = FIELD_MANAGER) -> None:
        self._cfg = cfg
        self._kubeconfig: str | None = None
        self.field_manager = field_manager
        self._session: aiohttp.ClientSession | None = None
        # Watches hold their connections open: their own session, so that they never
        # take the request session's connections (one watch per kind and namespace).
        self._watch_session: aiohttp.ClientSession | None = None
        self._token_at = 0.0
        self._host = cfg.host.rstrip("/")

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        kube = cls(load_configuration(kubeconfig))
        kube._kubeconfig = kubeconfig
        return kube

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._cfg.verify_ssl:
            return False
        ctx = ssl.create_default_context(cafile=self._cfg.ssl_ca_cert)
        if self._cfg.cert_file:
            ctx.load_cert_chain(self._cfg.cert_file, self._cfg.key_file)
        return ctx

    def _auth_header(self) -> dict[str, str]:
        # Projected service-account tokens rotate; reloading the config re-reads them.
        if time.monotonic() - self._token_at > TOKEN_REFRESH_SECONDS:
            if self._cfg.refresh_api_key_hook is not None:
                self._cfg.refresh_api_key_hook(self._cfg)
            self._token_at = time.monotonic()
        token = self._cfg.api_key.get("authorization") or self._cfg.api_key.get("BearerToken")
        if not token:
            return {}
        prefix = self._cfg.api_key_prefix.get("authorization", "")
        value = token if token.lower().startswith("bearer") else f"{prefix or 'Bearer'} {token}"
        return {"Authorization": value}

    def connection_info(self) -> dict[str, Any]:
        """The same credentials, in the shape of Kopf's ConnectionInfo arguments."""
        header = self._auth_header().get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return {
            "server": self._host,
            "ca_path": self._cfg.ssl_ca_cert,
            "insecure": not self._cfg.verify_ssl,
            "certificate_path": self._cfg.cert_file,
            "private_key_path": self._cfg.key_file,
            "scheme": scheme or None,
            "token": token or None,
        }

    async def session(self, *, watch: bool = False) -> aiohttp.ClientSession:
        current = self._watch_session if watch else self._session
        if current is None or current.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=0 if watch else 64)
            current = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=30, connect=10),
                headers={"User-Agent": USER_AGENT},
            )
            if watch:
                self._watch_session = current
            else:
                self._session = current
        return current

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        resource: str = "",
    ) -> dict[str, Any]:
        session = await self.session()
        headers = {"Accept": "application/json", **self._auth_header()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        status = 0
        try:
            async with session.request(
                method, self._host + path, params=query, data=data, headers=headers
            ) as resp:
                status = resp.status
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            metrics.API_REQUESTS.labels(method, resource, "error").inc()
            raise KubeError(0, "ConnectionError", str(exc) or type(exc).__name__) from exc
        metrics.API_REQUESTS.labels(method, resource, str(status)).inc()
        payload: dict[str, Any] = {}
        if text:
            try:
                payload = loads(text)
            except ValueError:
                payload = {"message": text[:500]}
        if status >= 400:
            message = str(payload.get("message", text[:500]))
            reason = str(payload.get("reason", ""))
            cls = NotFound if status == 404 else Conflict if status == 409 else KubeError
            raise cls(status, reason, message)
        return payload

    async def apply(self, obj: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        """Server-side apply of the whole object (or its status) as our field manager."""
        meta = obj["metadata"]
        path = path_for(
            obj["apiVersion"],
            obj["kind"],
            meta.get("namespace"),
            meta["name"],
            "status" if status else None,
        )
        return await self.request(
            "PATCH",
            path,
            query={"fieldManager": self.field_manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
            resource=obj["kind"] + ("/status" if status else ""),
        )

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET", path_for(api_version, kind, namespace, name), resource=kind
            )
        except NotFound:
            return None

    async def list_at(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """The objects and the list's resourceVersion, to watch from."""
        query = {"labelSelector": label_selector} if label_selector else None
        result = await self.request(
            "GET", path_for(api_version, kind, namespace), query=query, resource=kind
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items, str((result.get("metadata") or {}).get("resourceVersion", ""))

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        items, _ = await self.list_at(api_version, kind, namespace, label_selector)
        return items

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        resource_version: str,
        *,
        server_timeout: int,
        client_timeout: float,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch request from `resource_version`, with bookmarks,
        until the API server ends it (after `server_timeout`). A stream silent for
        `client_timeout` (longer: bookmarks come every minute) is dropped as dead."""
        session = await self.session(watch=True)
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(server_timeout),
        }
        if label_selector:
            query["labelSelector"] = label_selector
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=client_timeout)
        headers = {"Accept": "application/json", **self._auth_header()}
        url = self._host + path_for(api_version, kind, namespace)
        try:
            async with session.get(url, params=query, headers=headers, timeout=timeout) as resp:
                metrics.API_REQUESTS.labels("WATCH", kind, str(resp.status)).inc()
                if resp.status >= 400:
                    text = await resp.text()
                    raise KubeError(resp.status, "WatchRefused", text[:500])
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield loads(line)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeError(0, "ConnectionError", str(exc) or type(exc).__name__) from exc

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete (with a uid precondition when given); False when already gone."""
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request(
                "DELETE", path_for(api_version, kind, namespace, name), body=body, resource=kind
            )
        except NotFound:
            return False
        except Conflict:
            # The uid precondition failed: the object is already a newer one.
            return False
        return True

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self.request(
            "POST",
            path_for(obj["apiVersion"], obj["kind"], meta.get("namespace")),
            body=obj,
            resource=obj["kind"],
        )

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        field_manager: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch, recorded in managedFields under `field_manager`."""
        return await self.request(
            "PATCH",
            path_for(api_version, kind, namespace, name, subresource),
            query={"fieldManager": field_manager or self.field_manager},
            body=patch,
            content_type="application/merge-patch+json",
            resource=kind + (f"/{subresource}" if subresource else ""),
        )
