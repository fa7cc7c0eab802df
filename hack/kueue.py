#!/usr/bin/env python3
"""Kueue's controller manager next to the local control plane, so that queued
TrainingJobs are admitted by the real Kueue (tests/integration/test_kueue.py).

    python3 hack/kueue.py install    # Kueue's CRDs and namespace kueue-system
    python3 hack/kueue.py start [-- EXTRA-FLAGS]   # run the manager (idempotent)
    python3 hack/kueue.py stop
    python3 hack/kueue.py status
    python3 hack/kueue.py uninstall  # the CRDs (and every Kueue object) and the namespace

The binary comes from hack/build-kueue.sh (KUEUE_VERSION in hack/versions.env, cached per
version), the CRDs from the same release's module in the Go module cache. The manager
runs as a process on this machine with the cluster's kubeconfig ($KUBECONFIG, or
.cluster/kubeconfig), leader election off, only the batch/Job integration, and jobs
without a queue label left alone (`manageJobsWithoutQueueName: false`), so it touches
nothing but queued Jobs and its own objects.

Kueue's webhooks are not registered with the API server: the Job webhook's work (a
queued Job starts suspended) is what Kubeloop does itself, and the objects the tests
create are valid. The webhook and metrics servers still start, so they get a
self-signed certificate (openssl): the webhook's in .cluster/kueue/certs, the metrics
server's at the path the binary fixes, /etc/kueue/metrics/certs (written only when
absent). The visibility API server (feature VisibilityOnDemand) is turned off.
Log: .cluster/logs/kueue.log; pid: .cluster/kueue.pid; ports: .cluster/kueue.json.

Stdlib only, like hack/cluster.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hostproc import (
    ROOT,
    STATE,
    build,
    command_line,
    established,
    exited,
    free_port,
    healthy,
    kubeconfig,
    kubectl,
    module_dir,
    pid_alive,
    read_pid,
    spawn,
    wait_established,
)
from hostproc import status as show_status
from hostproc import stop as stop_process

MODULE = "sigs.k8s.io/kueue"
NAMESPACE = "kueue-system"
FIELD_MANAGER = "kubeloop-kueue"
PROCESS = "kueue"
WORK = STATE / "kueue"
CERT_DIR = WORK / "certs"
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")  # fixed in the binary
PID_FILE = STATE / "kueue.pid"
PORTS_FILE = STATE / "kueue.json"
LOG_FILE = STATE / "logs" / "kueue.log"
# The kinds the tests use; every CRD of the release is installed.
CRDS = [
    f"{plural}.kueue.x-k8s.io"
    for plural in ("resourceflavors", "clusterqueues", "localqueues", "workloads")
]


def version() -> str:
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("KUEUE_VERSION="):
            return line.split("=", 1)[1].strip()
    sys.exit("no KUEUE_VERSION in hack/versions.env")


def crd_dir() -> Path:
    return module_dir(MODULE, version()) / "config" / "components" / "crd" / "bases"


def install() -> None:
    # Some CRDs are too big for client-side apply's last-applied annotation.
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        str(crd_dir()),
    )
    wait_established(CRDS)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    kubectl(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        stdin=json.dumps(namespace),
    )
    print(f"installed Kueue's CRDs ({MODULE}@{version()}) and namespace {NAMESPACE}")


def uninstall() -> None:
    # Kueue's objects carry its finalizers, which only a running Kueue removes: delete
    # them first, with Kueue running, then stop it and remove the CRDs.
    if all(map(established, CRDS)):
        start([])
        for kinds, scope in (
            ("workloads,localqueues", "--all-namespaces"),
            ("clusterqueues,resourceflavors", ""),
        ):
            args = ["delete", kinds, "--all", "--ignore-not-found", "--wait=true", "--timeout=120s"]
            kubectl(*args, *([scope] if scope else []))
    stop(quiet=True)
    names = []
    for path in crd_dir().glob("*.yaml"):  # GROUP_PLURAL.yaml
        group, plural = path.stem.split("_", 1)
        names.append(f"crd/{plural}.{group}")
    kubectl("delete", "--ignore-not-found", "--wait=true", *sorted(names))
    kubectl("delete", "--ignore-not-found", "--wait=true", f"namespace/{NAMESPACE}")
    print(f"removed Kueue's CRDs and namespace {NAMESPACE}")


def self_signed(directory: Path, name: str) -> None:
    """tls.crt and tls.key in `directory`, unless both are there already."""
    if (directory / "tls.crt").exists() and (directory / "tls.key").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(directory / "tls.key"),
            "-out",
            str(directory / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    (directory / "tls.key").chmod(0o600)


def config(ports: dict[str, int]) -> str:
    """The manager's Configuration (config.kueue.x-k8s.io/v1beta2), as JSON (valid YAML)."""
    return json.dumps(
        {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
            "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}"},
            "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(CERT_DIR)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
        },
        indent=1,
    )


def start(extra: list[str]) -> None:
    pid = read_pid(PID_FILE, PROCESS)
    if pid and pid_alive(pid):
        print(f"kueue already running (pid {pid})")
        return
    if not all(map(established, CRDS)):
        sys.exit("Kueue's CRDs are not installed: run `python3 hack/kueue.py install` first")
    exe = build("build-kueue.sh")
    if (
        not os.access(METRICS_CERT_DIR.parent.parent.parent, os.W_OK)
        and not (METRICS_CERT_DIR / "tls.crt").exists()
    ):
        sys.exit(
            f"kueue reads its metrics certificate from {METRICS_CERT_DIR} (fixed in the "
            "binary), which this user cannot create: run as root, or create it once with "
            "tls.crt and tls.key"
        )
    self_signed(CERT_DIR, "kueue-webhook")
    self_signed(METRICS_CERT_DIR, "kueue-metrics")
    ports = {"metrics": free_port(), "health": free_port(), "webhook": free_port()}
    config_file = WORK / "config.yaml"
    config_file.write_text(config(ports) + "\n")
    cmd = [exe, f"--config={config_file}", "--feature-gates=VisibilityOnDemand=false", *extra]
    env = dict(os.environ, KUBECONFIG=kubeconfig())
    started = time.monotonic()
    proc = spawn(cmd, env, LOG_FILE)
    PID_FILE.write_text(f"{proc.pid}\n")
    PORTS_FILE.write_text(json.dumps({"pid": proc.pid, **ports, "args": cmd[1:]}, indent=1) + "\n")
    deadline = started + 90
    while time.monotonic() < deadline:
        exited(proc, PROCESS, LOG_FILE, PID_FILE)
        if healthy(ports["health"], "/readyz"):
            print(
                f"kueue {version()} running (pid {proc.pid}) in "
                f"{time.monotonic() - started:.1f}s; log {LOG_FILE}"
            )
            return
        time.sleep(0.3)
    stop(quiet=True)
    sys.exit(f"kueue not ready after 90s; see {LOG_FILE}")


def stop(quiet: bool = False) -> None:
    stop_process(PID_FILE, PROCESS, PORTS_FILE)
    if not quiet:
        print("kueue stopped")


def status() -> int:
    return show_status(PID_FILE, PROCESS, PORTS_FILE)


def main() -> int:
    return command_line(
        __doc__ or "",
        {
            "install": install,
            "start": start,
            "stop": stop,
            "uninstall": uninstall,
            "status": status,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
