"""The real-node bed: the local cluster's real node (kubelet + containerd), the kubeloop
image built offline and imported into it, and the Helm chart's operator running there
as a pod. Nothing here runs a container by hand or fakes a pod's phase: whatever these
tests see ran in containerd on this machine.

Run alone (`make e2e-real`): no other operator may be running, so that the one in the
pod is the only thing that can have done the work the tests check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.kubetest import ROOT, Cluster, tool, wait_for
from tests.rbac import helm_drop, release_refused

sys.path.insert(0, str(ROOT / "examples" / "train"))
from make_data import write_iris_csv

REAL_NODE = "kubeloop-node"
REAL_LABEL = "kubeloop.io/real-node"
RELEASE, SYSTEM_NS = "kubeloop", "kubeloop-system"
IMAGE = os.environ.get("KUBELOOP_IMAGE", "ghcr.io/kubeloop/kubeloop:0.1.0")
# What a pod needs to land on the real node (it is tainted for everyone else).
ON_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {REAL_LABEL: "true"},
    "tolerations": [{"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
}
TRAIN_COMMAND = ["python", "/opt/kubeloop/examples/train/train.py"]
# What a run measured: every run writes .cluster/e2e-real.json; a run of the whole suite
# (`make e2e-real`: every test file here, nothing deselected) also writes the committed
# tests/results/e2e-real.json, from which hack/e2e_real_figures.py renders the README's
# real-node figures. $KUBELOOP_E2E_REAL_RESULTS names another file for any run.
RESULTS = Path(os.environ.get("KUBELOOP_CLUSTER_DIR", ROOT / ".cluster")) / "e2e-real.json"
COMMITTED_RESULTS = ROOT / "tests" / "results" / "e2e-real.json"


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # An install or upgrade renders the chart without $KUBELOOP_RBAC_DROP (tests/rbac.py).
    flags, env = helm_drop(args)
    done = subprocess.run([tool("helm"), "--kubeconfig", cluster.kubeconfig, *args, *flags],
                          capture_output=True, text=True, env={**os.environ, **env})
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done


class _Run:
    """This pytest session's figures and test outcomes, written out when it ends."""

    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    figures: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, str] = {}
    deselected = 0


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def record(name: str, value: object) -> None:
    """A figure a test measured, with the test that measured it: the run writes them to
    its results file when it ends (see RESULTS)."""
    _Run.figures[name] = {"value": value, "test": _current_test()}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def run_results(items: list[str]) -> dict[str, Any]:
    """The results of this run: the commit it ran (and whether the tree had changes
    beside it), when, each selected test's outcome ("not run" if it never got to run)
    and the figures."""
    return {
        "commit": _git("rev-parse", "HEAD") or None,
        # Changes to tracked files beside the commit (the results file itself aside).
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                           f":!{COMMITTED_RESULTS.relative_to(ROOT)}")),
        "date": _Run.date,
        "duration_s": round(time.monotonic() - _Run.started, 1),
        "tests": {nodeid: _Run.outcomes.get(nodeid, "not run") for nodeid in items},
        "figures": dict(sorted(_Run.figures.items())),
    }


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def pytest_deselected(items: list[pytest.Item]) -> None:
    _Run.deselected += len(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test's outcome: failed if its setup, call or teardown failed, skipped if it was
    skipped, else passed."""
    if not report.nodeid.startswith("e2e/real/"):
        return
    seen = _Run.outcomes.get(report.nodeid)
    if report.failed:
        _Run.outcomes[report.nodeid] = "failed"
    elif report.skipped and seen != "failed":
        _Run.outcomes[report.nodeid] = "skipped"
    elif seen is None:
        _Run.outcomes[report.nodeid] = "passed"


def whole_suite(items: list[str], deselected: int) -> bool:
    """Every test file of e2e/real was collected and nothing was deselected (-k, -m,
    --lf ...): a run the committed results may come from."""
    files = {nodeid.split("::", 1)[0] for nodeid in items}
    every = {f"e2e/real/{p.name}" for p in (ROOT / "e2e" / "real").glob("test_*.py")}
    return deselected == 0 and files == every


def pytest_sessionfinish(session: pytest.Session) -> None:
    items = [item.nodeid for item in session.items if item.nodeid.startswith("e2e/real/")]
    if not _Run.outcomes:  # nothing ran (--collect-only, or nothing selected)
        return
    results = run_results(items)
    _write(RESULTS, results)
    if os.environ.get("KUBELOOP_E2E_REAL_RESULTS"):
        _write(Path(os.environ["KUBELOOP_E2E_REAL_RESULTS"]), results)
    elif whole_suite(items, _Run.deselected):
        _write(COMMITTED_RESULTS, results)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bed = Cluster()

    def node_ready() -> bool:
        node = bed.core.read_node(REAL_NODE)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    wait_for(node_ready, 120, f"node {REAL_NODE} Ready")
    yield bed
    bed.stop()


@pytest.fixture(scope="session")
def image(cluster: Cluster) -> str:
    """The kubeloop image, built offline (hack/build-image.sh) and in containerd's store:
    the kubelet lists it among the node's images."""
    subprocess.run(["bash", str(ROOT / "hack" / "build-image.sh"), "--import"], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)

    def listed() -> bool:
        node = cluster.core.read_node(REAL_NODE)
        return any(IMAGE in (i.names or []) for i in node.status.images or [])

    wait_for(listed, 60, f"{IMAGE} among {REAL_NODE}'s images")
    return IMAGE


def chart_values() -> list[str]:
    return ["--set-json", f"nodeSelector={json.dumps(ON_REAL_NODE['nodeSelector'])}",
            "--set-json", f"tolerations={json.dumps(ON_REAL_NODE['tolerations'])}",
            "--set", "image.pullPolicy=IfNotPresent", "--set", "logFormat=text"]


@pytest.fixture(scope="session")
def operator_pod(cluster: Cluster, image: str) -> Iterator[dict[str, Any]]:
    """`helm install` of charts/kubeloop; the operator pod Ready on the real node."""
    helm(cluster, "upgrade", "--install", RELEASE, str(ROOT / "charts" / "kubeloop"),
         "--namespace", SYSTEM_NS, "--create-namespace", *chart_values(),
         "--wait", "--timeout", "180s")
    release_refused(cluster, RELEASE, SYSTEM_NS, RELEASE)  # hack/rbac_necessity.py

    def ready_pod() -> dict[str, Any] | None:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", SYSTEM_NS, "-l",
                                          "app.kubernetes.io/name=kubeloop", "-o",
                                          "json").stdout)["items"]
        for pod in pods:
            conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                return dict(pod)
        return None

    pod = wait_for(ready_pod, 120, "the operator pod Ready")
    yield pod
    if helm(cluster, "status", RELEASE, "-n", SYSTEM_NS, check=False).returncode == 0:
        helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", check=False)


class ModelVolume:
    """A PersistentVolume on this machine's disk (hostPath) bound to the claim `models`
    of one namespace: what the training pods write and the serving pods read, and
    what a test (standing in for a data pipeline) can change."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.path = Path(os.environ.get("KUBELOOP_CLUSTER_DIR", ROOT / ".cluster")) / (
            f"volumes/{namespace}")
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        os.chown(self.path, 10001, 10001)  # the image's user writes here
        self.pv = f"models-{namespace}"
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "PersistentVolume",
                 "metadata": {"name": self.pv},
                 "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                          "storageClassName": "kubeloop-e2e",
                          "persistentVolumeReclaimPolicy": "Retain",
                          "hostPath": {"path": str(self.path), "type": "Directory"},
                          "claimRef": {"namespace": namespace, "name": "models"}}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": "models", "namespace": namespace},
                 "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "kubeloop-e2e",
                          "volumeName": self.pv,
                          "resources": {"requests": {"storage": "1Gi"}}}},
            ]}))

    def delete(self) -> None:
        self.cluster.kubectl("delete", "pv", self.pv, "--wait=false", check=False)
        shutil.rmtree(self.path, ignore_errors=True)


def servers_of(kubeconfig: str) -> set[str]:
    """The API server addresses a kubeconfig file names (empty when it cannot be read)."""
    try:
        config = yaml.safe_load(Path(kubeconfig).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    return {str((c.get("cluster") or {}).get("server")) for c in config.get("clusters") or []}


def host_operators(server: str) -> list[str]:
    """`kubeloop run` processes of this machine, outside containers (the pod's own runs
    in its own PID namespace), that may talk to `server`: `make test` runs another
    cluster beside this one, whose host operators (KUBECONFIG naming its own API server)
    cannot have done any work here. One whose API server cannot be told counts."""
    own = os.readlink("/proc/self/ns/pid")
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            same_ns = os.readlink(proc / "ns" / "pid") == own
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not (same_ns and b"kubeloop" in b" ".join(argv) and b"run" in argv):
            continue
        kubeconfig = next((e[len(b"KUBECONFIG="):].decode(errors="replace") for e in environ
                           if e.startswith(b"KUBECONFIG=")), None)
        servers = servers_of(kubeconfig) if kubeconfig else set()
        if servers and server not in servers:
            continue  # another cluster's operator
        found.append(f"{proc.name}: {b' '.join(argv).decode(errors='replace')[:120]}")
    return found


def status_writes(pod: dict[str, Any]) -> float:
    """The operator pod's own count of status writes (its /metrics, on its pod IP)."""
    text = requests.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kubeloop_status_writes_total{"))


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, operator_pod: dict[str, Any]) -> Iterator[str]:
    """A namespace for one module; the operator pod, and nothing else, must have done
    the work in it: no other `kubeloop run` on this machine, and the pod's own status
    write counter grew."""
    server = next(iter(servers_of(cluster.kubeconfig)))
    assert not host_operators(server), (
        f"another operator runs on this machine: {host_operators(server)}")
    before = status_writes(operator_pod)
    name = cluster.new_namespace()
    yield name
    assert status_writes(operator_pod) > before, "the operator pod wrote no status"
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def volume(cluster: Cluster, namespace: str) -> Iterator[ModelVolume]:
    vol = ModelVolume(cluster, namespace)
    yield vol
    vol.delete()


def pods_of(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def service_url(cluster: Cluster, namespace: str, name: str, port: int = 8080) -> str:
    """The Service's cluster IP: this machine reaches it through kube-proxy's rules."""
    svc = cluster.core.read_namespaced_service(name, namespace)
    return f"http://{svc.spec.cluster_ip}:{port}"


def reachable(url: str, model: str, timeout: float = 30.0) -> None:
    """Wait until the Service answers for `model`: Ready counts the pods' readiness,
    and kube-proxy learns the new endpoints a moment later."""
    def answers() -> bool:
        try:
            return requests.get(f"{url}/v2/models/{model}/ready", timeout=5).ok
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout, f"the Service {url} answering for {model}")


def infer(url: str, model: str, rows: list[list[float]]) -> dict[str, Any]:
    """Open Inference Protocol v2: one FP64 tensor of shape [rows, features]."""
    body = {"inputs": [{"name": "input-0", "datatype": "FP64",
                        "shape": [len(rows), len(rows[0])], "data": rows}]}
    response = requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)
    response.raise_for_status()
    return dict(response.json())


def served(url: str, model: str, rows: list[list[float]],
           count: int) -> set[tuple[int, str, tuple[int, ...]]]:
    """What `count` clients get through the Service for the same rows, each request on a
    new connection (kube-proxy picks a pod per connection): the distinct answers as
    (status, model version, predicted classes), the version and classes empty for an
    answer that is not a 200."""
    body = {"inputs": [{"name": "input-0", "datatype": "FP64",
                        "shape": [len(rows), len(rows[0])], "data": rows}]}
    seen = set()
    for _ in range(count):
        response = requests.post(f"{url}/v2/models/{model}/infer", json=body,
                                 headers={"Connection": "close"}, timeout=10)
        if response.status_code != 200:
            seen.add((response.status_code, "", ()))
            continue
        answer = response.json()
        classes = next(o["data"] for o in answer["outputs"] if o["name"] == "predict")
        seen.add((200, answer["model_version"], tuple(int(c) for c in classes)))
    return seen


__all__ = ["IMAGE", "ON_REAL_NODE", "REAL_NODE", "TRAIN_COMMAND", "ModelVolume", "helm",
           "infer", "pods_of", "reachable", "record", "served", "service_url", "wait_for",
           "write_iris_csv"]
