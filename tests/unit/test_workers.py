"""`kubeloop serve --workers N`: N processes on one port, their metrics seen whole, a
worker that dies started again, and a model that cannot load still a crash."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from kubeloop.canary.figures import parse_sample
from kubeloop.serving.workers import merge
from tests.kubetest import wait_for
from tests.modelserver import free_port, train
from tests.unit.test_serving import ROWS, matrix, subprocess_env


def exposition(requests_ok: int, durations: list[float]) -> str:
    """What one worker's registry writes (prometheus_client itself)."""
    registry = CollectorRegistry()
    counter = Counter(
        "kubeloop_model_requests", "Requests.", ["model", "status"], registry=registry
    )
    counter.labels("iris", "200").inc(requests_ok)
    histogram = Histogram(
        "kubeloop_model_request_duration_seconds",
        "Time.",
        ["model"],
        buckets=(0.01, 0.1),
        registry=registry,
    )
    for value in durations:
        histogram.labels("iris").observe(value)
    return generate_latest(registry).decode()


def values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_merge_adds_up_counters_and_histograms_and_drops_start_times() -> None:
    merged = merge([exposition(3, [0.005, 0.05]), exposition(5, [0.5])])
    got = values(merged)
    assert got['kubeloop_model_requests_total{model="iris",status="200"}'] == 8.0
    bucket = 'kubeloop_model_request_duration_seconds_bucket{le="%s",model="iris"}'
    assert [got[bucket % le] for le in ("0.01", "0.1", "+Inf")] == [1.0, 2.0, 3.0]
    assert got['kubeloop_model_request_duration_seconds_count{model="iris"}'] == 3.0
    assert not any("_created" in name for name in got)
    # What reads a model server's /metrics reads the merged text the same way.
    sample = parse_sample(merged, "iris")
    assert (sample.requests, sample.buckets[-1][1]) == (8.0, 3.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("model") / "iris")


@pytest.fixture
def server(model_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeloop",
            "serve",
            "--model-dir",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=subprocess_env(KUBELOOP_LOG_FORMAT="text"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: both_listening(proc.pid) and ready(url), 60, "two workers listening")
        yield proc, url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def both_listening(parent: int) -> bool:
    """Both workers loaded and on the port (a worker binds once its model is loaded, and
    its own metrics socket with it)."""
    found = workers_of(parent)
    return len(found) == 2 and all(
        (directory / f"worker-{index}.sock").exists() for index, (_, directory) in found.items()
    )


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def workers_of(parent: int) -> dict[int, tuple[int, Path]]:
    """index -> (pid, the workers' directory), from the children's command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if "--worker-index" in argv:
            index = int(argv[argv.index("--worker-index") + 1])
            found[index] = (int(entry.name), Path(argv[argv.index("--worker-of") + 1]))
    return found


def own_requests(
    directory: Path, index: int, metric: str = "kubeloop_model_requests_total"
) -> float:
    """What one worker alone counted, from its own unix socket."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(str(directory / f"worker-{index}.sock"))
        conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return sum(
        v
        for k, v in values(data.decode().split("\r\n\r\n", 1)[1]).items()
        if k.startswith(metric)
    )


def send(url: str, count: int) -> None:
    for _ in range(count):
        answer = requests.post(
            f"{url}/v2/models/iris/infer",
            json=matrix(ROWS),
            timeout=10,
            headers={"Connection": "close"},
        )
        assert answer.status_code == 200, answer.text


def total(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(v for k, v in values(text).items() if k.startswith("kubeloop_model_requests_total"))


def test_two_workers_share_the_port_and_metrics_add_up(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = server
    send(url, 60)
    found = workers_of(proc.pid)
    mine = [own_requests(directory, index) for index, (_, directory) in found.items()]
    assert all(m > 0 for m in mine), mine  # the kernel spread the connections
    assert sum(mine) == 60 and total(url) == 60


def test_labels_posted_to_different_workers_add_up(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """A label never needs the pod (here: the process) that answered: each worker counts
    the records it receives, and /metrics on the port is their sum; the labelled rows
    each worker keeps are all read back through the port."""
    proc, url = server
    version = requests.post(f"{url}/v2/models/iris/infer", json=matrix(ROWS), timeout=10).json()[
        "model_version"
    ]
    record = {"label": "versicolor", "prediction": 0}
    for i in range(40):
        kept = dict(record, inputs=[float(i), 3.0, 4.0, 1.0])
        answer = requests.post(
            f"{url}/v2/models/iris/feedback",
            json={"model_version": version, "records": [record, kept]},
            timeout=10,
            headers={"Connection": "close"},
        )
        assert answer.status_code == 200, answer.text
    metric = "kubeloop_model_feedback_confusion_total"
    found = workers_of(proc.pid)
    mine = [own_requests(directory, index, metric) for index, (_, directory) in found.items()]
    assert all(m > 0 for m in mine), mine  # the kernel spread the connections
    text = requests.get(f"{url}/metrics", timeout=10).text
    cell = (
        f'{metric}{{label="versicolor",model="iris",prediction="setosa",version="{version}"}}'
    )
    assert sum(mine) == 80 and values(text)[cell] == 80
    rows = requests.get(f"{url}/v2/models/iris/feedback/rows", timeout=10).json()
    assert sorted(r[0] for r in rows["inputs"]) == [float(i) for i in range(40)]
    assert rows["labels"] == ["versicolor"] * 40 and rows["evicted"] == 0


def test_a_worker_that_dies_is_started_again(server: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, url = server
    before = workers_of(proc.pid)
    os.kill(before[0][0], signal.SIGKILL)
    wait_for(
        lambda: (
            (w := workers_of(proc.pid)).get(0, (before[0][0],))[0] != before[0][0] and len(w) == 2
        ),
        30,
        "worker 0 started again",
    )
    directory = before[0][1]
    wait_for(lambda: (directory / "worker-0.sock").exists() and ready(url), 30, "serving")
    send(url, 20)
    assert proc.poll() is None


def test_a_model_that_cannot_load_ends_the_server(tmp_path: Path, model_dir: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.joblib").write_bytes(b"not a model")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeloop",
            "serve",
            "--model-dir",
            str(broken),
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--workers",
            "2",
        ],
        env=subprocess_env(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert b"cannot unpickle" in result.stderr + result.stdout
