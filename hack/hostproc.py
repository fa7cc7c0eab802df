"""Shared by hack/kubeflow.py and hack/kueue.py: a released controller run as a process on
this machine against the local control plane (kubectl, the release's module source, its
pid file, its health endpoint). Stdlib only, like hack/cluster.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("KUBELOOP_CLUSTER_DIR", ROOT / ".cluster")).absolute()


def kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(STATE / "kubeconfig")


def kubectl_path() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "install-tools.sh")],
        check=True,
        text=True,
        capture_output=True,
    ).stdout
    return str(Path(out.strip().splitlines()[-1]) / "kubectl")


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", kubeconfig(), *args],
        input=stdin,
        text=True,
        capture_output=True,
    )
    if check and proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def module_dir(module: str, version: str) -> Path:
    """A release's source in the Go module cache (downloaded through the proxy if absent)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        check=True,
        text=True,
        capture_output=True,
        cwd=tempfile.gettempdir(),  # outside any go.mod or go.work
    ).stdout
    return Path(json.loads(out)["Dir"])


def build(script: str, env: dict[str, str] | None = None) -> str:
    """The binary a hack/build-*.sh script prints (built on first use, cached after)."""
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / script)],
        check=True,
        text=True,
        stdout=subprocess.PIPE,
        env=dict(os.environ, **(env or {})),
    ).stdout
    return out.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def read_pid(pid_file: Path, name: str) -> int | None:
    """The pid in `pid_file`, if it names a live process whose command line has `name`."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if name.encode() in cmdline and pid_alive(pid) else None


def established(crd: str) -> bool:
    proc = kubectl("get", f"crd/{crd}", "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    conditions = json.loads(proc.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def wait_established(crds: list[str], seconds: float = 60) -> None:
    # (`kubectl wait` fails outright while a new CRD has no status yet)
    deadline = time.monotonic() + seconds
    for crd in crds:
        while not established(crd):
            if time.monotonic() > deadline:
                sys.exit(f"{crd} not Established after {seconds:.0f}s")
            time.sleep(0.3)


def healthy(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def spawn(cmd: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """The controller, in its own session (stopped as a group), logging to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def exited(proc: subprocess.Popen[bytes], name: str, log_file: Path, pid_file: Path) -> None:
    """Exit with the log's tail if the controller has exited."""
    if proc.poll() is None:
        return
    tail = log_file.read_text(errors="replace").splitlines()[-20:]
    pid_file.unlink(missing_ok=True)
    sys.exit(f"{name} exited with {proc.returncode}; log tail:\n" + "\n".join(tail))


def stop(pid_file: Path, name: str, *also: Path) -> bool:
    """SIGTERM the controller's process group (SIGKILL after 15 s); remove `pid_file` and
    `also`. True if one was running."""
    pid = read_pid(pid_file, name)
    if pid and pid_alive(pid):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    for path in (pid_file, *also):
        path.unlink(missing_ok=True)
    return pid is not None


def status(pid_file: Path, name: str, ports_file: Path) -> int:
    """Print whether the controller runs and answers its readiness probe; 0 if it runs."""
    pid = read_pid(pid_file, name)
    if pid and pid_alive(pid):
        ports = json.loads(ports_file.read_text()) if ports_file.exists() else {}
        ready = "ready" if ports and healthy(ports["health"], "/readyz") else "not ready"
        print(f"{name} running (pid {pid}, {ready}); metrics port {ports.get('metrics')}")
        return 0
    print(f"{name} not running")
    return 1


def command_line(doc: str, commands: dict[str, object]) -> int:
    """`SCRIPT COMMAND [-- EXTRA-FLAGS]`: run commands[COMMAND] (with the extra flags when
    it takes them); `status` when no command is given."""
    args = sys.argv[1:]
    cmd = args[0] if args else "status"
    extra = args[1:]
    if extra and extra[0] == "--":
        extra = extra[1:]
    fn = commands.get(cmd)
    if not callable(fn):
        print(doc)
        return 2
    result = fn(extra) if cmd == "start" else fn()
    return int(result or 0)
