"""The binary tensor data extension, with tritonclient itself as the client: JSON and
binary inputs and outputs, every datatype the server reads, and clear 400s for binary
bodies that do not add up."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import deserialize_bytes_tensor

from kubeloop.modeldir import LoadedModel
from kubeloop.serving import binary
from kubeloop.serving.dataplane import DataPlane
from tests.unit.test_serving import ROWS, model, model_dir, running  # noqa: F401 (fixtures)

X = np.array(ROWS * 5, dtype=np.float64)


@pytest.fixture
def url(model: LoadedModel) -> Iterator[str]:  # noqa: F811
    server = DataPlane(model.metadata)
    server.set_model(model)
    with running(server) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(url=url.removeprefix("http://"))
    yield connection
    connection.close()


def tensor(values: np.ndarray, datatype: str, binary_data: bool = True) -> triton.InferInput:
    item = triton.InferInput("input-0", list(values.shape), datatype)
    item.set_data_from_numpy(values, binary_data=binary_data)
    return item


def test_the_clients_defaults_binary_in_and_out(
    client: triton.InferenceServerClient,
    model: LoadedModel,  # noqa: F811
) -> None:
    result = client.infer("iris", [tensor(X, "FP64")])
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 15 * 8
    assert result.as_numpy("predict").tolist() == model.estimator.predict(X).tolist()


def test_json_inputs_and_outputs(
    client: triton.InferenceServerClient,
    model: LoadedModel,  # noqa: F811
) -> None:
    outputs = [triton.InferRequestedOutput("predict", binary_data=False)]
    result = client.infer("iris", [tensor(X, "FP64", binary_data=False)], outputs=outputs)
    assert "data" in result.get_response()["outputs"][0]
    assert result.as_numpy("predict").tolist() == model.estimator.predict(X).tolist()


@pytest.mark.parametrize(
    ("datatype", "dtype"), [("FP64", np.float64), ("FP32", np.float32), ("INT64", np.int64)]
)
def test_every_datatype_the_server_reads(
    client: triton.InferenceServerClient,
    model: LoadedModel,  # noqa: F811
    datatype: str,
    dtype: type,
) -> None:
    values = (X * 10).astype(dtype) if datatype == "INT64" else X.astype(dtype)
    result = client.infer("iris", [tensor(values, datatype)])
    expected = model.estimator.predict(values.astype(np.float64))
    assert result.as_numpy("predict").tolist() == expected.tolist()


def test_binary_and_json_outputs_in_one_answer(
    client: triton.InferenceServerClient,
    model: LoadedModel,  # noqa: F811
) -> None:
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=False),
        triton.InferRequestedOutput("predict_proba", binary_data=True),
    ]
    result = client.infer("iris", [tensor(X, "FP64")], outputs=outputs)
    proba = result.as_numpy("predict_proba")
    assert proba.dtype == np.float64 and proba.shape == (15, 3)
    np.testing.assert_array_equal(proba, model.estimator.predict_proba(X))
    assert result.as_numpy("predict").tolist() == model.estimator.predict(X).tolist()


def test_bytes_outputs_decode_with_the_clients_own_reader() -> None:
    values = np.array([["setosa", "versicolor"], ["virginica", "ü"]], dtype=object)
    decoded = deserialize_bytes_tensor(binary.encode(values, "BYTES"))
    assert [b.decode() for b in decoded] == ["setosa", "versicolor", "virginica", "ü"]


def post(url: str, header: bytes, blob: bytes, length: int | None = None) -> requests.Response:
    return requests.post(
        f"{url}/v2/models/iris/infer",
        data=header + blob,
        timeout=10,
        headers={binary.HEADER: str(len(header) if length is None else length)},
    )


def header(size: int, shape: list[int], datatype: str = "FP64") -> bytes:
    return (
        b'{"inputs":[{"name":"x","datatype":"%s","shape":%s,'
        b'"parameters":{"binary_data_size":%d}}]}' % (datatype.encode(), str(shape).encode(), size)
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            lambda: (header(16, [1, 4]), b"\0" * 16),
            "does not match shape [1, 4] of FP64 (32 bytes)",
        ),
        (lambda: (header(32, [1, 4]), b"\0" * 8), "the body ends before its 32 bytes"),
        (lambda: (header(32, [1, 4]), b"\0" * 40), "8 bytes of binary data after the last"),
        (
            lambda: (header(16, [1, 4], "INT32"), b"\0" * 16),
            "binary datatype 'INT32' not supported",
        ),
    ],
)
def test_binary_bodies_that_do_not_add_up_get_400(url: str, body: object, message: str) -> None:
    head, blob = body()  # type: ignore[operator]
    answer = post(url, head, blob)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_a_header_length_outside_the_body_gets_400(url: str) -> None:
    answer = post(url, header(32, [1, 4]), b"\0" * 32, length=10_000)
    assert answer.status_code == 400 and "outside the body" in answer.json()["error"]
    cut = post(url, b'{"inputs":[]}', b"", length=5)  # the JSON header cut short
    assert cut.status_code == 400 and "not valid JSON" in cut.json()["error"], cut.text


def test_one_binary_tensor_per_feature_in_order(
    client: triton.InferenceServerClient,
    model: LoadedModel,  # noqa: F811
) -> None:
    names = model.feature_names
    inputs = []
    for index, name in enumerate(names):
        column = triton.InferInput(name, [len(X)], "FP64")
        column.set_data_from_numpy(np.ascontiguousarray(X[:, index]))
        inputs.append(column)
    result = client.infer("iris", inputs)
    assert result.as_numpy("predict").tolist() == model.estimator.predict(X).tolist()
