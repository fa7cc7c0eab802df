from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kubetest import Cluster, InProcessOperator


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bed = Cluster()
    bed.install_crds()
    yield bed
    bed.stop()


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[InProcessOperator]:
    # Drift sources on loopback are allowed: the tests run model servers there.
    op = InProcessOperator(image="kubeloop:test", drift_source_allowlist=["http://127.0.0.1:"])
    op.start()
    yield op
    op.stop()


@pytest.fixture
def namespace(cluster: Cluster, operator: InProcessOperator) -> Iterator[str]:
    """A fresh namespace per test, with the operator running; removed afterwards. An
    operator that died during the test fails that test (it is started again for the
    next one, never quietly)."""
    assert operator.alive, "the in-process operator is not running"
    name = cluster.new_namespace()
    yield name
    cluster.delete_namespace(name)
    if not operator.alive:
        operator.start()
        pytest.fail("the in-process operator died during this test")
