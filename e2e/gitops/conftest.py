"""The GitOps bed: Flux's real source-controller and kustomize-controller (hack/flux.py)
beside the e2e bed's chart and operator process, syncing each test's namespace from its
own repository on the loopback git server (hack/githttp.py). A test commits on disk and
asks Flux to reconcile now, as `flux reconcile` does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubetest import ROOT, Cluster, wait_for

FLUX_SCRIPT = ROOT / "hack" / "flux.py"
SOURCE = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZE = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def flux(*args: str) -> None:
    subprocess.run([sys.executable, str(FLUX_SCRIPT), *args], check=True)


@pytest.fixture(scope="session")
def flux_ports(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """Flux's CRDs, its two controllers and the git server, for the session."""
    flux("install")
    flux("start")
    state = Path(cluster.kubeconfig).parent
    yield json.loads((state / "flux.json").read_text())
    flux("stop")


class Repo:
    """A test's repository, and the GitRepository and Kustomization that sync it into
    the test's namespace (prune on, `wait: true`: health-checked)."""

    def __init__(self, cluster: Cluster, namespace: str, ports: dict[str, Any]) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.dir = Path(ports["gitRoot"]) / namespace
        self.dir.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.url = f"http://127.0.0.1:{ports['git']}/{namespace}"

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=kubeloop-e2e", "-c", "user.email=e2e@kubeloop.invalid",
             *args], cwd=self.dir, check=True, capture_output=True, text=True).stdout.strip()

    def commit(self, message: str, **files: list[dict[str, Any]] | None) -> str:
        """Write (or, for None, remove) FILE.yaml for each keyword; commit; the revision
        as Flux names it."""
        for name, objects in files.items():
            path = self.dir / f"{name}.yaml"
            if objects is None:
                path.unlink()
            else:
                path.write_text(yaml.safe_dump_all(objects))
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return f"main@sha1:{self.git('rev-parse', 'HEAD')}"

    def connect(self, timeout: str = "90s") -> None:
        ns = self.namespace
        source = {
            "apiVersion": "/".join(SOURCE[:2]), "kind": "GitRepository",
            "metadata": {"name": "models", "namespace": ns},
            "spec": {"url": self.url, "interval": "10m", "ref": {"branch": "main"}},
        }
        kustomization = {
            "apiVersion": "/".join(KUSTOMIZE[:2]), "kind": "Kustomization",
            "metadata": {"name": "models", "namespace": ns},
            "spec": {
                "interval": "10m", "retryInterval": "5s", "timeout": timeout,
                "sourceRef": {"kind": "GitRepository", "name": "models"},
                "path": "./", "prune": True, "wait": True, "targetNamespace": ns,
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [source, kustomization]}))

    def reconcile(self) -> str:
        """`flux reconcile kustomization --with-source`: both asked to sync now."""
        token = f"{time.time():.6f}"
        for group, version, plural in (SOURCE, KUSTOMIZE):
            self.cluster.custom.patch_namespaced_custom_object(
                group, version, self.namespace, plural, "models",
                {"metadata": {"annotations": {REQUESTED_AT: token}}})
        return token

    def kustomization(self) -> dict[str, Any]:
        group, version, plural = KUSTOMIZE
        obj: dict[str, Any] = self.cluster.custom.get_namespaced_custom_object(
            group, version, self.namespace, plural, "models")
        return obj

    def ready(self) -> dict[str, Any]:
        """The Kustomization's Ready condition ({} before it has one)."""
        conds = (self.kustomization().get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "Ready"), {})

    def wait_applied(self, revision: str, status: str, timeout: float = 120) -> dict[str, Any]:
        """The Kustomization's Ready condition once it is `status` ("True"/"False") for
        `revision` (the revision it last attempted)."""
        def done() -> dict[str, Any] | None:
            ks = self.kustomization().get("status") or {}
            ready = self.ready()
            return ready if ks.get("lastAttemptedRevision") == revision and \
                ready.get("status") == status else None

        try:
            return wait_for(done, timeout, f"Kustomization Ready={status} at {revision}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; status: {self.kustomization().get('status')}") from None


@pytest.fixture
def repo(cluster: Cluster, namespace: str, flux_ports: dict[str, Any]) -> Repo:
    return Repo(cluster, namespace, flux_ports)
