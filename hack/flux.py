#!/usr/bin/env python3
"""Flux next to the local control plane: its source-controller and kustomize-controller,
and a git server on loopback for them to sync from (e2e/gitops).

    python3 hack/flux.py install    # Flux's CRDs (source, kustomize) and flux-system
    python3 hack/flux.py start      # the git server and both controllers (idempotent)
    python3 hack/flux.py stop
    python3 hack/flux.py status
    python3 hack/flux.py uninstall  # the CRDs (and every Flux object) and the namespace

The binaries come from hack/build-flux.sh (FLUX_*_VERSION in hack/versions.env, cached per
version), the CRDs from the same releases' modules in the Go module cache. The
controllers run as processes on this machine with the cluster's kubeconfig ($KUBECONFIG,
or .cluster/kubeconfig), leader election off, watching every namespace; the
source-controller serves its artifacts on loopback, where the kustomize-controller
fetches them. The git server (hack/githttp.py) serves every repository under
.cluster/flux/git at http://127.0.0.1:PORT/NAME, read-only; tests commit on disk.
Logs: .cluster/logs/flux-*.log; pids: .cluster/flux-*.pid; ports: .cluster/flux.json.

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
from hostproc import stop as stop_process

NAMESPACE = "flux-system"
FIELD_MANAGER = "kubeloop-flux"
WORK = STATE / "flux"
GIT_ROOT = WORK / "git"
PORTS_FILE = STATE / "flux.json"
CONTROLLERS = ("source-controller", "kustomize-controller")
GIT = "githttp"  # the git server's process (hack/githttp.py)
CRDS = ["gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io"]


def version(name: str) -> str:
    key = f"FLUX_{name.split('-')[0].upper()}_CONTROLLER_VERSION="
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith(key):
            return line.split("=", 1)[1].strip()
    sys.exit(f"no {key} in hack/versions.env")


def crd_dir(name: str) -> Path:
    return module_dir(f"github.com/fluxcd/{name}", version(name)) / "config" / "crd" / "bases"


def pid_file(name: str) -> Path:
    return STATE / f"flux-{name}.pid"


def log_file(name: str) -> Path:
    return STATE / "logs" / f"flux-{name}.log"


def install() -> None:
    for name in CONTROLLERS:
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            str(crd_dir(name)),
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
    print(f"installed Flux's CRDs and namespace {NAMESPACE}")


def uninstall() -> None:
    if all(map(established, CRDS)):
        # Kustomizations carry Flux's finalizer, which only a running controller removes.
        start([])
        kubectl(
            "delete", "kustomizations,gitrepositories", "--all-namespaces", "--all",
            "--ignore-not-found", "--wait=true", "--timeout=120s",
        )  # fmt: skip
    stop(quiet=True)
    for name in CONTROLLERS:
        kubectl("delete", "--ignore-not-found", "--wait=true", "-f", str(crd_dir(name)))
    kubectl("delete", "--ignore-not-found", "--wait=true", f"namespace/{NAMESPACE}")
    print(f"removed Flux's CRDs and namespace {NAMESPACE}")


def running(name: str) -> int | None:
    pid = read_pid(pid_file(name), name)
    return pid if pid and pid_alive(pid) else None


def start(extra: list[str]) -> None:
    names = (GIT, *CONTROLLERS)
    if all(running(n) for n in names):
        print("flux already running")
        return
    stop(quiet=True)
    if not all(map(established, CRDS)):
        sys.exit("Flux's CRDs are not installed: run `python3 hack/flux.py install` first")
    exes = dict(zip(CONTROLLERS, binaries(), strict=True))
    GIT_ROOT.mkdir(parents=True, exist_ok=True)
    ports = {"git": free_port(), "storage": free_port()}
    for name in CONTROLLERS:
        ports[f"{name}-health"], ports[f"{name}-metrics"] = free_port(), free_port()
    storage = WORK / "artifacts"
    storage.mkdir(parents=True, exist_ok=True)
    common = ["--enable-leader-election=false", "--watch-all-namespaces=true", "--log-level=info"]
    commands = {
        GIT: [sys.executable, str(ROOT / "hack" / "githttp.py"), str(GIT_ROOT), str(ports["git"])],
        "source-controller": [
            exes["source-controller"],
            f"--storage-path={storage}",
            f"--storage-addr=127.0.0.1:{ports['storage']}",
            f"--storage-adv-addr=127.0.0.1:{ports['storage']}",
        ],
        "kustomize-controller": [exes["kustomize-controller"], "--no-remote-bases=true"],
    }
    env = dict(os.environ, KUBECONFIG=kubeconfig(), RUNTIME_NAMESPACE=NAMESPACE)
    started = time.monotonic()
    procs = {}
    for name, cmd in commands.items():
        if name != GIT:
            cmd += [
                *common,
                f"--health-addr=127.0.0.1:{ports[f'{name}-health']}",
                f"--metrics-addr=127.0.0.1:{ports[f'{name}-metrics']}",
                *extra,
            ]
        procs[name] = spawn(cmd, env, log_file(name))
        pid_file(name).write_text(f"{procs[name].pid}\n")
    PORTS_FILE.write_text(json.dumps({"gitRoot": str(GIT_ROOT), **ports}, indent=1) + "\n")
    deadline = started + 90
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            exited(proc, name, log_file(name), pid_file(name))
        if all(healthy(ports[f"{n}-health"], "/readyz") for n in CONTROLLERS):
            print(f"flux running in {time.monotonic() - started:.1f}s; git on port {ports['git']}")
            return
        time.sleep(0.3)
    stop(quiet=True)
    sys.exit(f"flux not ready after 90s; see {STATE / 'logs'}/flux-*.log")


def binaries() -> list[str]:
    """The two paths hack/build-flux.sh prints (built on first use, cached after)."""
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-flux.sh")],
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    ).stdout
    return out.strip().splitlines()[-2:]


def stop(quiet: bool = False) -> None:
    for name in (GIT, *CONTROLLERS):
        stop_process(pid_file(name), name)
    PORTS_FILE.unlink(missing_ok=True)
    if not quiet:
        print("flux stopped")


def status() -> int:
    down = [n for n in (GIT, *CONTROLLERS) if running(n) is None]
    print("flux running" if not down else f"flux: not running: {', '.join(down)}")
    return 1 if down else 0


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
