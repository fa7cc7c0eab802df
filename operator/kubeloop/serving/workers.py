"""Every core: `kubeloop serve --workers N` runs N server processes on one port.

A supervisor starts N workers, each a whole `kubeloop serve` with its own copy of the
model, all listening on the same address (SO_REUSEPORT: the kernel spreads new
connections over them). A worker that dies is started again, unless it could not have
the ports (exit status CANNOT_LISTEN: the server stops with it). Each worker also answers
its own `/metrics` on a unix socket in a private directory; whichever worker is asked
for `/metrics` on the port reads the others there and answers their sum, so that the
server is seen whole (counters and histograms add up across workers). The labelled rows
each worker keeps (serving/labelled_rows.py) are read the same way and merged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("kubeloop.serving.workers")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0)
# Exit status of a server (a worker) that cannot have its ports: starting it again
# would not free them, so the supervisor stops at once.
CANNOT_LISTEN = 3


def available_cpus() -> int:
    """The CPUs this process may use: its cgroup's CPU quota when one is set, else the
    CPUs it may be scheduled on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, min(cpus or 1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus or 1)


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.sock"


async def peer_metrics(directory: Path, own: int) -> list[str]:
    """The other workers' own /metrics, read over their unix sockets; a worker that is
    starting again is left out."""
    return await peer_get(directory, own, "/metrics")


async def peer_get(directory: Path, own: int, route: str) -> list[str]:
    """The other workers' answers to ``GET route`` on their unix sockets (200 only)."""

    async def one(path: Path) -> str | None:
        try:
            connector = aiohttp.UnixConnector(path=str(path))
            timeout = aiohttp.ClientTimeout(total=2.0)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(f"http://worker{route}") as response,
            ):
                return await response.text() if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    paths = [p for p in sorted(directory.glob("worker-*.sock")) if p != socket_path(directory, own)]
    texts = await asyncio.gather(*(one(p) for p in paths))
    return [t for t in texts if t is not None]


def merge(texts: Iterable[str]) -> str:
    """The sum of several Prometheus text expositions, sample by sample (same name and
    labels); HELP and TYPE from the first that has the family."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(
                family.name, (family.type, family.documentation, {})
            )
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # a start time per worker, not a quantity to add up
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    lines = []
    for name, (kind, doc, samples) in families.items():
        # As prometheus_client writes them: a counter's family is named with _total.
        named = f"{name}_total" if kind == "counter" else name
        lines.append(f"# HELP {named} {_escape_help(doc)}")
        lines.append(f"# TYPE {named} {kind}")
        for (sample_name, labels), value in samples.items():
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(
                f"{sample_name}{{{rendered}}} {_value(value)}"
                if labels
                else f"{sample_name} {_value(value)}"
            )
    return "\n".join(lines) + "\n"


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run `workers` copies of `kubeloop serve argv`, restart any that dies, and stop
    them all on SIGTERM or SIGINT."""
    stopping, result = False, 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with tempfile.TemporaryDirectory(prefix="kubeloop-workers-") as directory:

        def spawn(index: int) -> subprocess.Popen[bytes]:
            command = [
                sys.executable,
                "-m",
                "kubeloop",
                "serve",
                *argv,
                "--workers",
                "1",
                "--worker-of",
                directory,
                "--worker-index",
                str(index),
            ]
            return subprocess.Popen(command)

        procs = {i: spawn(i) for i in range(workers)}
        started = dict.fromkeys(procs, time.monotonic())
        early = dict.fromkeys(procs, 0)  # exits soon after a start, in a row
        log.info("Started %d worker processes", workers)
        while not stopping:
            for index, proc in list(procs.items()):
                code = proc.poll()
                if code is None or stopping:
                    continue
                if code == CANNOT_LISTEN:  # the worker said why, in one line
                    stopping, result = True, code
                    break
                early[index] = early[index] + 1 if time.monotonic() - started[index] < 30 else 0
                if early[index] >= len(RESTART_BACKOFF):
                    # It cannot start (a model that does not load): stop, so that the
                    # container restarts and Kubernetes shows the crash loop.
                    log.error("Worker %d exited with %s at every start; stopping", index, code)
                    stopping, result = True, code or 1
                    break
                delay = RESTART_BACKOFF[early[index] - 1] if early[index] else RESTART_BACKOFF[0]
                log.warning(
                    "Worker %d exited with %s; starting it again in %.1fs", index, code, delay
                )
                time.sleep(delay)
                procs[index], started[index] = spawn(index), time.monotonic()
            time.sleep(0.2)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result
