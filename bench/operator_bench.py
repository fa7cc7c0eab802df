#!/usr/bin/env python3
"""Operator benchmark: Kubeloop vs Kubeflow's Training Operator v1 on the same local
control plane, each as its own process.

    python bench/operator_bench.py [--jobs 500] [--reps 3] [--quiet-seconds 300]

Per repetition (a fresh cluster each time, the two operators one after the other, the
order alternating): a burst of N single-worker CPU jobs created at once (16 client
threads), timed from each create's return to (a) its Job (Kubeloop) or first pod
(Kubeflow: PyTorchJobs create pods directly) appearing, (b) status Running, and (c)
every job Succeeded; and the operator's API requests by verb (its own client-side
counters: kubeloop_api_requests_total, controller-runtime's rest_client_requests_total).
Then, once, for Kubeloop: 1,000 settled objects (TrainingJobs, ModelDeployments,
DriftMonitors) watched for --quiet-seconds (write requests, CPU), and RSS at 1,000 and
3,000 objects. Results: bench/results/operator.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
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
    """Requests by verb; failed ones (no 2xx answer) also under `<VERB> failed`."""
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


class Bed:
    def __init__(self) -> None:
        sh("python3", str(ROOT / "hack" / "cluster.py"), "down", check=False)
        sh("python3", str(ROOT / "hack" / "cluster.py"), "up")
        self.kubeconfig = str(ROOT / ".cluster" / "kubeconfig")
        os.environ["KUBECONFIG"] = self.kubeconfig
        self.kubectl = str(Path(sh("bash", str(ROOT / "hack" / "install-tools.sh"))
                                .stdout.strip()) / "kubectl")
        api = config.new_client_from_config(config_file=self.kubeconfig)
        api.configuration.connection_pool_maxsize = 32
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

    def down(self) -> None:
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


def summarize(created: dict[str, float], first_child: dict[str, float],
              running: dict[str, float], done: dict[str, float], start: float,
              before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, Any]:
    child = [first_child[n] - created[n] for n in created if n in first_child]
    run = [running[n] - created[n] for n in created if n in running]
    finished = max(done.values()) - start if len(done) >= jobs else float("nan")
    verbs = {v: after.get(v, 0) - before.get(v, 0) for v in set(after) | set(before)}
    writes = sum(n for v, n in verbs.items() if v in WRITE_VERBS)
    return {
        "child_p50_s": round(pct(child, 0.5), 3), "child_p99_s": round(pct(child, 0.99), 3),
        "running_p50_s": round(pct(run, 0.5), 3), "running_p99_s": round(pct(run, 0.99), 3),
        "all_succeeded_s": round(finished, 2),
        "jobs_per_s": round(jobs / finished, 1) if finished == finished else None,
        "requests_per_job": {v: round(n / jobs, 2) for v, n in sorted(verbs.items()) if n},
        "writes_per_job": round(writes / jobs, 2),
        "succeeded": len(done),
    }


def kubeloop_burst(bed: Bed, jobs: int, rep: int) -> dict[str, Any]:
    ns = bed.namespace(f"bench-kl-{rep}")
    port = free_port()
    log = open(ROOT / ".cluster" / f"bench-kubeloop-{rep}.log", "wb")  # noqa: SIM115
    op = subprocess.Popen([sys.executable, "-m", "kubeloop", "run", "--metrics-port", str(port),
                           "--health-port", "0", "--log-format", "text",
                           "--log-level", os.environ.get("BENCH_LOG_LEVEL", "INFO")], stdout=log,
                          stderr=subprocess.STDOUT, env={**os.environ, "KUBECONFIG":
                                                         bed.kubeconfig})
    try:
        wait_until(lambda: _up(port), 60, "kubeloop metrics")
        batch = client.BatchV1Api(bed.api)
        jobs_rec = Recorder(bed, batch.list_namespaced_job, (ns,), {
            "job": lambda t, o: t == "ADDED" and o["metadata"]["labels"].get(
                "kubeloop.io/training-job")})
        tj_rec = Recorder(bed, bed.custom.list_namespaced_custom_object,
                          ("kubeloop.io", "v1alpha1", ns, "trainingjobs"), {
            "running": lambda t, o: (o.get("status") or {}).get("phase") in (
                "Running", "Succeeded") and o["metadata"]["name"],
            "done": lambda t, o: (o.get("status") or {}).get("phase") == "Succeeded"
            and o["metadata"]["name"]})
        before = scrape(port, "kubeloop_api_requests_total", "verb")
        bodies = [{"apiVersion": "kubeloop.io/v1alpha1", "kind": "TrainingJob",
                   "metadata": {"name": f"job-{i:04d}"},
                   "spec": {"image": "bench:1", "resources": {"cpu": "10m"}}}
                  for i in range(jobs)]
        start = time.monotonic()
        created = create_burst(bed, ns, "trainingjobs", "kubeloop.io", "v1alpha1", bodies)
        wait_until(lambda: len(tj_rec.times["done"]) >= jobs, 900, "kubeloop burst")
        time.sleep(2)  # let the last status writes land in the counters
        after = scrape(port, "kubeloop_api_requests_total", "verb")
        jobs_rec.stop()
        tj_rec.stop()
        cpu, rss = proc_stats(op.pid)
        result = summarize(created, jobs_rec.times["job"], tj_rec.times["running"],
                           tj_rec.times["done"], start, before, after, jobs)
        result["operator_cpu_s"], result["operator_rss_mb"] = round(cpu, 1), round(rss / 2**20)
        return result
    finally:
        op.terminate()
        op.wait(30)


def _up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).ok
    except requests.RequestException:
        return False


def kubeflow_burst(bed: Bed, jobs: int, rep: int) -> dict[str, Any]:
    ns = bed.namespace(f"bench-kf-{rep}")
    sh("python3", str(ROOT / "hack" / "kubeflow.py"), "install")
    sh("python3", str(ROOT / "hack" / "kubeflow.py"), "start", "--",
       "--controller-threads=8", "--kube-api-qps=200", "--kube-api-burst=400")
    ports = json.loads((ROOT / ".cluster" / "training-operator.json").read_text())
    try:
        pod_rec = Recorder(bed, bed.core.list_namespaced_pod, (ns,), {
            "pod": lambda t, o: t == "ADDED" and (o["metadata"].get("labels") or {}).get(
                "training.kubeflow.org/job-name")})
        job_rec = Recorder(bed, bed.custom.list_namespaced_custom_object,
                           ("kubeflow.org", "v1", ns, "pytorchjobs"), {
            "running": lambda t, o: _kf_cond(o, ("Running", "Succeeded")),
            "done": lambda t, o: _kf_cond(o, ("Succeeded",))})
        before = scrape(ports["metrics"], "rest_client_requests_total", "method")
        bodies = [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                   "metadata": {"name": f"job-{i:04d}"},
                   "spec": {"pytorchReplicaSpecs": {"Master": {
                       "replicas": 1, "restartPolicy": "Never",
                       "template": {"spec": {"containers": [{
                           "name": "pytorch", "image": "bench:1",
                           "resources": {"requests": {"cpu": "10m"}}}]}}}}}}
                  for i in range(jobs)]
        start = time.monotonic()
        created = create_burst(bed, ns, "pytorchjobs", "kubeflow.org", "v1", bodies)
        wait_until(lambda: len(job_rec.times["done"]) >= jobs, 900, "kubeflow burst")
        time.sleep(2)
        after = scrape(ports["metrics"], "rest_client_requests_total", "method")
        pod_rec.stop()
        job_rec.stop()
        cpu, rss = proc_stats(int(ports["pid"]))
        result = summarize(created, pod_rec.times["pod"], job_rec.times["running"],
                           job_rec.times["done"], start, before, after, jobs)
        result["operator_cpu_s"], result["operator_rss_mb"] = round(cpu, 1), round(rss / 2**20)
        return result
    finally:
        sh("python3", str(ROOT / "hack" / "kubeflow.py"), "stop", check=False)


def _kf_cond(obj: dict[str, Any], types: tuple[str, ...]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in types and cond.get("status") == "True":
            return str(obj["metadata"]["name"])
    return None


def settled_objects(bed: Bed, ns: str, count: int, offset: int) -> None:
    """count objects: 40% TrainingJobs, 50% ModelDeployments, 10% DriftMonitors."""
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
        # An unused loopback port: the source is refused at once, checked hourly.
        bodies.append(("driftmonitors", {"metadata": {"name": f"dm-{i}"}, "kind": "DriftMonitor",
                                         "spec": {"modelDeployment": f"md-{offset}",
                                                  "interval": "1h",
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


def quiet_and_memory(bed: Bed, quiet_seconds: int) -> dict[str, Any]:
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
        settled_objects(bed, ns, 1000, 0)
        wait_until(lambda: all_settled(bed, ns, 1000), 900, "1000 settled")
        time.sleep(10)
        before = scrape(port, "kubeloop_api_requests_total", "verb")
        cpu0, rss1000 = proc_stats(op.pid)
        time.sleep(quiet_seconds)
        after = scrape(port, "kubeloop_api_requests_total", "verb")
        cpu1, _ = proc_stats(op.pid)
        writes = sum(after.get(v, 0) - before.get(v, 0) for v in WRITE_VERBS)
        reads = sum(after.get(v, 0) - before.get(v, 0) for v in after if v not in WRITE_VERBS)
        result.update({
            "quiet_seconds": quiet_seconds, "quiet_writes": writes, "quiet_reads": reads,
            "quiet_cpu_percent": round(100 * (cpu1 - cpu0) / quiet_seconds, 2),
            "rss_mb_1000": round(rss1000 / 2**20),
        })
        settled_objects(bed, ns, 2000, 1000)
        wait_until(lambda: all_settled(bed, ns, 3000), 1800, "3000 settled")
        time.sleep(10)
        result["rss_mb_3000"] = round(proc_stats(op.pid)[1] / 2**20)
        return result
    finally:
        op.terminate()
        op.wait(30)


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if all(isinstance(v, int | float) for v in values):
            out[key] = statistics.median(values)
        elif key == "requests_per_job":
            verbs = {v for r in rows for v in r[key]}
            out[key] = {v: statistics.median(r[key].get(v, 0) for r in rows) for v in verbs}
    return out


README = ROOT / "bench" / "README.md"
START, END = "<!-- operator-bench:start -->", "<!-- operator-bench:end -->"


def render_table(result: dict[str, Any]) -> str:
    med = result["median"]
    rows = [
        ("apply → Job (Kubeloop) / first pod (Kubeflow) p50, s", "child_p50_s"),
        ("apply → Job / first pod p99, s", "child_p99_s"),
        ("apply → status Running p50, s", "running_p50_s"),
        ("apply → status Running p99, s", "running_p99_s"),
        (f"all {result['jobs']} Succeeded, s", "all_succeeded_s"),
        ("jobs per second", "jobs_per_s"),
        ("write requests per job", "writes_per_job"),
        ("operator CPU for the burst, s", "operator_cpu_s"),
        ("operator RSS after the burst, MB", "operator_rss_mb"),
    ]
    lines = [
        START,
        "## Operator: Kubeloop vs Kubeflow Training Operator v1",
        "",
        f"`make bench-operator` (`bench/operator_bench.py`): {result['jobs']} single-worker CPU "
        f"jobs created at once by 16 client threads, {result['reps']} repetitions on a fresh "
        "local control plane each, the two operators one after the other (order alternating), "
        "each as its own process; medians shown (every run is in "
        "`bench/results/operator.json`). Kubeflow Training Operator v1.9.4 built from Go "
        "modules (`hack/build-kubeflow.sh`), PyTorchJob controller only, run with "
        "`--controller-threads=8 --kube-api-qps=200 --kube-api-burst=400`; Kubeloop with its "
        "defaults (32 concurrent reconciles, no client rate limit). Requests are each "
        "operator's own client-side counters (`kubeloop_api_requests_total`, "
        "controller-runtime's `rest_client_requests_total`).",
        "",
        "| figure | Kubeloop | Kubeflow |",
        "| --- | ---: | ---: |",
    ]
    for label, key in rows:
        kl, kf = med["kubeloop"].get(key), med["kubeflow"].get(key)
        lines.append(f"| {label} | {kl} | {kf} |")
    for name in ("kubeloop", "kubeflow"):
        verbs = ", ".join(f"{v} {n}" for v, n in sorted(med[name]["requests_per_job"].items()))
        lines.append(f"| requests per job by verb ({name}) | {verbs} | |")
    settled = result.get("settled")
    if settled:
        lines += [
            "",
            f"Settled (Kubeloop only): 1,000 objects (400 TrainingJobs, 500 ModelDeployments, "
            f"100 DriftMonitors) watched for {settled['quiet_seconds']} s: "
            f"**{settled['quiet_writes']:.0f} write requests**, {settled['quiet_reads']:.0f} "
            f"reads, operator CPU {settled['quiet_cpu_percent']}% of a core. RSS "
            f"{settled['rss_mb_1000']} MB at 1,000 objects, {settled['rss_mb_3000']} MB at "
            "3,000.",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_readme(result: dict[str, Any]) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n\n"
    block = render_table(result)
    if START in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + block
    README.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quiet-seconds", type=int, default=300)
    parser.add_argument("--skip-quiet", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="only write the table from bench/results/operator.json")
    args = parser.parse_args()
    # Stopped from outside: run the `finally`s, so that no operator process is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.render_only:
        write_readme(json.loads((ROOT / "bench" / "results" / "operator.json").read_text()))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {"kubeloop": [], "kubeflow": []}
    for rep in range(args.reps):
        bed = Bed()
        try:
            order = ["kubeloop", "kubeflow"] if rep % 2 == 0 else ["kubeflow", "kubeloop"]
            for name in order:
                fn = kubeloop_burst if name == "kubeloop" else kubeflow_burst
                row = fn(bed, args.jobs, rep)
                runs[name].append(row)
                print(f"rep {rep} {name}: {json.dumps(row)}", flush=True)
        finally:
            bed.down()
    result: dict[str, Any] = {
        "jobs": args.jobs, "reps": args.reps, "runs": runs,
        "median": {k: median_row(v) for k, v in runs.items() if v},
    }
    if not args.skip_quiet:
        bed = Bed()
        try:
            result["settled"] = quiet_and_memory(bed, args.quiet_seconds)
            print(f"settled: {json.dumps(result['settled'])}", flush=True)
        finally:
            bed.down()
    out = ROOT / "bench" / "results" / "operator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    write_readme(result)
    print(json.dumps(result["median"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
