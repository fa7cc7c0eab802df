"""The gRPC side of the protocol, with tritonclient's gRPC client: health, metadata, the
same answers as REST for the same input, clear status codes, the same batcher and the
same metrics."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from kubeloop.modeldir import LoadedModel
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.grpc import start_grpc
from kubeloop.serving.rest import base_url, start
from kubeloop.serving.workers import CANNOT_LISTEN
from tests.modelserver import free_port
from tests.unit.test_serving import (  # noqa: F401 (fixtures)
    ROWS,
    matrix,
    metric_samples,
    model,
    model_dir,
    subprocess_env,
)

X = np.array(ROWS * 4, dtype=np.float64)


@pytest.fixture
def served(model: LoadedModel) -> Iterator[tuple[DataPlane, str, str]]:  # noqa: F811
    """REST and gRPC of one server, on an event loop in a background thread."""
    server = DataPlane(model.metadata, max_batch_size=64, max_batch_wait=0.02)
    server.set_model(model)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    grpc_port = free_port()

    async def both() -> tuple[Any, Any]:
        return await start(server, "127.0.0.1", 0), await start_grpc(server, "127.0.0.1", grpc_port)

    runner, grpc_server = asyncio.run_coroutine_threadsafe(both(), loop).result(10)
    try:
        yield server, base_url(runner.addresses[0]), f"127.0.0.1:{grpc_port}"
    finally:
        asyncio.run_coroutine_threadsafe(grpc_server.stop(1), loop).result(10)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def client(address: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=address)


def tensor(values: np.ndarray, datatype: str) -> triton.InferInput:
    item = triton.InferInput("input-0", list(values.shape), datatype)
    item.set_data_from_numpy(values)
    return item


def test_health_and_metadata(served: tuple[DataPlane, str, str]) -> None:
    _, url, address = served
    grpc = client(address)
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("iris")
    meta = grpc.get_model_metadata("iris", as_json=True)
    rest = requests.get(f"{url}/v2/models/iris", timeout=10).json()
    assert meta["name"] == "iris" and meta["versions"] == rest["versions"]
    assert [i["name"] for i in meta["inputs"]] == [i["name"] for i in rest["inputs"]]
    assert "binary_tensor_data" in grpc.get_server_metadata(as_json=True)["extensions"]
    with pytest.raises(
        InferenceServerException, match="model 'nosuch' not found: this server serves 'iris'"
    ):
        grpc.get_model_metadata("nosuch")


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP64", np.float64), ("FP32", np.float32), ("INT64", np.int64)]
)
def test_grpc_answers_as_rest_does(
    served: tuple[DataPlane, str, str], datatype: str, dtype: type
) -> None:
    _, url, address = served
    values = (X * 10).astype(dtype) if datatype == "INT64" else X.astype(dtype)
    outputs = [triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")]
    result = client(address).infer("iris", [tensor(values, datatype)], outputs=outputs)
    rest = requests.post(
        f"{url}/v2/models/iris/infer",
        timeout=10,
        json={
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": list(values.shape),
                    "data": values.tolist(),
                }
            ],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        },
    ).json()["outputs"]
    assert result.as_numpy("predict").tolist() == rest[0]["data"]
    np.testing.assert_allclose(result.as_numpy("predict_proba").ravel(), rest[1]["data"])


def test_bad_requests_get_clear_status_codes(served: tuple[DataPlane, str, str]) -> None:
    _, url, address = served
    grpc = client(address)
    with pytest.raises(InferenceServerException) as bad:
        grpc.infer("iris", [tensor(X[:, :3].copy(), "FP64")])
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shape must be [N, 4]" in bad.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        grpc.infer("nosuch", [tensor(X, "FP64")])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    grpc.infer("iris", [tensor(X, "FP64")])
    samples = metric_samples(url)
    counted = {
        dict(labels)["status"]: v
        for (name, labels), v in samples.items()
        if name == "kubeloop_model_requests_total"
    }
    assert counted == {"200": 1.0, "400": 1.0, "404": 1.0}


def test_grpc_requests_share_the_batcher(served: tuple[DataPlane, str, str]) -> None:
    server, _, address = served
    rows = [X[i : i + 1].copy() for i in range(len(X))]
    with ThreadPoolExecutor(len(rows)) as pool:
        results = list(
            pool.map(
                lambda r: client(address).infer("iris", [tensor(r, "FP64")]).as_numpy("predict"),
                rows,
            )
        )
    for row, result in zip(rows, results, strict=True):
        assert result.tolist() == server.model.estimator.predict(row).tolist()  # type: ignore[union-attr]
    assert server.batcher is not None and server.batcher.batches < len(rows)


def answers_http(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
    except requests.ConnectionError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_grpc_port_is_one_line_and_an_exit_with_nothing_listening(
    model_dir: Path, workers: int  # noqa: F811
) -> None:
    """grpcio refuses a taken port with RuntimeError: the server must say so in one line
    of its log, stop with CANNOT_LISTEN and leave nothing listening, not crash with a
    traceback (or be started again by the supervisor, for ever) beside a live REST side."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        process = subprocess.Popen(
            [
                sys.executable, "-m", "kubeloop", "serve", "--model-dir", str(model_dir),
                "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
                "--workers", str(workers),
            ],
            env=subprocess_env(KUBELOOP_LOG_FORMAT="text"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            listening = answers_http(port)
            process.kill()
            out, _ = process.communicate()
            pytest.fail(f"still running after 60 s (REST answering: {listening}):\n{out}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == CANNOT_LISTEN, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "ERROR" in line or "Error" in line]
    assert errors and all(
        f"Failed to listen for gRPC on 127.0.0.1:{grpc_port}" in line for line in errors
    ), out
    # Nothing left of it: the REST port is free to bind again.
    deadline = time.monotonic() + 10
    while answers_http(port):
        assert time.monotonic() < deadline, "the REST side still answers"
        time.sleep(0.1)
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
