"""A real model server on loopback and the example training script, for the tests
that need live traffic (drift). The nodes of the local cluster are simulated, so the
server runs here, as the ModelDeployment's pod would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
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

    def start(self) -> None:
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                return requests.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 30, "model server ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

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
