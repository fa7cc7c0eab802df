"""A burst of TrainingJobs while the operator is killed, or while the API server
restarts: every run reaches its right end, exactly one Job per attempt is ever created,
and no status is lost."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubeloop.names import GROUP, VERSION
from tests.faults.conftest import TJ, JobWatch, OperatorProcess, poll
from tests.kubetest import ROOT, Cluster

TERMINAL = ("Succeeded", "Failed")


@dataclass
class Burst:
    namespace: str
    names: list[str]
    failing: set[str]
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def jobs_ever(self, name: str) -> list[str]:
        """The Jobs a run may ever have: one per attempt."""
        return [f"{name}-r0", f"{name}-r1"] if name in self.failing else [f"{name}-r0"]

    def job_at_end(self, name: str) -> str:
        return self.jobs_ever(name)[-1]


def make_burst(namespace: str, count: int, seed: int) -> Burst:
    """`count` single-worker CPU runs of a few seconds; a fifth fail with exit code 3
    and get one gang restart (maxRestarts: 1), so they end Failed with restarts 1."""
    rng = random.Random(seed)
    names = [f"b{i:03d}" for i in range(count)]
    burst = Burst(namespace, names, set(rng.sample(names, count // 5)))
    for name in names:
        annotations = {"kubeloop.io/fake-duration": f"{rng.randint(2, 5)}s"}
        if name in burst.failing:
            annotations["kubeloop.io/fake-exit-code"] = "3"
            annotations["kubeloop.io/fake-message"] = "injected failure"
        burst.specs[name] = {
            "image": "registry.local/train:1",
            "command": ["python", "train.py"],
            "resources": {"cpu": "10m", "memory": "16Mi"},
            "maxRestarts": 1,
            "output": {"uri": f"s3://models/{name}"},
            "podMetadata": {"annotations": annotations},
        }
    return burst


def create_all(cluster: Cluster, burst: Burst) -> None:
    for name in burst.names:
        cluster.create(TJ, burst.namespace, name, burst.specs[name])


def list_tjs(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs")
    return {tj["metadata"]["name"]: tj for tj in items["items"]}


def unfinished(tjs: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(
        name
        for name, tj in tjs.items()
        if (tj.get("status") or {}).get("phase") not in TERMINAL
        or (tj.get("status") or {}).get("observedGeneration") != tj["metadata"]["generation"]
    )


def wait_all_finished(
    cluster: Cluster, burst: Burst, timeout: float, op: OperatorProcess
) -> dict[str, dict[str, Any]]:
    last: list[list[str]] = [[]]

    def done() -> dict[str, dict[str, Any]] | None:
        assert op.alive, f"the operator died:\n{op.tail()}"
        tjs = list_tjs(cluster, burst.namespace)
        last[0] = unfinished(tjs)
        return tjs if len(tjs) == len(burst.names) and not last[0] else None

    try:
        return poll(done, timeout, "every TrainingJob finished", interval=1.0)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; {len(last[0])} unfinished: {last[0][:10]}\noperator log:\n{op.tail()}"
        ) from None


def live_jobs(cluster: Cluster, namespace: str) -> dict[str, Any]:
    return {j.metadata.name: j for j in cluster.batch.list_namespaced_job(namespace).items}


def check_outcome(
    cluster: Cluster, burst: Burst, tjs: dict[str, dict[str, Any]], jobs: JobWatch
) -> None:
    ns = burst.namespace
    # The Jobs that remain: the last attempt's, once the failed attempts' are deleted.
    want_live = {burst.job_at_end(n) for n in burst.names}
    try:
        live = poll(
            lambda: (j := live_jobs(cluster, ns)) and set(j) == want_live and j,
            60,
            "only the last attempt's Job left of every run",
        )
    except AssertionError:
        live = {}  # what went wrong is told by the checks below
    jobs.stop()
    created = jobs.names()

    # Exactly one Job per attempt was ever created: no unexpected name, no name twice.
    want_created = {j for n in burst.names for j in burst.jobs_ever(n)}
    assert set(created) == want_created, (
        f"unexpected Jobs: {sorted(set(created) - want_created)[:10]}; "
        f"never created: {sorted(want_created - set(created))[:10]}"
    )
    twice = {name: uids for name, uids in created.items() if len(uids) != 1}
    assert not twice, f"Jobs created more than once: {twice}"
    if not live:
        left = sorted(live_jobs(cluster, ns))
        raise AssertionError(f"Jobs left: {sorted(set(left) ^ want_live)[:10]} differ from "
                             "the last attempt's of every run")
    for name, job in live.items():
        assert job.metadata.uid == created[name][0], f"Job {name} is not the one first created"

    # The Job controller's Events name no other Job, and no other incarnation.
    for event in cluster.core.list_namespaced_event(
        ns, field_selector="involvedObject.kind=Job"
    ).items:
        involved = event.involved_object
        assert involved.name in want_created, f"an Event about Job {involved.name}"
        assert involved.uid == created[involved.name][0], f"an Event about another {involved.name}"

    # Every run at its right end, with its whole status.
    for name in burst.names:
        tj = tjs[name]
        status = tj["status"]
        failing = name in burst.failing
        where = f"{name}: {status}"
        assert status["phase"] == ("Failed" if failing else "Succeeded"), where
        assert status["restarts"] == (1 if failing else 0), where
        assert status["jobName"] == burst.job_at_end(name), where
        assert status["observedGeneration"] == tj["metadata"]["generation"] == 1, where
        ready = next(cd for cd in status["conditions"] if cd["type"] == "Ready")
        assert ready["status"] == ("False" if failing else "True"), where
        assert status.get("startTime") and status.get("completionTime"), where
        assert status["startTime"] <= status["completionTime"], where
        first = created[f"{name}-r0"][0]
        if failing:
            assert "modelUri" not in status, where
            assert ready["reason"] == "BackoffLimitExceeded", where
            # The worker's own words survive the restarts: a status decided before
            # the operator saw the failed pod would say only "a worker failed".
            assert "exit code 3" in status["message"], where
            assert "injected failure" in status["message"], where
            assert status["workers"]["failed"] == 1, where
            # The start is the first attempt's, kept across the restart.
            if jobs.gaps == 0 or first in jobs.start_times:
                assert status["startTime"] == jobs.start_times.get(first), where
            retry_start = jobs.start_times.get(live[f"{name}-r1"].metadata.uid)
            assert retry_start is None or status["startTime"] <= retry_start, where
        else:
            job = cluster.batch.read_namespaced_job(f"{name}-r0", ns, _preload_content=False)
            job_status = job.json()["status"]
            assert status["modelUri"] == f"s3://models/{name}", where
            assert status["startTime"] == job_status["startTime"], where
            assert status["completionTime"] == job_status["completionTime"], where
            assert status["workers"]["succeeded"] == 1, where

    # Each transition was announced at most once: a status that went back and came
    # again would show here twice.
    reasons: dict[str, Counter[str]] = {n: Counter() for n in burst.names}
    for event in cluster.core.list_namespaced_event(
        ns, field_selector="involvedObject.kind=TrainingJob"
    ).items:
        reasons[event.involved_object.name][event.reason] += event.count or 1
    for name in burst.names:
        seen = reasons[name]
        assert seen["Restarting"] <= (1 if name in burst.failing else 0), (name, seen)
        assert seen["Succeeded"] + seen["Failed"] <= 1, (name, seen)
        assert seen["Succeeded" if name in burst.failing else "Failed"] == 0, (name, seen)


def test_operator_killed_ten_times_during_a_burst(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    rng = random.Random(20261127)
    burst = make_burst(namespace, 200, seed=rng.randrange(2**32))
    jobs = JobWatch(cluster.kubeconfig, namespace)
    jobs.start()
    creator = threading.Thread(target=create_all, args=(cluster, burst), daemon=True)
    creator.start()

    # Ten kills at random moments of the burst: each one once the operator has created
    # a random number of Jobs (so that every kill lands while the burst is in flight)
    # and a random time after the previous restart (some land during start-up).
    expected_creations = sum(len(burst.jobs_ever(n)) for n in burst.names)
    thresholds = sorted(rng.sample(range(5, expected_creations - 10), 10))
    kills = []
    for threshold in thresholds:
        not_before = time.monotonic() + rng.uniform(0.2, 3.0)
        try:
            poll(
                lambda t=threshold, nb=not_before: jobs.count >= t and time.monotonic() >= nb,
                120,
                f"{threshold} Jobs created",
                interval=0.05,
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; {jobs.count} so far, after kills at {kills}; operator alive: "
                f"{operator.alive}; its log:\n{operator.tail()}"
            ) from None
        assert operator.alive, f"the operator died by itself:\n{operator.tail()}"
        operator.kill9()
        kills.append(jobs.count)
        operator.start()
    creator.join(60)
    assert not creator.is_alive()
    assert len(set(operator.pids)) == 11 and len(kills) == 10

    tjs = wait_all_finished(cluster, burst, 180, operator)
    assert operator.alive, f"the operator died by itself:\n{operator.tail()}"
    check_outcome(cluster, burst, tjs, jobs)
    print(f"kills after {kills} Job creations of {expected_creations}; watch gaps {jobs.gaps}")


def _local_cluster_dir(cluster: Cluster) -> Path | None:
    state = Path(os.environ.get("KUBELOOP_CLUSTER_DIR", ROOT / ".cluster"))
    return state if Path(cluster.kubeconfig) == state / "kubeconfig" else None


def test_apiserver_restart_mid_burst_operator_reconnects(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    state = _local_cluster_dir(cluster)
    if state is None:
        pytest.skip("restarting the API server needs the local control plane (hack/cluster.py)")
    rng = random.Random(7)
    burst = make_burst(namespace, 100, seed=rng.randrange(2**32))
    jobs = JobWatch(cluster.kubeconfig, namespace)
    jobs.start()
    create_all(cluster, burst)
    pid = operator.pid
    poll(lambda: jobs.count >= 30, 120, "30 Jobs created", interval=0.05)
    in_flight = unfinished(list_tjs(cluster, namespace))
    assert in_flight, "the burst finished before the API server could be restarted"

    restart = subprocess.run(
        ["python3", str(ROOT / "hack" / "cluster.py"), "restart-apiserver"],
        env={**os.environ, "KUBELOOP_CLUSTER_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr

    tjs = wait_all_finished(cluster, burst, 180, operator)
    # It reconnected by itself: the very same process, never restarted.
    assert operator.alive and operator.pid == pid and operator.pids == [pid], operator.tail()
    check_outcome(cluster, burst, tjs, jobs)
    print(f"API server restarted with {len(in_flight)} runs unfinished; watch gaps {jobs.gaps}")
