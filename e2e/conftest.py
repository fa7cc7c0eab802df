"""The e2e bed: the Helm chart installed into the cluster, and the operator running as
its own process with the chart's ServiceAccount token, so that a permission missing
from the chart's RBAC fails the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kubetest import ROOT, Cluster, tool, wait_for
from tests.rbac import helm_drop, refused, release_refused, token_kubeconfig

RELEASE, SYSTEM_NS = "kubeloop", "kubeloop-system"


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # An install or upgrade renders the chart without $KUBELOOP_RBAC_DROP (tests/rbac.py).
    flags, env = helm_drop(args)
    done = subprocess.run([tool("helm"), "--kubeconfig", cluster.kubeconfig, *args, *flags],
                          capture_output=True, text=True, env={**os.environ, **env})
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done


class OperatorProcess:
    """`kubeloop run` in its own process, as the chart's ServiceAccount, writing under
    its own field manager: managedFields then say which process made an object."""

    running: list[OperatorProcess] = []

    def __init__(self, kubeconfig: Path, log: Path, *args: str,
                 field_manager: str = "kubeloop") -> None:
        self.log, self.kubeconfig, self.args = log, kubeconfig, args
        self.field_manager = field_manager
        self.start(mode="wb")

    def start(self, mode: str = "ab") -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with open(self.log, mode) as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubeloop", "run", "--metrics-port", "0",
                 "--health-port", "0", "--log-format", "json",
                 "--field-manager", self.field_manager,
                 "--drift-source-allow", "http://127.0.0.1:", *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        OperatorProcess.running.append(self)

    def forbidden(self) -> list[str]:
        """Every line where the API server refused the operator something."""
        return [line for line in self.log.read_text().splitlines()
                if (" 403" in line or "Forbidden" in line or "forbidden" in line)
                # A namespace being deleted refuses new objects to everyone: not RBAC.
                and "being terminated" not in line]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self in OperatorProcess.running:
            OperatorProcess.running.remove(self)


@pytest.fixture
def alone() -> Iterator[None]:
    """No other operator runs during the test (the session's is stopped, then started
    again): what happens in the cluster is the work of the one the test starts."""
    others = list(OperatorProcess.running)
    for op in others:
        op.stop()
    yield
    for op in others:
        op.start()


def managers(obj: Any) -> set[str]:
    """The field managers recorded on an object (a client model or a dict)."""
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata.to_dict()
    return {entry["manager"] for entry in meta.get("managed_fields") or
            meta.get("managedFields") or []}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bed = Cluster()
    yield bed
    bed.stop()


@pytest.fixture(scope="session")
def chart(cluster: Cluster) -> Iterator[str]:
    """`helm install` of charts/kubeloop, removed at the end of the session."""
    helm(cluster, "upgrade", "--install", RELEASE, str(ROOT / "charts" / "kubeloop"),
         "--namespace", SYSTEM_NS, "--create-namespace", "--wait", "--timeout", "120s")
    release_refused(cluster, RELEASE, SYSTEM_NS, RELEASE)  # hack/rbac_necessity.py
    cluster.install_crds()
    yield RELEASE
    helm(cluster, "uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", check=False)


@pytest.fixture(scope="session")
def operator_process(cluster: Cluster, chart: str, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[OperatorProcess]:
    work = tmp_path_factory.mktemp("operator")
    kubeconfig = token_kubeconfig(cluster, SYSTEM_NS, chart, work / "kubeconfig")
    op = OperatorProcess(kubeconfig, work / "operator.log")
    yield op
    op.stop()
    refused(op.forbidden())


@pytest.fixture
def namespace(cluster: Cluster, operator_process: OperatorProcess) -> Iterator[str]:
    assert operator_process.proc.poll() is None, "the operator process died"
    name = cluster.new_namespace()
    yield name
    refused(operator_process.forbidden())
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


__all__ = ["OperatorProcess", "helm", "managers", "token_kubeconfig", "wait_for"]
