"""The gRPC side of the protocol, with tritonclient's gRPC client: health, metadata, the
same answers as REST for the same input, clear status codes, the same batcher and the
same metrics."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from kubeloop.modeldir import LoadedModel
from kubeloop.serving.grpc_server import start_grpc
from kubeloop.serving.server import ModelServer, base_url, start
from tests.modelserver import free_port
from tests.unit.test_serving import ROWS, matrix, metric_samples, model, model_dir  # noqa: F401

X = np.array(ROWS * 4, dtype=np.float64)


@pytest.fixture
def served(model: LoadedModel) -> Iterator[tuple[ModelServer, str, str]]:  # noqa: F811
    """REST and gRPC of one server, on an event loop in a background thread."""
    server = ModelServer(model.metadata, max_batch_size=64, max_batch_wait=0.02)
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


def test_health_and_metadata(served: tuple[ModelServer, str, str]) -> None:
    _, url, address = served
    grpc = client(address)
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("iris")
    meta = grpc.get_model_metadata("iris", as_json=True)
    rest = requests.get(f"{url}/v2/models/iris", timeout=10).json()
    assert meta["name"] == "iris" and meta["versions"] == rest["versions"]
    assert [i["name"] for i in meta["inputs"]] == [i["name"] for i in rest["inputs"]]
    assert "binary_tensor_data" in grpc.get_server_metadata(as_json=True)["extensions"]
    with pytest.raises(InferenceServerException, match="unknown model"):
        grpc.get_model_metadata("nosuch")


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP64", np.float64), ("FP32", np.float32), ("INT64", np.int64)]
)
def test_grpc_answers_as_rest_does(
    served: tuple[ModelServer, str, str], datatype: str, dtype: type
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


def test_bad_requests_get_clear_status_codes(served: tuple[ModelServer, str, str]) -> None:
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


def test_grpc_requests_share_the_batcher(served: tuple[ModelServer, str, str]) -> None:
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
