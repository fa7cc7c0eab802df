#!/usr/bin/env python3
"""Operator benchmark: Kubeloop vs Kubeflow's Training Operator v1, like for like.

    python bench/operator_bench.py [--jobs 500] [--reps 4] [--quiet-seconds 300]

Each repetition runs both operators, each on a fresh local control plane whose API
server writes an audit log of every write, in a balanced order (Kubeloop first in even
repetitions, Kubeflow first in odd ones). A run: the operator as its own process, then a
burst of N single-worker CPU jobs created at once (16 client threads), timed from each
create's return to (a) its pod's creation and (b) its pod's phase Running (one watch on
pods, the same for both), and (c) every job's status Succeeded; writes per job by every
writer except the benchmark's client (from the audit log); the operator's and the
controller-manager's CPU seconds over the burst. Then, once, for Kubeloop, on a fresh
control plane with its audit log: 1,000 settled objects (TrainingJobs, ModelDeployments,
and DriftMonitors checking every --drift-interval, well inside the window, so that their
periodic checks run while it is watched) watched for --quiet-seconds: the write requests
of every writer at the API server (its audit log, as for the burst; the benchmark's own
requests left out), the operator's reads (its own client's counter: the audit log has
no reads), the DriftMonitor reconciles in the window, CPU; and RSS at 1,000 and 3,000
objects. Results: bench/results/operator.json and the table in bench/README.md.

    .venv/bin/python bench/operator_bench.py                 # the whole run of record
    .venv/bin/python bench/operator_bench.py --settled-only  # only the settled part,
                                                             # the burst runs kept
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE"}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def scrape(port: int, metric: str, label: str) -> dict[str, float]:
    """`metric` summed by `label` (upper-cased: verbs, kinds); failed requests (no 2xx
    answer) also under `<VERB> failed`."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric:
                verb = sample.labels.get(label, "").upper()
                out[verb] += sample.value
                if not sample.labels.get("code", "200").startswith("2"):
                    out[f"{verb} failed"] += sample.value
    return dict(out)


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


BENCH_AGENT = "kubeloop-bench"  # the benchmark's own client, left out of the write counts
ADMIN_USER = "kubeloop-admin"  # .cluster/kubeconfig's identity, which both operators use
WRITE_AUDIT_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


class Bed:
    """A fresh local control plane; with `audit`, the API server logs every write there."""

    def __init__(self, audit: Path | None = None) -> None:
        self.down()
        self.audit = audit
        try:
            self._up(audit)
        except BaseException:
            self.down()  # no control plane left behind by a failed start
            raise

    def _up(self, audit: Path | None) -> None:
        env = {**os.environ, "KUBELOOP_AUDIT_LOG": str(audit) if audit else ""}
        if audit:
            audit.unlink(missing_ok=True)
        subprocess.run(["python3", str(ROOT / "hack" / "cluster.py"), "up"], env=env,
                       capture_output=True, text=True, check=True)
        self.kubeconfig = str(ROOT / ".cluster" / "kubeconfig")
        os.environ["KUBECONFIG"] = self.kubeconfig
        self.kubectl = str(Path(sh("bash", str(ROOT / "hack" / "install-tools.sh"))
                                .stdout.strip()) / "kubectl")
        api = config.new_client_from_config(config_file=self.kubeconfig)
        api.configuration.connection_pool_maxsize = 32
        api.user_agent = BENCH_AGENT
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        sh(self.kubectl, "--kubeconfig", self.kubeconfig, "apply", "--server-side", "-f",
           str(ROOT / "crds"))
        for plural in ("trainingjobs", "modeldeployments", "driftmonitors"):
            sh(self.kubectl, "--kubeconfig", self.kubeconfig, "wait",
               "--for=condition=Established", f"crd/{plural}.kubeloop.io")

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.core.read_namespaced_service_account("default", name)
                return name
            except client.ApiException:
                time.sleep(0.2)
        raise RuntimeError("no default service account")

    def pid(self, component: str) -> int:
        return int(json.loads((ROOT / ".cluster" / "pids.json").read_text())[component])

    def down(self) -> None:
        # A Kubeflow operator left by a failed run would serve the next cluster.
        sh("python3", str(ROOT / "hack" / "kubeflow.py"), "stop", check=False)
        sh("python3", str(ROOT / "hack" / "cluster.py"), "down", check=False)


class Recorder:
    """Watches a resource and records, per object name, when a predicate first held."""

    def __init__(self, bed: Bed, list_fn: Any, args: tuple[Any, ...],
                 events: dict[str, Any]) -> None:
        self.times: dict[str, dict[str, float]] = {k: {} for k in events}
        self._events = events
        self._stop = threading.Event()
        self._w = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(list_fn, args), daemon=True)
        self._thread.start()

    def _run(self, list_fn: Any, args: tuple[Any, ...]) -> None:
        while not self._stop.is_set():
            try:
                for event in self._w.stream(list_fn, *args, timeout_seconds=60):
                    obj = event["object"]
                    obj = obj if isinstance(obj, dict) else obj.to_dict()
                    now = time.monotonic()
                    for what, pred in self._events.items():
                        key = pred(event["type"], obj)
                        if key and key not in self.times[what]:
                            self.times[what][key] = now
                    if self._stop.is_set():
                        return
            except Exception:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._w.stop()


def create_burst(bed: Bed, ns: str, plural: str, group: str, version: str,
                 bodies: list[dict[str, Any]]) -> dict[str, float]:
    created: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        bed.custom.create_namespaced_custom_object(group, version, ns, plural, body)
        created[body["metadata"]["name"]] = time.monotonic()

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(create, bodies))
    return created


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def writer(event: dict[str, Any]) -> str:
    """Who made a write, from its audit event: the user, and for the shared admin identity
    the user agent (the benchmark's client, or the operator under test)."""
    user = str((event.get("user") or {}).get("username", ""))
    agent = str(event.get("userAgent", ""))
    if agent.startswith(BENCH_AGENT):
        return "benchmark client"
    if user.startswith("system:serviceaccount:kube-system:"):
        return "controller-manager (" + user.rsplit(":", 1)[1] + ")"
    if user == "system:kube-scheduler":
        return "scheduler"
    if user == "kwok":
        return "kwok (the simulated kubelets)"
    if user == ADMIN_USER and agent.startswith(("kubeloop/", "kopf/", "training-operator")):
        return "operator"
    return f"other ({user}, {agent.split(' ', 1)[0]})"


def count_writes(lines: Any, ns: str, since: float, until: float | None = None) -> dict[str, Any]:
    """Completed write requests in the audit log received at or after `since` (epoch
    seconds; the namespace's own set-up comes before) and, with `until`, before it: in
    namespace `ns` by writer and verb, refused or failed ones (code >= 400) by writer,
    and the operator's writes elsewhere (cluster-scoped or in another namespace)."""
    by_writer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failed: dict[str, int] = defaultdict(int)
    elsewhere = 0
    for line in lines:
        if not line.endswith("\n"):
            continue  # the API server is still writing it
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event.get("verb") not in WRITE_AUDIT_VERBS:
            continue
        received = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        if received < since or (until is not None and received >= until):
            continue
        who = writer(event)
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != ns:
            elsewhere += who == "operator"
            continue
        what = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource")
                                          else "")
        by_writer[who][f"{event['verb']} {what}"] += 1
        if int((event.get("responseStatus") or {}).get("code", 200)) >= 400:
            failed[who] += 1
    return {"by_writer": {w: dict(v) for w, v in by_writer.items()}, "failed": dict(failed),
            "operator_elsewhere": elsewhere}


def audit_writes(bed: Bed, ns: str, since: float) -> dict[str, Any]:
    assert bed.audit is not None
    with bed.audit.open() as lines:
        return count_writes(lines, ns, since)


def quiet_writes(counts: dict[str, Any]) -> dict[str, Any]:
    """The settled window's figures from `count_writes`: every writer's writes but the
    benchmark's own (in the namespace, and the operator's anywhere else), those of the
    operator, the failed ones, and each writer's by verb and resource."""
    by_writer = {
        w: verbs for w, verbs in counts["by_writer"].items() if w != "benchmark client"
    }
    elsewhere = counts["operator_elsewhere"]
    return {
        "quiet_writes": sum(sum(v.values()) for v in by_writer.values()) + elsewhere,
        "quiet_operator_writes": sum(by_writer.get("operator", {}).values()) + elsewhere,
        "quiet_operator_writes_elsewhere": elsewhere,
        "quiet_failed_writes": sum(
            n for w, n in counts["failed"].items() if w != "benchmark client"
        ),
        "quiet_writes_by_writer": by_writer,
    }


def writes_settled(read: Callable[[], dict[str, Any]], quiet: float = 12.0,
                   limit: float = 90.0, poll: float = 1.0) -> dict[str, Any]:
    """The write counts (`read()`) once they have not changed for `quiet` seconds (the
    operator coalesces status follow-ups for up to 10 s), or after `limit` seconds; then
    `settled` says which."""
    deadline = time.monotonic() + limit
    last, changed_at = -1, time.monotonic()
    while True:
        counts = read()
        total = sum(sum(v.values()) for v in counts["by_writer"].values())
        now = time.monotonic()
        if total != last:
            last, changed_at = total, now
        if now - changed_at >= quiet or now >= deadline:
            counts["settled"] = now - changed_at >= quiet
            counts["settle_s"] = round(now - changed_at, 1)
            return counts
        time.sleep(poll)


def job_of(obj: dict[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get("kubeloop.io/training-job") or labels.get("training.kubeflow.org/job-name")


def summarize(created: dict[str, float], pods: dict[str, dict[str, float]],
              done: dict[str, float], start: float, writes: dict[str, Any], jobs: int,
              cpu: dict[str, float]) -> dict[str, Any]:
    def since_create(times: dict[str, float]) -> list[float]:
        return [times[n] - created[n] for n in created if n in times]

    pod = since_create(pods["created"])
    run = since_create(pods["running"])
    finished = max(done.values()) - start if len(done) >= jobs else float("nan")
    per_writer = {w: sum(v.values()) for w, v in writes["by_writer"].items()}
    all_writers = sum(n for w, n in per_writer.items() if w != "benchmark client")
    failed = sum(n for w, n in writes.get("failed", {}).items() if w != "benchmark client")
    return {
        "pod_created_p50_s": round(pct(pod, 0.5), 3),
        "pod_created_p99_s": round(pct(pod, 0.99), 3),
        "pod_running_p50_s": round(pct(run, 0.5), 3),
        "pod_running_p99_s": round(pct(run, 0.99), 3),
        "all_succeeded_s": round(finished, 2),
        "jobs_per_s": round(jobs / finished, 1) if finished == finished else None,
        "writes_per_job": round(all_writers / jobs, 2),
        "operator_writes_per_job": round(per_writer.get("operator", 0) / jobs, 2),
        "failed_writes_per_job": round(failed / jobs, 2),
        "writes_per_job_by_writer": {w: round(n / jobs, 2) for w, n in sorted(per_writer.items())},
        "writes": writes,
        "operator_cpu_s": round(cpu["operator"], 2),
        "operator_cpu_ms_per_job": round(1000 * cpu["operator"] / jobs, 1),
        "controller_manager_cpu_s": round(cpu["controller-manager"], 2),
        "operator_rss_mb": round(cpu["rss"] / 2**20),
        "pods": len(pods["created"]),
        "succeeded": len(done),
    }


# Both operators at the same concurrency (32 reconciles at once) and with no client-side
# rate limit (Kubeloop has none; Kubeflow's token bucket is set far above what the burst
# can use), logging at info level.
KUBEFLOW_FLAGS = ["--controller-threads=32", "--kube-api-qps=100000",
                  "--kube-api-burst=100000", "--zap-log-level=info"]


def run_burst(bed: Bed, name: str, jobs: int, rep: int) -> dict[str, Any]:
    ns = bed.namespace(f"bench-{rep}")
    operator_pid, stop = start_kubeloop(bed, rep) if name == "kubeloop" else start_kubeflow()
    try:
        pod_rec = Recorder(bed, bed.core.list_namespaced_pod, (ns,), {
            "created": lambda t, o: t == "ADDED" and job_of(o),
            "running": lambda t, o: (o.get("status") or {}).get("phase") in (
                "Running", "Succeeded") and job_of(o)})
        if name == "kubeloop":
            group, version, plural = "kubeloop.io", "v1alpha1", "trainingjobs"
            done = _kl_done
            bodies = [{"apiVersion": "kubeloop.io/v1alpha1", "kind": "TrainingJob",
                       "metadata": {"name": f"job-{i:04d}"},
                       "spec": {"image": "bench:1", "resources": {"cpu": "10m"}}}
                      for i in range(jobs)]
        else:
            group, version, plural = "kubeflow.org", "v1", "pytorchjobs"
            done = _kf_done
            bodies = [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                       "metadata": {"name": f"job-{i:04d}"},
                       "spec": {"pytorchReplicaSpecs": {"Master": {
                           "replicas": 1, "restartPolicy": "Never",
                           "template": {"spec": {"containers": [{
                               "name": "pytorch", "image": "bench:1",
                               "resources": {"requests": {"cpu": "10m"}}}]}}}}}}
                      for i in range(jobs)]
        cr_rec = Recorder(bed, bed.custom.list_namespaced_custom_object,
                          (group, version, ns, plural), {"done": lambda t, o: done(o)})
        kcm = bed.pid("kube-controller-manager")
        op0, kcm0 = proc_stats(operator_pid)[0], proc_stats(kcm)[0]
        start, wall_start = time.monotonic(), time.time()
        created = create_burst(bed, ns, plural, group, version, bodies)
        wait_until(lambda: len(cr_rec.times["done"]) >= jobs, 900, f"{name} burst")
        writes = writes_settled(lambda: audit_writes(bed, ns, wall_start))
        op1, rss = proc_stats(operator_pid)
        cpu = {"operator": op1 - op0, "controller-manager": proc_stats(kcm)[0] - kcm0,
               "rss": rss}
        pod_rec.stop()
        cr_rec.stop()
        return summarize(created, pod_rec.times, cr_rec.times["done"], start, writes, jobs, cpu)
    finally:
        stop()


def start_kubeloop(bed: Bed, rep: int) -> tuple[int, Any]:
    port = free_port()
    log = open(ROOT / ".cluster" / f"bench-kubeloop-{rep}.log", "wb")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "kubeloop", "run", "--metrics-port", str(port),
                           "--health-port", "0", "--log-format", "text",
                           "--log-level", os.environ.get("BENCH_LOG_LEVEL", "INFO")], stdout=log,
                          stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG":
                                                         bed.kubeconfig})

    def stop() -> None:
        end(op)
        log.close()

    try:
        wait_until(lambda: _up(port), 60, "kubeloop metrics")
    except BaseException:
        stop()
        raise
    return op.pid, stop


def start_kubeflow() -> tuple[int, Any]:
    sh("python3", str(ROOT / "hack" / "kubeflow.py"), "install")
    sh("python3", str(ROOT / "hack" / "kubeflow.py"), "start", "--", *KUBEFLOW_FLAGS)
    ports = json.loads((ROOT / ".cluster" / "training-operator.json").read_text())
    return int(ports["pid"]), lambda: sh("python3", str(ROOT / "hack" / "kubeflow.py"), "stop",
                                         check=False)


def end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).ok
    except requests.RequestException:
        return False


def _kl_done(obj: dict[str, Any]) -> str | None:
    if (obj.get("status") or {}).get("phase") == "Succeeded":
        return str(obj["metadata"]["name"])
    return None


def _kf_done(obj: dict[str, Any]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Succeeded" and cond.get("status") == "True":
            return str(obj["metadata"]["name"])
    return None


def interval_seconds(interval: str) -> float:
    """A DriftMonitor interval (`90s`, `1m`, `1m30s`) in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h)", interval)
    if not parts or "".join(n + u for n, u in parts) != interval:
        raise ValueError(f"not a duration: {interval!r}")
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(int(n) * unit[u] for n, u in parts)


def settled_objects(bed: Bed, ns: str, count: int, offset: int, drift_interval: str) -> None:
    """count objects: 40% TrainingJobs, 50% ModelDeployments, 10% DriftMonitors, each
    checking every `drift_interval`."""
    profile = json.dumps({"version": 1, "rows": 10, "features": [
        {"name": "x", "kind": "numeric", "edges": [0.0], "counts": [5, 5]}]})
    if offset == 0:
        bed.core.create_namespaced_config_map(ns, {"metadata": {"name": "ref"},
                                                   "data": {"profile.json": profile}})
    tjs, mds = int(count * 0.4), int(count * 0.5)
    dms = count - tjs - mds
    bodies: list[tuple[str, dict[str, Any]]] = []
    for i in range(offset, offset + tjs):
        bodies.append(("trainingjobs", {"metadata": {"name": f"tj-{i}"}, "kind": "TrainingJob",
                                        "spec": {"image": "b:1"}}))
    for i in range(offset, offset + mds):
        bodies.append(("modeldeployments", {"metadata": {"name": f"md-{i}"},
                                            "kind": "ModelDeployment",
                                            "spec": {"model": {"uri": "s3://m/1"}}}))
    for i in range(offset, offset + dms):
        # An unused loopback port: the source is refused at once, and the monitor stays
        # Degraded; it still checks every interval, and whatever a check writes is counted.
        bodies.append(("driftmonitors", {"metadata": {"name": f"dm-{i}"}, "kind": "DriftMonitor",
                                         "spec": {"modelDeployment": f"md-{offset}",
                                                  "interval": drift_interval,
                                                  "source": {"url": "http://127.0.0.1:9/metrics"},
                                                  "reference": {"configMap": {"name": "ref"}}}}))

    def create(item: tuple[str, dict[str, Any]]) -> None:
        plural, body = item
        body["apiVersion"] = "kubeloop.io/v1alpha1"
        bed.custom.create_namespaced_custom_object("kubeloop.io", "v1alpha1", ns, plural, body)

    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(create, bodies))


def all_settled(bed: Bed, ns: str, total: int) -> bool:
    settled = 0
    for plural, phases in (("trainingjobs", {"Succeeded"}), ("modeldeployments", {"Ready"}),
                           ("driftmonitors", {"Degraded"})):
        items = bed.custom.list_namespaced_custom_object("kubeloop.io", "v1alpha1", ns,
                                                         plural)["items"]
        settled += sum(1 for o in items if (o.get("status") or {}).get("phase") in phases
                       and o["status"].get("observedGeneration") == o["metadata"]["generation"])
    return settled >= total


def quiet_and_memory(bed: Bed, quiet_seconds: int, drift_interval: str) -> dict[str, Any]:
    """The settled window on `bed` (which must keep an audit log): 1,000 objects, once
    all are settled, watched for `quiet_seconds`; then RSS at 3,000."""
    assert bed.audit is not None
    ns = bed.namespace("bench-quiet")
    port = free_port()
    log = open(ROOT / ".cluster" / "bench-quiet.log", "wb")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "kubeloop", "run", "--metrics-port", str(port),
                           "--health-port", "0", "--log-format", "json",
                           "--drift-source-allow", "http://127.0.0.1:"], stdout=log,
                          stderr=subprocess.STDOUT,
                          env={**os.environ, "KUBECONFIG": bed.kubeconfig})
    result: dict[str, Any] = {}
    try:
        wait_until(lambda: _up(port), 60, "kubeloop metrics")
        settled_objects(bed, ns, 1000, 0, drift_interval)
        wait_until(lambda: all_settled(bed, ns, 1000), 900, "1000 settled")
        time.sleep(10)
        before = scrape(port, "kubeloop_api_requests_total", "verb")
        reconciles0 = scrape(port, "kubeloop_reconcile_total", "kind")
        cpu0, rss1000 = proc_stats(op.pid)
        window_start = time.time()
        time.sleep(quiet_seconds)
        window_end = time.time()
        after = scrape(port, "kubeloop_api_requests_total", "verb")
        reconciles1 = scrape(port, "kubeloop_reconcile_total", "kind")
        cpu1, _ = proc_stats(op.pid)
        time.sleep(2)  # the API server's last audit lines of the window reach the file
        with bed.audit.open() as lines:
            counts = count_writes(lines, ns, window_start, window_end)
        client_writes = sum(after.get(v, 0) - before.get(v, 0) for v in WRITE_VERBS)
        reads = sum(after.get(v, 0) - before.get(v, 0) for v in after if v not in WRITE_VERBS)
        monitors = 1000 - int(1000 * 0.4) - int(1000 * 0.5)
        result.update({
            "quiet_seconds": quiet_seconds,
            "counted_from": "audit log",
            **quiet_writes(counts),
            "quiet_client_counter_writes": client_writes,
            "quiet_reads": reads,
            "drift_monitors": monitors,
            "drift_interval": drift_interval,
            "drift_checks_due": monitors * int(quiet_seconds // interval_seconds(drift_interval)),
            "drift_reconciles": round(reconciles1.get("DRIFTMONITOR", 0)
                                      - reconciles0.get("DRIFTMONITOR", 0)),
            "quiet_cpu_percent": round(100 * (cpu1 - cpu0) / quiet_seconds, 2),
            "rss_mb_1000": round(rss1000 / 2**20),
        })
        settled_objects(bed, ns, 2000, 1000, drift_interval)
        wait_until(lambda: all_settled(bed, ns, 3000), 1800, "3000 settled")
        time.sleep(10)
        result["rss_mb_3000"] = round(proc_stats(op.pid)[1] / 2**20)
        return result
    finally:
        end(op)
        log.close()


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if all(isinstance(v, int | float) for v in values):
            out[key] = round(statistics.median(values), 3)
        elif key == "writes_per_job_by_writer":
            writers = {w for r in rows for w in r[key]}
            out[key] = {
                w: round(statistics.median(r[key].get(w, 0) for r in rows), 3) for w in writers
            }
    return out


README = ROOT / "bench" / "README.md"
START, END = "<!-- operator-bench:start -->", "<!-- operator-bench:end -->"
NAMES = {"kubeloop": "Kubeloop", "kubeflow": "Kubeflow"}


def targets(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, the figures it was read from), from the medians."""
    kl, kf = result["median"]["kubeloop"], result["median"]["kubeflow"]
    jobs = result["jobs"]
    cpu_ratio = kl["operator_cpu_ms_per_job"] / kf["operator_cpu_ms_per_job"]
    return [
        (f"all {jobs} Succeeded no later than Kubeflow",
         kl["all_succeeded_s"] <= kf["all_succeeded_s"],
         f"{kl['all_succeeded_s']} s vs {kf['all_succeeded_s']} s"),
        ("pod created p99 no later than Kubeflow",
         kl["pod_created_p99_s"] <= kf["pod_created_p99_s"],
         f"{kl['pod_created_p99_s']} s vs {kf['pod_created_p99_s']} s"),
        ("writes per job, all writers, no more than Kubeflow",
         kl["writes_per_job"] <= kf["writes_per_job"],
         f"{kl['writes_per_job']} vs {kf['writes_per_job']}"),
        ("operator CPU per job at most 1.5x Kubeflow's", cpu_ratio <= 1.5,
         f"{kl['operator_cpu_ms_per_job']} vs {kf['operator_cpu_ms_per_job']} ms, "
         f"{cpu_ratio:.2f}x"),
    ]


def render_table(result: dict[str, Any]) -> str:
    med = result["median"]
    rows = [
        ("create → pod created p50, s", "pod_created_p50_s"),
        ("create → pod created p99, s", "pod_created_p99_s"),
        ("create → pod Running p50, s", "pod_running_p50_s"),
        ("create → pod Running p99, s", "pod_running_p99_s"),
        (f"first create → all {result['jobs']} Succeeded (the resource's status), s",
         "all_succeeded_s"),
        ("jobs per second", "jobs_per_s"),
        ("**write requests per job, all writers**", "writes_per_job"),
        ("… of them by the operator", "operator_writes_per_job"),
        ("… of them refused or failed (status 400 or more; conflicts included)",
         "failed_writes_per_job"),
        ("operator CPU per job, ms", "operator_cpu_ms_per_job"),
        ("operator CPU for the burst, s", "operator_cpu_s"),
        ("controller-manager CPU for the burst, s", "controller_manager_cpu_s"),
        ("operator RSS after the burst, MB", "operator_rss_mb"),
    ]
    reps = result["reps"]
    lines = [
        START,
        "## Operator: Kubeloop vs Kubeflow Training Operator v1",
        "",
        f"`make bench-operator` (`bench/operator_bench.py`), run {result.get('date', '?')} at "
        f"{result.get('commit', '?')}"
        f"{' with uncommitted changes' if result.get('dirty') else ''} on "
        f"{result.get('cpus', '?')} CPUs (load average "
        f"{_load(result)}): {result['jobs']} single-worker CPU jobs created at once "
        f"by 16 client threads. Each operator gets a fresh local control plane in each of "
        f"{reps} repetitions, in the order {', '.join(result.get('order', []))}; each runs as "
        "its own process with the kubeconfig's admin identity. Kubeflow Training Operator "
        "v1.9.4 is built from Go modules (`hack/build-kubeflow.sh`), PyTorchJob controller "
        f"only. Both reconcile 32 objects at once with no client-side rate limit and log at "
        f"info level: Kubeloop at its defaults, Kubeflow with `{' '.join(KUBEFLOW_FLAGS)}`. "
        "Milestones are the same on both sides: a pod's creation and its phase Running, seen "
        "by a watch on pods; and the last resource's status Succeeded. Writes are counted at "
        "the API server from its audit log (every create, update, patch and delete in the "
        "benchmark's namespace, by user and user agent), so they include the writes the "
        "controller-manager's Job controller makes for Kubeloop's Jobs and the simulated "
        "kubelets' pod status updates; the benchmark's own creates are left out. CPU is "
        "each process's user + system time from the first create until the writes settle "
        f"(no write for 12 s). Medians of the {reps} runs.",
        "",
        "| figure | Kubeloop | Kubeflow |",
        "| --- | ---: | ---: |",
    ]
    for label, key in rows:
        kl, kf = med["kubeloop"].get(key), med["kubeflow"].get(key)
        lines.append(f"| {label} | {kl} | {kf} |")
    # The namespace's own set-up (its ServiceAccount, its CA ConfigMap) rounds to 0 per job.
    writers = sorted(
        {w for n in NAMES for w, per_job in med[n]["writes_per_job_by_writer"].items() if per_job}
    )
    for w in writers:
        kl, kf = (med[n]["writes_per_job_by_writer"].get(w, 0) for n in NAMES)
        label = f"{w} (not counted)" if w == "benchmark client" else w
        lines.append(f"| writes per job: {label} | {kl} | {kf} |")
    lines += ["", "Every run (all Succeeded, s / operator CPU per job, ms):", ""]
    for name, label in NAMES.items():
        runs = "; ".join(f"{r['all_succeeded_s']} / {r['operator_cpu_ms_per_job']}"
                         for r in result["runs"][name])
        lines.append(f"- {label}: {runs}")
    lines += ["", "Targets, from the medians above:", ""]
    for what, met, figures in targets(result):
        lines.append(f"- {what}: **{'met' if met else 'missed'}** ({figures})")
    settled = result.get("settled")
    if settled:
        lines += ["", *render_settled(settled)]
    lines.append(END)
    return "\n".join(lines) + "\n"


def render_settled(settled: dict[str, Any]) -> list[str]:
    """The settled paragraph and its targets. Only a window counted at the API server
    (its audit log, every writer) is judged; an older one, counted by the operator's own
    client, is shown as such and not judged."""
    when = (f"run {settled['date']} at {settled['commit']}" if settled.get("date")
            else "an earlier run") + (" with uncommitted changes" if settled.get("dirty") else "")
    memory = (f"RSS {settled['rss_mb_1000']} MB at 1,000 objects, {settled['rss_mb_3000']} MB "
              "at 3,000.")
    rss = (f"- RSS under 250 MB at 3,000 objects: "
           f"**{'met' if settled['rss_mb_3000'] < 250 else 'missed'}**")
    if settled.get("counted_from") != "audit log":
        return [
            f"Settled (Kubeloop only; {when}): 1,000 objects (400 TrainingJobs, 500 "
            f"ModelDeployments, 100 DriftMonitors checking hourly, so none checked in the "
            f"window) watched for {settled['quiet_seconds']} s: "
            f"{settled['quiet_writes']:.0f} write requests counted by the operator's own "
            f"client (not at the API server), {settled['quiet_reads']:.0f} reads, operator "
            f"CPU {settled['quiet_cpu_percent']}% of a core. {memory}",
            "",
            "- zero writes when settled: **not judged** (that run counted the operator's own "
            "client only, and no DriftMonitor checked in its window; "
            "`bench/operator_bench.py --settled-only` measures it at the API server)",
            rss,
        ]
    by_writer = "; ".join(
        f"{writer}: " + ", ".join(f"{n} {what}" for what, n in sorted(verbs.items()))
        for writer, verbs in sorted(settled["quiet_writes_by_writer"].items())
    )
    return [
        f"Settled (Kubeloop only; {when}): 1,000 objects (400 TrainingJobs, 500 "
        f"ModelDeployments, {settled['drift_monitors']} DriftMonitors checking every "
        f"{settled['drift_interval']}) on a fresh control plane, watched for "
        f"{settled['quiet_seconds']} s once all had settled. The DriftMonitors' source is "
        "refused (an unused loopback port), so each stays Degraded, but checks on every "
        f"interval: {settled['drift_checks_due']:,} checks due in the window, "
        f"{settled['drift_reconciles']:,} DriftMonitor reconciles counted by the operator. "
        "Writes are counted at the API server from its audit log, every writer but the "
        f"benchmark: **{settled['quiet_writes']:,} write requests**, "
        f"{settled['quiet_operator_writes']:,} of them by the operator "
        f"({settled['quiet_operator_writes_elsewhere']:,} outside the namespace), "
        f"{settled['quiet_failed_writes']:,} refused or failed"
        + (f" ({by_writer})" if by_writer else "")
        + f". The operator's own client counted {settled['quiet_client_counter_writes']:.0f} "
        f"writes and {settled['quiet_reads']:.0f} reads (the audit log records no reads). "
        f"Operator CPU {settled['quiet_cpu_percent']}% of a core. {memory}",
        "",
        "- zero writes when settled (every writer, at the API server, DriftMonitors "
        f"checking): **{'met' if settled['quiet_writes'] == 0 else 'missed'}**",
        rss,
    ]


def write_readme(result: dict[str, Any]) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n\n"
    block = render_table(result)
    if START in text:
        before, rest = text.split(START, 1)
        text = before + block + "\n" + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + block
    README.write_text(text)


def _load(result: dict[str, Any]) -> str:
    before, after = result.get("load_average"), result.get("load_average_after")
    if not before or not after:
        return "not recorded"
    return f"{before[0]:.2f} before the run, {after[0]:.2f} after"


def stamp() -> dict[str, Any]:
    """When (UTC) and at which commit; `dirty`: a tracked file differed from it (an
    untracked file, such as a worktree's link to the virtualenv, is not code under test);
    `dirty_paths` names them."""
    commit = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD", check=False).stdout
    changed = sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                 check=False).stdout
    paths = [line[3:] for line in changed.splitlines() if line.strip()]
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime()),
            "commit": commit.strip(), "dirty": bool(paths), "dirty_paths": paths[:50],
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg())}


def balanced_order(reps: int) -> list[str]:
    """Kubeloop first in even repetitions, Kubeflow first in odd ones."""
    order: list[str] = []
    for rep in range(reps):
        order += ["kubeloop", "kubeflow"] if rep % 2 == 0 else ["kubeflow", "kubeloop"]
    return order


def settled_run(args: argparse.Namespace) -> dict[str, Any]:
    """The settled part on a fresh control plane that keeps an audit log; its stamp
    (date, commit, load) taken when it starts, the load average after it as well."""
    audit = ROOT / ".cluster" / "audit-settled.log"
    started = stamp()
    bed = Bed(audit=audit)
    try:
        settled = {**quiet_and_memory(bed, args.quiet_seconds, args.drift_interval), **started,
                   "load_average_after": list(os.getloadavg())}
        print(f"settled: {json.dumps(settled)}", flush=True)
        return settled
    finally:
        bed.down()
        audit.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--quiet-seconds", type=int, default=300)
    parser.add_argument("--drift-interval", default="60s",
                        help="the settled DriftMonitors' check interval, inside the window")
    parser.add_argument("--skip-quiet", action="store_true",
                        help="keep the settled figures of the last results file")
    parser.add_argument("--settled-only", action="store_true",
                        help="measure only the settled part; keep the burst runs of the last "
                        "results file")
    parser.add_argument("--render-only", action="store_true",
                        help="only write the table from bench/results/operator.json")
    args = parser.parse_args()
    if args.reps < 2 or args.reps % 2:
        parser.error("--reps: an even number, so that each operator goes first equally often")
    try:
        every = interval_seconds(args.drift_interval)
    except ValueError as err:
        parser.error(f"--drift-interval: {err}")
    if every * 2 > args.quiet_seconds:
        parser.error("--drift-interval: at least two checks must fall in --quiet-seconds")
    if args.settled_only and args.skip_quiet:
        parser.error("--settled-only and --skip-quiet: nothing would be measured")
    # Stopped from outside: run the `finally`s, so that no operator process is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = ROOT / "bench" / "results" / "operator.json"
    if args.render_only:
        result = json.loads(out.read_text())
        result["median"] = {k: median_row(v) for k, v in result["runs"].items()}
        write_readme(result)
        return 0
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.settled_only:
        if not previous.get("runs"):
            parser.error("--settled-only: no burst runs in bench/results/operator.json to keep")
        result = {k: v for k, v in previous.items() if k not in ("settled", "median")}
        result["settled"] = settled_run(args)
        result["median"] = {k: median_row(v) for k, v in result["runs"].items()}
        out.write_text(json.dumps(result, indent=1) + "\n")
        write_readme(result)
        return 0
    result = {"jobs": args.jobs, "reps": args.reps, **stamp(), "order": balanced_order(args.reps)}
    runs: dict[str, list[dict[str, Any]]] = {"kubeloop": [], "kubeflow": []}
    audit = ROOT / ".cluster" / "audit.log"
    for i, name in enumerate(result["order"]):
        bed = Bed(audit=audit)
        try:
            row = run_burst(bed, name, args.jobs, i // 2)
            runs[name].append(row)
            print(f"run {i} {name}: {json.dumps({k: v for k, v in row.items() if k != 'writes'})}",
                  flush=True)
        finally:
            bed.down()
    audit.unlink(missing_ok=True)
    result["runs"] = runs
    result["median"] = {k: median_row(v) for k, v in runs.items()}
    if args.skip_quiet:
        if previous.get("settled"):
            result["settled"] = previous["settled"]
    else:
        result["settled"] = settled_run(args)
    result["load_average_after"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_readme(result)
    print(json.dumps(result["median"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
