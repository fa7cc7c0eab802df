#!/usr/bin/env python3
"""The local control plane: etcd, kube-apiserver (RBAC enforced),
kube-controller-manager, kube-scheduler and kwok, started from the binaries that
hack/build-controlplane.sh built, with simulated nodes (two 8-GPU nodes and one CPU node).

    python3 hack/cluster.py up      # start (idempotent), write .cluster/kubeconfig
    python3 hack/cluster.py down    # stop everything, leave no process behind
    python3 hack/cluster.py status
    python3 hack/cluster.py restart-apiserver   # for fault tests
    python3 hack/cluster.py import-image ARCHIVE NAME   # an OCI archive into the real node

KUBELOOP_CLUSTER_DIR=DIR keeps a cluster's state in DIR instead of .cluster, so that
two clusters can run at once (`make test` runs its two lanes so); KUBELOOP_REAL_NODE=0
at `up` starts one without the real node (kwok's nodes only), which leaves the machine's
one real node to the other. The real node is a machine-wide thing (its bridge, cgroups,
iptables chains): only one cluster at a time may have it.

KUBELOOP_AUDIT_LOG=PATH at `up` makes the API server write an audit log there: one JSON
line per write request (create, update, patch, delete), with its user and user agent,
for benchmarks that count every writer (bench/operator_bench.py). Reads are not logged.

Stdlib only, so it runs before any virtual environment exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realnode

ROOT = Path(__file__).resolve().parent.parent
# Absolute: the kubeconfigs name their certificates by this path (a relative one would
# resolve against the kubeconfig's own directory).
STATE = Path(os.environ.get("KUBELOOP_CLUSTER_DIR", ROOT / ".cluster")).absolute()
CACHE = Path(os.environ.get("KUBELOOP_CACHE", Path.home() / ".cache" / "kubeloop"))
COMPONENTS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    *realnode.COMPONENTS,
]
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"


def versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def binaries() -> dict[str, Path]:
    v = versions()
    bin_dir = CACHE / "bin"
    paths = {
        "etcd": bin_dir / f"etcd-{v['ETCD_VERSION']}",
        "kube-apiserver": bin_dir / f"kube-apiserver-{v['KUBERNETES_VERSION']}",
        "kube-controller-manager": bin_dir / f"kube-controller-manager-{v['KUBERNETES_VERSION']}",
        "kube-scheduler": bin_dir / f"kube-scheduler-{v['KUBERNETES_VERSION']}",
        "kwok": bin_dir / f"kwok-{v['KWOK_VERSION']}",
    }
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        sys.exit(f"missing binaries (run hack/build-controlplane.sh): {', '.join(missing)}")
    return paths


def kubectl() -> str:
    v = versions()
    path = CACHE / f"tools-{v['KUBECTL_LAYER_VERSION']}" / "kubectl"
    if not path.exists():
        sys.exit(f"missing {path} (run hack/install-tools.sh)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]


def openssl_pki(pki: Path) -> None:
    """CA, serving cert and one client cert per component, by openssl."""
    if (pki / "front-proxy-client.crt").exists():
        return
    # A PKI from before the real node lacks its certificates: make all of it anew.
    import shutil

    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True, exist_ok=True)

    def key(name: str) -> None:
        run(["openssl", "genrsa", "-out", str(pki / f"{name}.key"), "2048"])

    key("ca")
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-key",
            str(pki / "ca.key"),
            "-subj",
            "/CN=kubeloop-local-ca",
            "-days",
            "3650",
            "-out",
            str(pki / "ca.crt"),
        ]
    )

    def cert(name: str, subject: str, ext: str) -> None:
        key(name)
        run(
            [
                "openssl",
                "req",
                "-new",
                "-key",
                str(pki / f"{name}.key"),
                "-subj",
                subject,
                "-out",
                str(pki / f"{name}.csr"),
            ]
        )
        (pki / f"{name}.ext").write_text(ext)
        run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(pki / f"{name}.csr"),
                "-CA",
                str(pki / "ca.crt"),
                "-CAkey",
                str(pki / "ca.key"),
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                str(pki / f"{name}.ext"),
                "-out",
                str(pki / f"{name}.crt"),
            ]
        )

    client = "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    cert(
        "apiserver",
        "/CN=kube-apiserver",
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,"
        f"IP:127.0.0.1,IP:10.96.0.1,IP:{realnode.NODE_IP}\n",
    )
    cert("admin", "/O=system:masters/CN=kubeloop-admin", client)
    cert("controller-manager", "/CN=system:kube-controller-manager", client)
    cert("scheduler", "/CN=system:kube-scheduler", client)
    # kwok plays every kubelet; it gets the rights of the cluster admin to do so.
    cert("kwok", "/O=system:masters/CN=kwok", client)
    # The real node: its kubelet (Node authorizer), the API server's client identity
    # towards kubelets, kube-proxy, the aggregator's front proxy, kubelet's serving cert.
    cert("kubelet", f"/O=system:nodes/CN=system:node:{realnode.NODE_NAME}", client)
    cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client)
    cert("kube-proxy", "/CN=system:kube-proxy", client)
    cert("front-proxy-client", "/CN=front-proxy-client", client)
    cert(
        "kubelet-serving",
        f"/CN={realnode.NODE_NAME}",
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        f"subjectAltName=DNS:{realnode.NODE_NAME},IP:{realnode.NODE_IP}\n",
    )
    key("sa")
    run(["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])


def kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "kubeloop-local",
                        "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [
                    {
                        "name": "kubeloop-local",
                        "context": {"cluster": "kubeloop-local", "user": user},
                    }
                ],
                "current-context": "kubeloop-local",
            },
            indent=1,
        )
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        return stat[2] != "Z"
    except OSError:
        return True


def read_pids() -> dict[str, int]:
    path = STATE / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_pids(pids: dict[str, int]) -> None:
    (STATE / "pids.json").write_text(json.dumps(pids))


def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    log = open(STATE / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    return proc.pid


def wait_for(what: str, check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:
            last = str(exc)
        time.sleep(0.3)
    sys.exit(f"timed out waiting for {what} {last}; logs in {STATE / 'logs'}")


def apiserver_cmd(bins: dict[str, Path], cfg: dict[str, object], pki: Path) -> list[str]:
    return [
        str(bins["kube-apiserver"]),
        f"--etcd-servers=http://127.0.0.1:{cfg['etcd_port']}",
        # Pods reach the API server at the real node's address (the `kubernetes`
        # Service's endpoint); the kubeconfigs keep using 127.0.0.1.
        "--bind-address=0.0.0.0",
        f"--advertise-address={realnode.NODE_IP}",
        f"--secure-port={cfg['apiserver_port']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--requestheader-client-ca-file={pki / 'ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--enable-aggregator-routing=true",
        "--profiling=false",
        "--enable-priority-and-fairness=false",
        f"--cert-dir={STATE / 'apiserver-certs'}",
        "--v=1",
        *audit_flags(str(cfg.get("audit_log") or "")),
    ]


# Writes only, at Metadata level: who (user, user agent), what verb on which object,
# and the response code; no bodies. Reads would multiply the log's size and cost.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  verbs: ["get", "list", "watch"]
- level: Metadata
"""


def audit_flags(log: str) -> list[str]:
    if not log:
        return []
    policy = STATE / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    return [f"--audit-policy-file={policy}", f"--audit-log-path={log}",
            "--audit-log-format=json", "--audit-log-maxsize=1024"]


SIMULATED_POD_CIDR = "198.18.0.0/16"


BLACKHOLE_HOLDERS = Path("/run/kubeloop/blackhole")


def blackhole(add: bool) -> None:
    """An `unreachable` route for the simulated pods' addresses (root only). Every
    cluster on this machine shares it: each one running holds it (a file named for its
    state directory), and the route goes only with the last holder."""
    holder = BLACKHOLE_HOLDERS / hashlib.sha256(str(STATE.resolve()).encode()).hexdigest()[:16]
    with contextlib.suppress(OSError):
        BLACKHOLE_HOLDERS.mkdir(parents=True, exist_ok=True)
        if add:
            holder.write_text(str(STATE.resolve()))
        else:
            holder.unlink(missing_ok=True)
    if not add and BLACKHOLE_HOLDERS.is_dir() and any(BLACKHOLE_HOLDERS.iterdir()):
        return
    verb = "replace" if add else "del"
    result = subprocess.run(
        ["ip", "route", verb, "unreachable", SIMULATED_POD_CIDR],
        capture_output=True,
        text=True,
        check=False,
    )
    if add and result.returncode != 0:
        print(
            f"warning: cannot route {SIMULATED_POD_CIDR} nowhere ({result.stderr.strip()}); "
            "connections to simulated pods will time out instead of failing at once",
            file=sys.stderr,
        )


def wants_real_node() -> bool:
    """The real node is started when it is built, unless KUBELOOP_REAL_NODE=0."""
    return os.environ.get("KUBELOOP_REAL_NODE", "1") != "0" and realnode.available(
        CACHE, versions()
    )


def up() -> None:
    bins = binaries()
    pids = read_pids()
    if pids and all(pid_alive(p) for p in pids.values()):
        print(f"cluster already running; KUBECONFIG={STATE / 'kubeconfig'}")
        return
    if pids:
        down(quiet=True)
    started = time.monotonic()
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    pki = STATE / "pki"
    openssl_pki(pki)
    cfg: dict[str, object] = {
        "etcd_port": free_port(),
        "etcd_peer_port": free_port(),
        "apiserver_port": free_port(),
        "kcm_port": free_port(),
        "scheduler_port": free_port(),
        "kwok_port": free_port(),
        "proxy_metrics": free_port(),
        "proxy_healthz": free_port(),
        "metrics_server": free_port(),
        "audit_log": os.environ.get("KUBELOOP_AUDIT_LOG", ""),
    }
    server = f"https://127.0.0.1:{cfg['apiserver_port']}"
    for user in ("admin", "controller-manager", "scheduler", "kwok", "kubelet", "kube-proxy"):
        kubeconfig(STATE / f"{user}.kubeconfig", server, pki, user)
    (STATE / "kubeconfig").write_text((STATE / "admin.kubeconfig").read_text())
    (STATE / "config.json").write_text(json.dumps(cfg))

    etcd_data = STATE / "etcd"
    pids = {}
    pids["etcd"] = start(
        "etcd",
        [
            str(bins["etcd"]),
            "--name=default",
            f"--data-dir={etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{cfg['etcd_port']}",
            f"--advertise-client-urls=http://127.0.0.1:{cfg['etcd_port']}",
            f"--listen-peer-urls=http://127.0.0.1:{cfg['etcd_peer_port']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{cfg['etcd_peer_port']}",
            f"--initial-cluster=default=http://127.0.0.1:{cfg['etcd_peer_port']}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
    )
    write_pids(pids)
    real = wants_real_node()
    cfg["real_node"] = real
    (STATE / "config.json").write_text(json.dumps(cfg))
    if real:
        realnode.network_up()
    pids["kube-apiserver"] = start("kube-apiserver", apiserver_cmd(bins, cfg, pki))
    write_pids(pids)
    kc = str(STATE / "kubeconfig")
    ctl = kubectl()

    def ready() -> bool:
        return run([ctl, "--kubeconfig", kc, "get", "--raw", "/readyz"]).stdout.strip() == "ok"

    wait_for("kube-apiserver", ready)
    pids["kube-controller-manager"] = start(
        "kube-controller-manager",
        [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={cfg['kcm_port']}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
            "--concurrent-job-syncs=20",
            # The HPA on the real node: decide every 5 s, scale down after 20 s.
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--horizontal-pod-autoscaler-downscale-stabilization=20s",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    pids["kube-scheduler"] = start(
        "kube-scheduler",
        [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={cfg['scheduler_port']}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    blackhole(add=True)
    pids["kwok"] = start(
        "kwok",
        [
            str(bins["kwok"]),
            f"--kubeconfig={STATE / 'kwok.kubeconfig'}",
            f"--config={ROOT / 'hack' / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            # Pod IPs in a benchmarking range (RFC 2544) that this machine routes
            # nowhere: whatever dials a simulated pod fails at once (no route to host)
            # and never reaches a network. Not loopback, which Endpoints refuse.
            f"--cidr={SIMULATED_POD_CIDR.replace('.0/', '.1/')}",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{cfg['kwok_port']}",
        ],
    )
    write_pids(pids)
    if real:
        pids.update(
            realnode.start(STATE, CACHE, versions(), pki, start, wait_for, cfg)  # type: ignore[arg-type]
        )
        write_pids(pids)
        run([ctl, "--kubeconfig", kc, "apply", "-f", "-"], input=realnode.addons(cfg))
    elif os.environ.get("KUBELOOP_REAL_NODE") == "0":
        print("real node skipped: KUBELOOP_REAL_NODE=0", file=sys.stderr)
    else:
        print("real node skipped: run hack/build-node.sh to build it", file=sys.stderr)
    nodes = ROOT / "hack" / "nodes.yaml"
    wait_for(
        "node registration",
        lambda: run([ctl, "--kubeconfig", kc, "apply", "-f", str(nodes)]).returncode == 0,
        60,
    )

    def nodes_ready() -> bool:
        out = run([ctl, "--kubeconfig", kc, "get", "nodes", "-o", "json"]).stdout
        items = json.loads(out)["items"]
        return len(items) >= 3 + real and all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (n.get("status", {}).get("conditions") or [])
            )
            for n in items
        )

    wait_for("nodes Ready", nodes_ready, 90)

    def default_sa() -> bool:
        return (
            run(
                [ctl, "--kubeconfig", kc, "get", "serviceaccount", "default", "-n", "default"]
            ).returncode
            == 0
        )

    wait_for("controller-manager (default service account)", default_sa, 60)
    dead = [name for name, pid in pids.items() if not pid_alive(pid)]
    if dead:
        sys.exit(f"exited while starting: {', '.join(dead)}; logs in {STATE / 'logs'}")
    if real:
        wait_for(
            "metrics-server (kubectl top node)",
            lambda: run([ctl, "--kubeconfig", kc, "top", "node", realnode.NODE_NAME]).returncode
            == 0,
            90,
        )
    print(f"cluster up in {time.monotonic() - started:.1f}s; export KUBECONFIG={kc}")


def down(quiet: bool = False) -> None:
    pids = read_pids()
    for name in reversed(COMPONENTS):
        pid = pids.get(name)
        if pid and pid_alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        time.sleep(0.2)
    for pid in pids.values():
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    (STATE / "pids.json").unlink(missing_ok=True)
    # A cluster started without the real node leaves it alone: another cluster may run it.
    config = STATE / "config.json"
    if not config.exists() or json.loads(config.read_text()).get("real_node", True):
        realnode.cleanup(STATE, CACHE, versions())
    blackhole(add=False)
    import shutil

    shutil.rmtree(STATE / "etcd", ignore_errors=True)
    if not quiet:
        print("cluster down")


def restart_apiserver(down_seconds: float = 3.0) -> None:
    """Stop kube-apiserver, wait, start it again (for the fault tests)."""
    pids = read_pids()
    cfg = json.loads((STATE / "config.json").read_text())
    pid = pids["kube-apiserver"]
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(down_seconds)
    pids["kube-apiserver"] = start("kube-apiserver", apiserver_cmd(binaries(), cfg, STATE / "pki"))
    write_pids(pids)
    kc = str(STATE / "kubeconfig")
    wait_for(
        "kube-apiserver",
        lambda: (
            run([kubectl(), "--kubeconfig", kc, "get", "--raw", "/readyz"]).stdout.strip() == "ok"
        ),
    )


def status() -> int:
    pids = read_pids()
    if not pids:
        print("cluster not running")
        return 1
    for name in COMPONENTS:
        pid = pids.get(name)
        print(f"{name:25} {'running' if pid and pid_alive(pid) else 'stopped'} (pid {pid})")
    return 0 if all(pid_alive(p) for p in pids.values()) else 1


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "status"
    if cmd == "up":
        up()
    elif cmd == "down":
        down()
    elif cmd == "restart-apiserver":
        restart_apiserver()
    elif cmd == "import-image" and len(sys.argv) == 4:
        containerd = read_pids().get("containerd")
        if not containerd or not pid_alive(containerd):
            sys.exit("the real node's containerd is not running: python3 hack/cluster.py up")
        realnode.import_image(STATE, CACHE, versions(), Path(sys.argv[2]), sys.argv[3])
        print(f"imported {sys.argv[3]} from {sys.argv[2]}")
    elif cmd == "status":
        return status()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
