"""Test-bed helpers: the local control plane (or $KUBECONFIG), the operator running
in-process, and condition waits with deadlines. No fake API server, no mocked client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeloop.names import GROUP, VERSION

ROOT = Path(__file__).resolve().parent.parent
PLURALS = {
    "TrainingJob": "trainingjobs",
    "ModelDeployment": "modeldeployments",
    "DriftMonitor": "driftmonitors",
    "ComputeTemplate": "computetemplates",
    "Experiment": "experiments",
    "BatchPrediction": "batchpredictions",
}
T = TypeVar("T")
# How often wait_for and stays look again: the waits are bounded by their deadlines.
POLL_INTERVAL = 0.1
# On a simulated node, a Job pod with this annotation runs until `Cluster.release`
# removes it (hack/kwok-stages.yaml): a run that lasts as long as the test needs, on a
# fast machine or a slow one, instead of a fixed `kubeloop.io/fake-duration`.
HOLD = {"kubeloop.io/fake-hold": "true"}


def tool(name: str) -> str:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cache = Path(os.environ.get("KUBELOOP_CACHE", Path.home() / ".cache" / "kubeloop"))
    return str(cache / f"tools-{versions['KUBECTL_LAYER_VERSION']}" / name)


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail with what was last seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except ApiException as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(POLL_INTERVAL)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


def or_none(read: Callable[..., T], *args: Any) -> T | None:
    """What `read(*args)` returns, or None when the API server says 404; any other
    answer (403, 500, a lost connection) fails the test instead of reading as absent."""
    try:
        return read(*args)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def stays(check: Callable[[], object], seconds: float, what: str) -> None:
    """Assert that `check` holds at every poll for `seconds` (an absence over a window,
    e.g. "no Job is re-created"), failing at the first poll where it does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what} stopped holding"
        time.sleep(POLL_INTERVAL)


class Cluster:
    """A real API server: ours (hack/cluster.py) or the one $KUBECONFIG names."""

    def __init__(self) -> None:
        self.started_here = False
        external = os.environ.get("KUBELOOP_TEST_KUBECONFIG") or os.environ.get("KUBECONFIG")
        if external:
            self.kubeconfig = external
        else:
            state = Path(os.environ.get("KUBELOOP_CLUSTER_DIR", ROOT / ".cluster")).absolute()
            self.kubeconfig = str(state / "kubeconfig")
            running = (
                subprocess.run(
                    ["python3", str(ROOT / "hack" / "cluster.py"), "status"],
                    capture_output=True,
                ).returncode
                == 0
            )
            if not running:
                subprocess.run(["python3", str(ROOT / "hack" / "cluster.py"), "up"], check=True)
                self.started_here = True
        os.environ["KUBECONFIG"] = self.kubeconfig
        self.api_client = config.new_client_from_config(config_file=self.kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling = client.AutoscalingV2Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)

    def stop(self) -> None:
        if self.started_here:
            subprocess.run(["python3", str(ROOT / "hack" / "cluster.py"), "down"], check=False)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("kubectl"), "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def install_crds(self) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        # Read from the API, not `kubectl wait`: on an API server started a moment ago,
        # kubectl wait exited 1 within 2 s (its discovery of the CRD kind, in the cold
        # CI of 2ef3071); a read that fails now is tried again until the deadline.
        extensions = client.ApiextensionsV1Api(self.api_client)

        def established(name: str) -> bool:
            crd = extensions.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        for plural in PLURALS.values():
            name = f"{plural}.{GROUP}"
            wait_for(lambda name=name: established(name), 60, f"crd/{name} Established")
        # Discovery may lag behind Established by a moment.
        wait_for(
            lambda: self.kubectl("get", "kubeloop", "-A", check=False).returncode == 0,
            30,
            "kubeloop category in discovery",
        )

    # Custom resources -------------------------------------------------------------
    def create(
        self,
        kind: str,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": spec,
        }
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], body
        )
        return result

    def apply_as(self, field_manager: str, manifests: str) -> None:
        """Server-side apply with force under `field_manager`: what a GitOps controller
        does with what Git holds (Flux's kustomize-controller: `kustomize-controller`)."""
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={field_manager}",
            "-f",
            "-",
            input=manifests,
        )

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name
        )
        return result

    def patch_spec(
        self, kind: str, namespace: str, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name, {"spec": spec}
        )
        return result

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)

    def status(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.get(kind, namespace, name).get("status") or {}

    def wait_phase(
        self, kind: str, namespace: str, name: str, phase: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(kind, namespace, name)
            return status if status.get("phase") == phase else None

        try:
            return wait_for(check, timeout, f"{kind} {name} phase {phase}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {self.status(kind, namespace, name)}") from None

    def release(self, namespace: str, training_job: str, timeout: float = 30.0) -> list[str]:
        """End the held pods (HOLD) of a TrainingJob: the annotation is removed from each
        live pod, and kwok then completes it like any other. Waits for at least one held
        pod; returns their names. Pods made later (a resume, a retry) are held again."""

        def held() -> list[Any] | None:
            pods = self.core.list_namespaced_pod(
                namespace, label_selector=f"kubeloop.io/training-job={training_job}"
            ).items
            found = [
                p for p in pods
                if not p.metadata.deletion_timestamp
                and set(HOLD) <= set(p.metadata.annotations or {})
            ]
            return found or None

        pods = wait_for(held, timeout, f"a held pod of {training_job}")
        for pod in pods:
            self.core.patch_namespaced_pod(
                pod.metadata.name, namespace,
                {"metadata": {"annotations": dict.fromkeys(HOLD)}},
            )
        return [p.metadata.name for p in pods]

    def condition(self, kind: str, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
        for cond in self.status(kind, namespace, name).get("conditions", []):
            if cond["type"] == ctype:
                return dict(cond)
        return None

    def events_for(self, namespace: str, name: str) -> list[Any]:
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return list(events.items)

    def event_reasons(self, namespace: str, name: str, kind: str | None = None) -> list[str]:
        """The reasons of the Events about `name` (of `kind` only, when given), oldest first."""
        return [
            e.reason
            for e in self.events_for(namespace, name)
            if kind is None or e.involved_object.kind == kind
        ]

    def await_events(
        self, namespace: str, name: str, wanted: set[str], timeout: float = 20.0,
        kind: str | None = None,
    ) -> list[str]:
        """Wait until Events with every reason in `wanted` are about `name`, and return all
        the reasons then seen. The operator posts an Event after the status write it
        explains, so a test that saw the status must wait for the Event, not read once."""
        seen: list[str] = []

        def arrived() -> list[str] | None:
            seen[:] = self.event_reasons(namespace, name, kind)
            return list(seen) if wanted <= set(seen) else None

        try:
            return wait_for(arrived, timeout, f"Events {sorted(wanted)} about {name}")
        except AssertionError as err:
            raise AssertionError(f"{err}; reasons seen: {sorted(set(seen))}") from None

    def new_namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace(
            client.V1Namespace(
                metadata=client.V1ObjectMeta(name=name, labels={"kubeloop.io/test": "true"})
            )
        )
        # Pods need the default service account, which the controller-manager creates.
        wait_for(
            lambda: self.core.read_namespaced_service_account("default", name),
            30,
            "default service account",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


class InProcessOperator:
    """`kubeloop run` in a thread of the test process (its own event loop)."""

    def __init__(self, kubeconfig: Path | None = None, **config: Any) -> None:
        self.config = config
        # None: the test bed's admin credentials; else the identity this file names.
        self.kubeconfig = kubeconfig
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self.error: BaseException | None = None

    def start(self, namespaces: tuple[str, ...] = ()) -> None:
        from kubeloop.controllers.common import OperatorConfig
        from kubeloop.kube import Kube
        from kubeloop.operator import run_operator

        self._stop = threading.Event()
        ready = threading.Event()
        stop = self._stop
        cfg = OperatorConfig(**self.config)
        kube = Kube.from_environment(str(self.kubeconfig)) if self.kubeconfig else None

        def main() -> None:
            try:
                asyncio.run(
                    run_operator(
                        cfg, namespaces=namespaces, stop_flag=stop, ready_flag=ready, kube=kube
                    )
                )
            except BaseException as exc:  # surfaced by the fixture
                self.error = exc
                ready.set()

        self._thread = threading.Thread(target=main, name="kubeloop-operator", daemon=True)
        self._thread.start()
        if not ready.wait(60):
            raise AssertionError("operator did not become ready in 60s")
        if self.error:
            raise AssertionError(f"operator failed to start: {self.error!r}")

    def stop(self) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join(30)
            if self._thread.is_alive():
                raise AssertionError("operator did not stop within 30s")
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
