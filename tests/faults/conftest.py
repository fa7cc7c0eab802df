"""The fault-injection bed: the operator as its own process (so that it can be killed),
a recorder of every Job creation in a namespace, and waits that survive an API server
that is briefly away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.kubetest import ROOT, Cluster
from tests.modelserver import train

T = TypeVar("T")
TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"
# What a client sees while the API server restarts: refused connections, resets.
TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError)


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Like tests.kubetest.wait_for, with a coarser interval for checks that list many
    objects, and tolerant of an API server that is briefly unreachable."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
        except TRANSIENT as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class OperatorProcess:
    """`kubeloop run` as a child process watching one namespace; killable with SIGKILL."""

    def __init__(self, kubeconfig: str, namespace: str, log: Path, *extra: str) -> None:
        self.kubeconfig, self.namespace, self.log, self.extra = kubeconfig, namespace, log, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def start(self) -> None:
        # As the chart's Deployment runs it (charts/kubeloop/templates/deployment.yaml).
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "MALLOC_ARENA_MAX": "2"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "kubeloop", "run",
                    "--metrics-port", "0", "--health-port", "0", "--log-format", "json",
                    "--namespace", self.namespace,
                    "--drift-source-allow", "http://127.0.0.1:",
                    *self.extra,
                ],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            )  # fmt: skip
        self.pids.append(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no cleanup handler runs, whatever was in flight is cut off."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 30) -> str:
        """The end of the log, and how the process ended if it did."""
        text = self.log.read_text(errors="replace").splitlines()
        out = "\n".join(text[-lines:])
        if self.proc is not None and self.proc.poll() is not None:
            out += f"\n[operator pid {self.proc.pid} exited with {self.proc.returncode}]"
            if any("Signal SIGTERM is received" in line for line in text[-lines:]):
                out += " [after a SIGTERM this test did not send: another process on this machine]"
        return out


class JobWatch:
    """Every Job created in a namespace, by name and uid, from a watch that resumes
    where it stopped (also across an API server restart). A recreated Job has a new
    uid, so a name with two uids was created twice."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.namespace = namespace
        self.batch = client.BatchV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.created: dict[str, list[str]] = {}
        self.start_times: dict[str, str] = {}  # uid -> status.startTime as the API has it
        self.gaps = 0  # times the watch fell behind (410 Gone) and had to list again
        self._uids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._uids)

    def names(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: list(uids) for name, uids in self.created.items()}

    def _record(self, job: dict[str, Any]) -> None:
        meta = job.get("metadata") or {}
        uid, name = meta.get("uid"), meta.get("name")
        if not uid or not name:
            return
        with self._lock:
            if uid not in self._uids:
                self._uids.add(uid)
                self.created.setdefault(name, []).append(uid)
            start = (job.get("status") or {}).get("startTime")
            if start:
                self.start_times[uid] = start

    def _list(self) -> str:
        listing = self.batch.list_namespaced_job(self.namespace, _preload_content=False)
        body = listing.json()
        for job in body.get("items", []):
            self._record(job)
        return str(body["metadata"]["resourceVersion"])

    def start(self) -> None:
        rv = self._list()
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        try:
            while not self._stop.is_set():
                try:
                    rv = self._watch(rv)
                except ApiException as exc:
                    if exc.status == 410:
                        self.gaps += 1
                        rv = self._list()
                    else:
                        self._stop.wait(0.5)
                except (urllib3.exceptions.HTTPError, OSError):
                    self._stop.wait(0.5)  # the API server is away; resume from rv
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def _watch(self, rv: str) -> str:
        w = watch.Watch()
        stream = w.stream(
            self.batch.list_namespaced_job,
            self.namespace,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
        )
        for event in stream:  # an ERROR event (410 Gone) is raised as ApiException
            obj = event.get("raw_object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if event["type"] in ("ADDED", "MODIFIED"):
                self._record(obj)
            if self._stop.is_set():
                w.stop()
        return rv

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the Job watch did not stop"
        if self.error is not None:
            raise AssertionError(f"the Job watch failed: {self.error!r}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    bed = Cluster()
    bed.install_crds()
    yield bed
    bed.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.new_namespace()
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model directory from examples/train/train.py."""
    return train(tmp_path_factory.mktemp("model") / "iris")
