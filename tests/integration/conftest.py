from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from tests.kubetest import Cluster, InProcessOperator
from tests.rbac import chart_identity, refused

# The operator under test runs as the chart's ServiceAccount, with the chart's RBAC,
# installed under this release name (apart from the e2e bed's).
IDENTITY_RELEASE = IDENTITY_NS = "kubeloop-it"
TEST_NAMESPACE = re.compile(r"\bt-[0-9a-f]{8}\b")  # Cluster.new_namespace()'s names


class Refusals(logging.Handler):
    """Every log line of the operator where the API server refused it something."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        refused = " 403" in text or "orbidden" in text
        # A namespace being deleted refuses new objects to everyone: not RBAC.
        if refused and "being terminated" not in text:
            self.lines.append(text)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bed = Cluster()
    bed.install_crds()
    yield bed
    bed.stop()


@pytest.fixture(scope="session")
def refusals() -> Iterator[Refusals]:
    handler = Refusals()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, refusals: Refusals, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessOperator]:
    kubeconfig = chart_identity(
        cluster, IDENTITY_RELEASE, IDENTITY_NS, tmp_path_factory.mktemp("identity") / "kubeconfig"
    )
    # Drift sources on loopback are allowed: the tests run model servers there.
    op = InProcessOperator(
        kubeconfig, image="kubeloop:test", drift_source_allowlist=["http://127.0.0.1:"]
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def namespace(
    cluster: Cluster, operator: InProcessOperator, refusals: Refusals
) -> Iterator[str]:
    """A fresh namespace per test, with the operator running; removed afterwards. An
    operator that died during the test fails that test (it is started again for the
    next one, never quietly), and so does one the API server refused something: it
    runs with the chart's RBAC, so a missing permission fails the test that needs it."""
    assert operator.alive, "the in-process operator is not running"
    refusals.lines.clear()
    name = cluster.new_namespace()
    yield name
    cluster.delete_namespace(name)
    if not operator.alive:
        operator.start()
        pytest.fail("the in-process operator died during this test")
    # Another test's namespace may still be going away, its objects with it: only the
    # refusals of this test's objects, and of cluster-scoped ones, are this test's.
    mine = [
        line for line in refusals.lines
        if all(ns == name for ns in TEST_NAMESPACE.findall(line))
    ]
    refused(mine)  # (recorded, not failed, while hack/rbac_necessity.py drops a verb)
