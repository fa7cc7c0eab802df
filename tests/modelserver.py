"""A real model server on loopback and the example training script, for the tests
that need live traffic (drift). The nodes of the local cluster are simulated, so the
server runs here, as the ModelDeployment's pod would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import requests

from tests.kubetest import ROOT, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModelServer:
    def __init__(self, model_dir: Path, port: int, name: str = "iris") -> None:
        self.model_dir, self.port, self.name = model_dir, port, name
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self, attempts: int = 3) -> None:
        """Start the server and wait until it answers ready. A port that `free_port`
        handed out can be taken by another process before the server binds it (the
        lanes run in parallel); then the server exits, and it is started again on a
        fresh port. Any other exit fails at once with what the server printed."""
        for attempt in range(attempts):
            if attempt:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
            output = self._spawn()
            if self._wait_ready(output):
                return
            text = self._output(output)
            if "address already in use" not in text.lower() or attempt == attempts - 1:
                self.stop()
                raise AssertionError(f"model server on port {self.port} exited:\n{text}")

    def _spawn(self) -> Path:
        log = Path(tempfile.mkstemp(prefix="modelserver-", suffix=".log")[1])
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kubeloop",
                    "serve",
                    "--model-dir",
                    str(self.model_dir),
                    "--name",
                    self.name,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.logs.append(log)
        return log

    def _wait_ready(self, log: Path) -> bool:
        """True once the server answers ready; False if it exited first. A server that
        is still starting after the deadline fails the test with its output."""
        proc = self.proc
        assert proc is not None

        def ready_or_exited() -> str | None:
            if proc.poll() is not None:
                return "exited"
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return "ready"
            except requests.RequestException:
                pass
            return None

        try:
            outcome = wait_for(ready_or_exited, 60, f"model server ready on port {self.port}")
        except AssertionError as exc:
            text = self._output(log)
            self.stop()
            raise AssertionError(f"{exc}\nits output:\n{text}") from None
        if outcome == "exited":
            self.proc = None
        return outcome == "ready"

    @staticmethod
    def _output(log: Path) -> str:
        return log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        for log in self.logs:
            log.unlink(missing_ok=True)
        self.logs.clear()

    def send(self, rows: np.ndarray) -> None:
        body = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.tolist(),
                }
            ]
        }
        response = requests.post(
            f"{self.url}/v2/models/{self.name}/infer", data=json.dumps(body), timeout=10
        )
        assert response.status_code == 200, response.text


def train(out: Path, shift: float = 0.0) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "train" / "train.py"),
            "--output",
            str(out),
            "--shift",
            str(shift),
        ],
        check=True,
        capture_output=True,
    )
    return out


def shifted_rows(n: int, shift: float, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_iris

    data = load_iris().data
    rng = np.random.default_rng(seed)
    rows = data[rng.integers(0, len(data), n)]
    return rows + shift * data.std(axis=0)
