"""The real node of the local cluster: containerd v2 + runc, kubelet, kube-proxy,
CoreDNS and metrics-server as processes of this machine, beside kwok's simulated nodes.

Networking stays on this machine:
- pods get addresses from POD_CIDR on the bridge BRIDGE, inside network namespaces
  that the CNI bridge plugin makes;
- the node's address NODE_IP is the bridge's own (the pods' gateway): the API server,
  the kubelet, CoreDNS and metrics-server listen there, so pods and this machine both
  reach them (these machines' kernels have no dummy interfaces);
- Service addresses (SERVICE_CIDR) are routed onto the bridge, so whatever kube-proxy
  has not translated stays there unanswered, and a FORWARD rule drops anything from
  the bridge that would leave through another interface.

Only pods that tolerate TAINT land here (and select LABEL to insist on it).
Stdlib only, like hack/cluster.py, which calls start() and stop().
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

NODE_NAME = "kubeloop-node"
POD_CIDR = "10.244.0.0/24"
NODE_IP = POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/16"
BRIDGE = "kubeloop-br0"
LABEL = "kubeloop.io/real-node"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
ISOLATE_CHAIN = "KUBELOOP-ISOLATE"
PAUSE_IMAGE = "localhost/kubeloop/pause:local"
COMPONENTS = ["containerd", "kubelet", "kube-proxy", "coredns", "metrics-server"]
KUBELET_PORT = 10250


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True)


def binaries(cache: Path, versions: dict[str, str]) -> dict[str, Path]:
    b = cache / "bin"
    k8s, ctd = versions["KUBERNETES_VERSION"], versions["CONTAINERD_VERSION"]
    return {
        "kubelet": b / f"kubelet-{k8s}",
        "kube-proxy": b / f"kube-proxy-{k8s}",
        "containerd": b / f"containerd-{ctd}",
        "containerd-shim-runc-v2": b / f"containerd-shim-runc-v2-{ctd}",
        "ctr": b / f"ctr-{ctd}",
        "runc": b / f"runc-{versions['RUNC_VERSION']}",
        "coredns": b / f"coredns-{versions['COREDNS_VERSION']}",
        "metrics-server": b / f"metrics-server-{versions['METRICS_SERVER_VERSION']}",
        "pause": b / "pause-static",
    }


def available(cache: Path, versions: dict[str, str]) -> bool:
    return all(p.exists() for p in binaries(cache, versions).values())


def node_dir(state: Path) -> Path:
    return state / "node"


def containerd_socket(state: Path) -> Path:
    return node_dir(state) / "run" / "containerd.sock"


def ctr(state: Path, cache: Path, versions: dict[str, str], *args: str,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    tool = binaries(cache, versions)["ctr"]
    return sh(str(tool), "--address", str(containerd_socket(state)), "-n", "k8s.io", *args,
              check=check)


# Network ------------------------------------------------------------------------------
def network_up() -> None:
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "replace", f"{POD_GATEWAY}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sh("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE)
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1"),
                       ("net/ipv4/conf/all/route_localnet", "1")):
        with contextlib.suppress(OSError):
            Path("/proc/sys", key).write_text(value)
    # Nothing from the pods' bridge may leave through another interface.
    sh("iptables", "-N", ISOLATE_CHAIN, check=False)
    sh("iptables", "-F", ISOLATE_CHAIN)
    sh("iptables", "-A", ISOLATE_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
    if sh("iptables", "-C", "FORWARD", "-j", ISOLATE_CHAIN, check=False).returncode != 0:
        sh("iptables", "-I", "FORWARD", "1", "-j", ISOLATE_CHAIN)


def network_down() -> None:
    for netns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").exists() else []:
        sh("ip", "netns", "delete", netns.name, check=False)
    sh("ip", "route", "delete", SERVICE_CIDR, check=False)
    sh("ip", "link", "delete", BRIDGE, check=False)
    while sh("iptables", "-D", "FORWARD", "-j", ISOLATE_CHAIN, check=False).returncode == 0:
        pass
    sh("iptables", "-F", ISOLATE_CHAIN, check=False)
    sh("iptables", "-X", ISOLATE_CHAIN, check=False)
    # The CNI portmap/bridge plugins' NAT chains for our pod range.
    rules = sh("iptables-save", "-t", "nat", check=False).stdout.splitlines()
    for rule in rules:
        if rule.startswith("-A POSTROUTING") and "CNI-" in rule:
            sh("iptables", "-t", "nat", *shlex.split(rule.replace("-A", "-D", 1)), check=False)
    for rule in rules:
        if rule.startswith(":CNI-"):
            chain = rule[1:].split()[0]
            sh("iptables", "-t", "nat", "-F", chain, check=False)
            sh("iptables", "-t", "nat", "-X", chain, check=False)
    shutil.rmtree("/var/lib/cni/networks/kubeloop", ignore_errors=True)
    remove_kubelet_chains()


def remove_kubelet_chains() -> None:
    """The KUBE-* chains the kubelet makes (kube-proxy --cleanup removes only its own)."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = sh(f"{tool}-save", "-t", table, check=False).stdout.splitlines()
            for rule in rules:
                if rule.startswith("-A ") and "-j KUBE-" in rule:
                    sh(tool, "-t", table, *shlex.split(rule.replace("-A", "-D", 1)), check=False)
            for rule in rules:
                if rule.startswith(":KUBE-"):
                    chain = rule[1:].split()[0]
                    sh(tool, "-t", table, "-F", chain, check=False)
                    sh(tool, "-t", table, "-X", chain, check=False)


# Configuration files -------------------------------------------------------------------
def write_configs(state: Path, cache: Path, versions: dict[str, str], pki: Path) -> None:
    nd = node_dir(state)
    bins = binaries(cache, versions)
    path = nd / "bin"
    path.mkdir(parents=True, exist_ok=True)
    for name in ("containerd-shim-runc-v2", "runc", "ctr"):
        link = path / name
        link.unlink(missing_ok=True)
        link.symlink_to(bins[name])
    (nd / "cni").mkdir(exist_ok=True)
    (nd / "cni" / "10-kubeloop.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0",
        "name": "kubeloop",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR,
                                                          "gateway": POD_GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }, indent=1))
    root = nd / "containerd"
    (nd / "containerd.toml").write_text(f"""version = 3
root = "{root / 'root'}"
state = "{nd / 'run' / 'containerd-state'}"

[grpc]
  address = "{containerd_socket(state)}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # These machines refuse the sandbox's oom_score_adj of -998.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{bins['runc']}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{nd / 'cni'}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
""")
    (nd / "resolv.conf").write_text(f"nameserver {NODE_IP}\n")
    (nd / "kubelet.yaml").write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # These machines run cgroup v1 (hybrid), which kubelet 1.36 refuses by default.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/kubeloop",
        "containerRuntimeEndpoint": f"unix://{containerd_socket(state)}",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(nd / "resolv.conf"),
        "podCIDR": POD_CIDR,
        "maxPods": 40,
        "failSwapOn": False,
        "serializeImagePulls": False,
        "registerWithTaints": [TAINT],
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "containerLogMaxSize": "5Mi",
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "volumeStatsAggPeriod": "10s",
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
        "protectKernelDefaults": False,
        "enforceNodeAllocatable": ["pods"],
        "kubeReserved": {"cpu": "200m", "memory": "512Mi"},
    }, indent=1))
    (nd / "Corefile").write_text(f"""cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {NODE_IP}
    errors
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {state / 'admin.kubeconfig'} kubeloop-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
}}
.:53 {{
    bind {NODE_IP}
    errors
}}
""")


# Processes -----------------------------------------------------------------------------
def commands(state: Path, cache: Path, versions: dict[str, str], pki: Path,
             ports: dict[str, int]) -> dict[str, tuple[list[str], dict[str, str]]]:
    nd = node_dir(state)
    bins = binaries(cache, versions)
    env = {**os.environ, "PATH": f"{nd / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return {
        "containerd": ([str(bins["containerd"]), "--config", str(nd / "containerd.toml"),
                        "--log-level", "warn"], env),
        "kubelet": ([str(bins["kubelet"]), f"--config={nd / 'kubelet.yaml'}",
                     f"--kubeconfig={state / 'kubelet.kubeconfig'}",
                     f"--root-dir={nd / 'kubelet'}",
                     f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
                     f"--node-labels={LABEL}=true,type=real",
                     "--v=1"], env),
        "kube-proxy": ([str(bins["kube-proxy"]), f"--kubeconfig={state / 'kube-proxy.kubeconfig'}",
                        f"--hostname-override={NODE_NAME}", "--proxy-mode=iptables",
                        f"--cluster-cidr={POD_CIDR}",
                        f"--metrics-bind-address=127.0.0.1:{ports['proxy_metrics']}",
                        f"--healthz-bind-address=127.0.0.1:{ports['proxy_healthz']}",
                        "--conntrack-max-per-core=0", "--v=1"], env),
        "coredns": ([str(bins["coredns"]), "-conf", str(nd / "Corefile")], env),
        "metrics-server": ([str(bins["metrics-server"]),
                            f"--kubeconfig={state / 'admin.kubeconfig'}",
                            f"--authentication-kubeconfig={state / 'admin.kubeconfig'}",
                            f"--authorization-kubeconfig={state / 'admin.kubeconfig'}",
                            f"--bind-address={NODE_IP}",
                            f"--secure-port={ports['metrics_server']}",
                            f"--cert-dir={nd / 'metrics-server'}",
                            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                            "--kubelet-preferred-address-types=InternalIP",
                            "--metric-resolution=10s",
                            "--kubelet-request-timeout=5s",
                            "--node-selector=" + LABEL + "=true",
                            "--v=1"], env),
    }


def import_image(state: Path, cache: Path, versions: dict[str, str], archive: Path,
                 name: str) -> None:
    """Load an OCI archive whose index tags the image with `name`'s tag into
    containerd's k8s.io namespace as `name`, unpacked for the kubelet."""
    ctr(state, cache, versions, "images", "import", "--base-name", name.rsplit(":", 1)[0],
        str(archive))


def build_pause_image(state: Path, cache: Path, versions: dict[str, str]) -> Path:
    """A one-file OCI image with the static pause binary (umoci from Debian)."""
    out = cache / "images" / "pause.tar"
    if out.exists():
        return out
    work = node_dir(state) / "pause-build"
    shutil.rmtree(work, ignore_errors=True)
    layout = work / "oci"
    sh("umoci", "init", "--layout", str(layout))
    sh("umoci", "new", "--image", f"{layout}:local")
    bundle = work / "bundle"
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:local", str(bundle))
    shutil.copy(binaries(cache, versions)["pause"], bundle / "rootfs" / "pause")
    sh("umoci", "repack", "--image", f"{layout}:local", str(bundle))
    sh("umoci", "config", "--image", f"{layout}:local", "--config.entrypoint", "/pause",
       "--config.user", "65535:65535")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # An OCI archive is the layout directory, tarred, with index.json at its top.
    sh("tar", "-C", str(layout), "-cf", str(tmp), ".")
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def start(state: Path, cache: Path, versions: dict[str, str], pki: Path,
          launch: Callable[[str, list[str], dict[str, str]], int],
          wait_for: Callable[..., None], ports: dict[str, int]) -> dict[str, int]:
    """Start the real node's processes; returns their pids (for cluster.py's pids.json)."""
    network_up()
    prepare_cgroups()
    write_configs(state, cache, versions, pki)
    cmds = commands(state, cache, versions, pki, ports)
    pids = {"containerd": launch("containerd", *cmds["containerd"])}
    wait_for("containerd", lambda: ctr(state, cache, versions, "version").returncode == 0, 30)
    archive = build_pause_image(state, cache, versions)
    import_image(state, cache, versions, archive, PAUSE_IMAGE)
    for name in ("kubelet", "kube-proxy", "coredns", "metrics-server"):
        pids[name] = launch(name, *cmds[name])
    return pids


def prepare_cgroups() -> None:
    """kubelet's cgroup root, /kubeloop, in every v1 hierarchy; cpuset needs its CPUs and
    memory nodes copied from the parent before anything can join it."""
    for top in Path("/sys/fs/cgroup").iterdir():
        if not top.is_dir() or top.name == "unified":
            continue
        cg = top / "kubeloop"
        with contextlib.suppress(OSError):
            cg.mkdir(exist_ok=True)
        if top.name == "cpuset":
            for key in ("cpuset.cpus", "cpuset.mems"):
                if not (cg / key).read_text().strip():
                    (cg / key).write_text((top / key).read_text())


def addons(ports: dict[str, int]) -> str:
    """metrics-server behind the aggregator: a Service without selector whose endpoint
    is the process on the node's address, and its APIService."""
    docs = [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "metrics-server", "namespace": "kube-system"},
         "spec": {"ports": [{"name": "https", "port": 443,
                             "targetPort": ports["metrics_server"]}]}},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "metrics-server", "namespace": "kube-system"},
         "subsets": [{"addresses": [{"ip": NODE_IP}],
                      "ports": [{"name": "https", "port": ports["metrics_server"]}]}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.metrics.k8s.io"},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                  "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100,
                  "versionPriority": 100,
                  "service": {"name": "metrics-server", "namespace": "kube-system",
                              "port": 443}}},
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def kill_pods(state: Path) -> None:
    """Every container of the node: their processes live in cgroups under /kubeloop,
    and their shims carry our containerd socket on their command line."""
    sock = str(containerd_socket(state))
    for _ in range(3):
        victims: set[int] = set()
        for procs in Path("/sys/fs/cgroup").glob("*/kubeloop/**/cgroup.procs"):
            with contextlib.suppress(OSError):
                victims |= {int(p) for p in procs.read_text().split()}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if sock.encode() in (proc / "cmdline").read_bytes():
                        victims.add(int(proc.name))
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def unmount_under(root: Path) -> None:
    prefix = str(root.resolve())
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        sh("umount", "-l", mount, check=False)


def remove_cgroups() -> None:
    for top in Path("/sys/fs/cgroup").glob("*/kubeloop"):
        for cg in sorted(top.glob("**/"), key=lambda p: len(str(p)), reverse=True):
            with contextlib.suppress(OSError):
                cg.rmdir()


def cleanup(state: Path, cache: Path, versions: dict[str, str]) -> None:
    """After the processes are stopped: containers, mounts, cgroups, kube-proxy's rules,
    network namespaces and interfaces. Safe to run when nothing is there."""
    if shutil.which("iptables") is None or os.geteuid() != 0:
        return
    kill_pods(state)
    nd = node_dir(state)
    unmount_under(nd)
    remove_cgroups()
    proxy = binaries(cache, versions)["kube-proxy"]
    if proxy.exists():
        sh(str(proxy), "--cleanup", "--proxy-mode=iptables", check=False)
    network_down()
    shutil.rmtree(nd / "kubelet", ignore_errors=True)
    shutil.rmtree(nd / "run", ignore_errors=True)
