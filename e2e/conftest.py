from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubetest import ROOT, Cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bed = Cluster()
    bed.install_crds()
    yield bed
    bed.stop()


@pytest.fixture(scope="session")
def operator_process(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[subprocess.Popen[bytes]]:
    """`kubeloop run` as its own process, the way it runs in a cluster."""
    log = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubeloop", "run", "--metrics-port", "0",
             "--health-port", "0", "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    if proc.returncode not in (0, -15):
        print(log.read_text()[-5000:])


@pytest.fixture
def namespace(cluster: Cluster, operator_process: subprocess.Popen[bytes]) -> Iterator[str]:
    assert operator_process.poll() is None, "the operator process died"
    name = cluster.new_namespace()
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
