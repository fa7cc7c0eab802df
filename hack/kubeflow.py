#!/usr/bin/env python3
"""The Kubeflow Training Operator v1 (PyTorchJob controller only) next to the local
control plane, as the comparison point of the PyTorchJob benchmark.

    python3 hack/kubeflow.py install    # PyTorchJob CRD, namespace kubeflow, webhook Secret
    python3 hack/kubeflow.py start [-- EXTRA-FLAGS]   # run the operator (idempotent)
    python3 hack/kubeflow.py stop
    python3 hack/kubeflow.py status
    python3 hack/kubeflow.py uninstall  # CRD (and every PyTorchJob) and namespace kubeflow

The binary comes from hack/build-kubeflow.sh (cached per version), the CRD from the same
release's module in the Go module cache. The cluster is $KUBECONFIG's, or the local
control plane's (.cluster/kubeconfig). The operator runs as a process on this machine
with that kubeconfig, `--enable-scheme=pytorchjob`, leader election off, and its
metrics, health and webhook ports on free ports. Log: .cluster/logs/training-operator.log,
pid: .cluster/training-operator.pid, ports: .cluster/training-operator.json.

The binary has no switch to turn its validating webhook off, and it registers its
controllers only once its cert rotator is ready. The rotator fills the Secret
kubeflow/training-operator-webhook-cert (which must exist) and then waits for the
certificate files that a pod would mount from it, at the fixed path
/tmp/k8s-webhook-server/serving-certs; `start` writes them there from the Secret. No
ValidatingWebhookConfiguration is installed, so the API server never calls the webhook
(the rotator logs once that it is not found, and carries on).

Stdlib only, like hack/cluster.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
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

MODULE = "github.com/kubeflow/training-operator"
NAMESPACE = "kubeflow"  # the operator's own namespace (MY_POD_NAMESPACE); upstream's default
SECRET = "training-operator-webhook-cert"
CRD_NAME = "pytorchjobs.kubeflow.org"
CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # fixed in the binary
FIELD_MANAGER = "kubeloop-kubeflow"
PROCESS = "training-operator"
PID_FILE = STATE / "training-operator.pid"
PORTS_FILE = STATE / "training-operator.json"
LOG_FILE = STATE / "logs" / "training-operator.log"


def version() -> str:
    """TRAINING_OPERATOR_VERSION, else hack/build-kubeflow.sh's default."""
    if os.environ.get("TRAINING_OPERATOR_VERSION"):
        return os.environ["TRAINING_OPERATOR_VERSION"]
    script = (ROOT / "hack" / "build-kubeflow.sh").read_text()
    match = re.search(r"TRAINING_OPERATOR_VERSION:-(v[^}]+)\}", script)
    if not match:
        sys.exit("no default version in hack/build-kubeflow.sh")
    return match.group(1)


def install() -> None:
    crd = module_dir(MODULE, version()) / "manifests" / "base" / "crds"
    crd = crd / "kubeflow.org_pytorchjobs.yaml"
    # The CRD is ~640 kB: too big for client-side apply's last-applied annotation.
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        str(crd),
    )
    wait_established([CRD_NAME])
    # What upstream's standalone overlay adds for the operator itself: its namespace and
    # the empty Secret its cert rotator fills. No RBAC: the process runs with the
    # kubeconfig's credentials. No webhook configuration: see the module docstring.
    objects = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
            },
        ],
    }
    kubectl(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        stdin=json.dumps(objects),
    )
    print(f"installed {CRD_NAME} ({MODULE}@{version()}) and {NAMESPACE}/{SECRET}")


def uninstall() -> None:
    stop(quiet=True)
    kubectl("delete", "--ignore-not-found", "--wait=true", f"crd/{CRD_NAME}")
    kubectl("delete", "--ignore-not-found", "--wait=true", f"namespace/{NAMESPACE}")
    write_certs(None)
    print(f"removed {CRD_NAME} and namespace {NAMESPACE}")


def webhook_certs() -> tuple[bytes, bytes] | None:
    proc = kubectl("get", "secret", "-n", NAMESPACE, SECRET, "-o", "json", check=False)
    if proc.returncode != 0:
        sys.exit(f"{NAMESPACE}/{SECRET} not found: run `python3 hack/kubeflow.py install` first")
    data = json.loads(proc.stdout).get("data") or {}
    if data.get("tls.crt") and data.get("tls.key"):
        return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
    return None


def write_certs(certs: tuple[bytes, bytes] | None) -> None:
    """Play the kubelet's secret volume: the rotator and the webhook server read these."""
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in zip(("tls.crt", "tls.key"), certs or (None, None), strict=True):
        path = CERT_DIR / name
        path.unlink(missing_ok=True)
        if content is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)


def start(extra: list[str]) -> None:
    pid = read_pid(PID_FILE, PROCESS)
    if pid and pid_alive(pid):
        print(f"training-operator already running (pid {pid})")
        return
    if not established(CRD_NAME):
        sys.exit(f"{CRD_NAME} not found: run `python3 hack/kubeflow.py install` first")
    exe = build("build-kubeflow.sh", {"TRAINING_OPERATOR_VERSION": version()})
    certs = webhook_certs()
    write_certs(certs)  # the Secret's (from an earlier run), or none: no stale files
    ports = {"metrics": free_port(), "health": free_port(), "webhook": free_port()}
    cmd = [
        exe,
        "--enable-scheme=pytorchjob",
        f"--metrics-bind-address=127.0.0.1:{ports['metrics']}",
        f"--health-probe-bind-address=127.0.0.1:{ports['health']}",
        f"--webhook-server-port={ports['webhook']}",
        "--leader-elect=false",
        *extra,
    ]
    env = dict(os.environ, KUBECONFIG=kubeconfig(), MY_POD_NAMESPACE=NAMESPACE, TMPDIR="/tmp")
    env.pop("KUBEFLOW_NAMESPACE", None)  # would restrict the operator to one namespace
    started = time.monotonic()
    proc = spawn(cmd, env, LOG_FILE)
    PID_FILE.write_text(f"{proc.pid}\n")
    PORTS_FILE.write_text(json.dumps({"pid": proc.pid, **ports, "args": cmd[1:]}, indent=1) + "\n")

    deadline = started + 90
    while time.monotonic() < deadline:
        exited(proc, PROCESS, LOG_FILE, PID_FILE)
        if certs is None:
            certs = webhook_certs()  # filled by the rotator a moment after start
            if certs is not None:
                write_certs(certs)
        elif healthy(ports["health"], "/readyz"):
            print(
                f"training-operator {version()} running (pid {proc.pid}) in "
                f"{time.monotonic() - started:.1f}s; metrics on 127.0.0.1:{ports['metrics']}, "
                f"log {LOG_FILE}"
            )
            return
        time.sleep(0.3)
    stop(quiet=True)
    sys.exit(f"training-operator not ready after 90s; see {LOG_FILE}")


def stop(quiet: bool = False) -> None:
    stop_process(PID_FILE, PROCESS, PORTS_FILE)
    if not quiet:
        print("training-operator stopped")


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
