"""Model servers on loopback standing in for the pods of a ModelDeployment.

The local cluster's nodes are simulated (kwok): its pods run nothing. For the canary's
analysis the operator reads each pod's `/metrics` at its pod IP, so this bed gives each
new pod an address of its own on loopback (127.0.0.0/8 is all local), sets the pod's
`status.podIP` to it, and runs a real `kubeloop` model server there that answers as
that track's model: healthy, failing on part of its inputs, or slow. Traffic is sent
to every ready pod in turn, as the Service would spread it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import requests
from kubernetes.client.exceptions import ApiException

from kubeloop.modeldir import LoadedModel
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.rest import start
from tests.kubetest import Cluster

_subnets = itertools.count(10)


@dataclass(frozen=True)
class Behaviour:
    fail_above: float | None = None  # a row whose first feature is above this fails (500)
    delay: float = 0.0  # seconds added to every predict


class _Estimator:
    """The trained estimator, made to fail on part of its inputs or to be slow."""

    def __init__(self, inner: Any, behaviour: Behaviour) -> None:
        self.inner, self.behaviour = inner, behaviour
        self.classes_ = inner.classes_

    def predict(self, rows: np.ndarray) -> Any:
        if self.behaviour.delay:
            time.sleep(self.behaviour.delay)
        limit = self.behaviour.fail_above
        if limit is not None and bool((rows[:, 0] > limit).any()):
            raise ValueError("this model cannot score such rows")
        return self.inner.predict(rows)

    def predict_proba(self, rows: np.ndarray) -> Any:
        return self.inner.predict_proba(rows)


class _Server:
    """One model server on its own event loop thread (a slow predict blocks only it)."""

    def __init__(self, model: LoadedModel, name: str, host: str, port: int) -> None:
        self.server = DataPlane(model.metadata, name=name)
        self.server.set_model(model)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start(self.server, host, port), self.loop)
        self.runner = future.result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Fleet:
    """The pods of one ModelDeployment, served on loopback as they appear."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        name: str,
        port: int,
        model: LoadedModel,
        rows: np.ndarray,
    ) -> None:
        self.cluster, self.namespace, self.name, self.port = cluster, namespace, name, port
        self.model, self.rows = model, rows
        self.behaviours: dict[str, Behaviour] = {}  # by model uri
        self.models: dict[str, LoadedModel] = {}  # by model uri; else `model`
        self.servers: dict[str, _Server] = {}  # by pod uid
        self.addresses: dict[str, str] = {}  # pod uid -> ip
        self.sending = threading.Event()
        self.sent: dict[str, int] = {}  # by status code
        self._subnet = next(_subnets)
        self._hosts = itertools.count(2)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._assign_forever, daemon=True),
            threading.Thread(target=self._send_forever, daemon=True),
        ]

    def behave(self, uri: str, behaviour: Behaviour) -> None:
        """Pods that serve `uri` (their model-uri annotation) answer like this."""
        self.behaviours[uri] = behaviour

    def serve(self, uri: str, model: LoadedModel) -> None:
        """Pods that serve `uri` load this model (its profile, version, calibration)."""
        self.models[uri] = model

    def __enter__(self) -> Fleet:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for server in self.servers.values():
            server.stop()

    def _pods(self) -> list[Any]:
        selector = f"kubeloop.io/model-deployment={self.name}"
        return list(
            self.cluster.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        )

    def _assign(self, pod: Any) -> None:
        uid = pod.metadata.uid
        uri = (pod.metadata.annotations or {}).get("kubeloop.io/model-uri", "")
        ip = f"127.0.{self._subnet}.{next(self._hosts)}"
        model = self.models.get(uri, self.model)
        estimator = _Estimator(model.estimator, self.behaviours.get(uri, Behaviour()))
        self.servers[uid] = _Server(replace(model, estimator=estimator), self.name, ip, self.port)
        self.addresses[uid] = ip
        body = [
            {"op": "replace", "path": "/status/podIP", "value": ip},
            {"op": "replace", "path": "/status/podIPs", "value": [{"ip": ip}]},
        ]
        try:
            self.cluster.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, body)
        except ApiException as err:
            if err.status != 404:
                raise
            # Deleted between the list and the patch (a rollout replaced it): no server.
            self.servers.pop(uid).stop()
            self.addresses.pop(uid)

    def _assign_forever(self) -> None:
        while not self._stop.is_set():
            for pod in self._pods():
                if pod.metadata.uid not in self.servers and pod.status.phase == "Running":
                    self._assign(pod)
            self._stop.wait(0.2)

    def ready_addresses(self) -> list[str]:
        out = []
        for pod in self._pods():
            ready = any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            ip = self.addresses.get(pod.metadata.uid)
            if ready and ip and pod.status.pod_ip == ip and not pod.metadata.deletion_timestamp:
                out.append(ip)
        return out

    def _send_forever(self) -> None:
        session = requests.Session()
        rows = itertools.cycle(range(len(self.rows)))
        while not self._stop.is_set():
            if not self.sending.is_set():
                self._stop.wait(0.1)
                continue
            for ip in self.ready_addresses():
                row = self.rows[next(rows)]
                body = {
                    "inputs": [
                        {
                            "name": "input-0",
                            "datatype": "FP64",
                            "shape": [1, len(row)],
                            "data": [row.tolist()],
                        }
                    ]
                }
                try:
                    answer = session.post(
                        f"http://{ip}:{self.port}/v2/models/{self.name}/infer",
                        data=json.dumps(body),
                        timeout=5,
                    )
                except requests.RequestException:
                    continue
                key = str(answer.status_code)
                self.sent[key] = self.sent.get(key, 0) + 1
            self._stop.wait(0.02)
