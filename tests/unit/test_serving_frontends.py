"""The REST and the gRPC front end answer alike: the same cases (good requests, a wrong
model name or version, inputs of the wrong shape or type, metadata, readiness, a model
still loading, a failing model) sent through both, on one data plane, give the same
status class, the same error words and the same outputs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import requests

from kubeloop.modeldir import LoadedModel
from kubeloop.serving import binary
from kubeloop.serving.dataplane import DataPlane
from kubeloop.serving.grpc import start_grpc
from kubeloop.serving.grpc_schema import SERVICE, message
from kubeloop.serving.rest import base_url, start
from tests.modelserver import free_port
from tests.unit.test_serving import ROWS, model, model_dir  # noqa: F401 (fixtures)

TIMEOUT = 10
# The gRPC status codes the protocol's HTTP statuses become.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}
CONTENTS = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents"}
FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
COLUMNS = list(enumerate(FEATURES))


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


@dataclass
class Case:
    kind: str  # infer, model_metadata, model_ready, server_metadata, server_ready
    model: str = "iris"
    version: str | None = None
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    id: str | None = None


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def matrix(rows: list[list[float]], datatype: str = "FP64", **change: Any) -> list[Tensor]:
    tensor = Tensor("input-0", datatype, [len(rows), len(rows[0])], flat(rows))
    return [dataclasses.replace(tensor, **change)]


GOOD = [
    Case("infer", inputs=matrix(ROWS), outputs=["predict", "predict_proba"], id="r-1"),
    Case("infer", inputs=matrix(ROWS)),
    Case("infer", inputs=matrix([[5, 3, 1, 0], [7, 3, 5, 2]], "INT64")),
    Case("infer", inputs=[Tensor(f, "FP32", [3], [r[i] for r in ROWS]) for i, f in COLUMNS]),
    Case("model_metadata"),
    Case("model_ready"),
    Case("server_metadata"),
    Case("server_ready"),
]
REFUSED = [
    Case("infer", model="nope", inputs=matrix(ROWS)),
    Case("infer", version="0", inputs=matrix(ROWS)),
    Case("model_metadata", model="nope"),
    Case("model_metadata", version="0"),
    Case("model_ready", model="nope"),
    Case("model_ready", version="0"),
    Case("infer", inputs=matrix([r[:3] for r in ROWS])),
    Case("infer", inputs=matrix(ROWS, shape=[2, 4])),
    Case("infer", inputs=matrix(ROWS, shape=[-3, -4])),
    Case("infer", inputs=matrix(ROWS, datatype="FP16")),
    Case("infer", inputs=matrix(ROWS, shape=[0, 4], data=[])),
    Case("infer", inputs=matrix(ROWS, data=[math.nan] * 12)),
    Case("infer", inputs=matrix(ROWS) + matrix(ROWS)),
    Case("infer", inputs=[Tensor(f, "FP64", [3], [1, 2, 3]) for f in FEATURES[:3]]),
    Case("infer", inputs=matrix(ROWS), outputs=["nope"]),
]


@dataclass
class Answer:
    status: int
    error: str | None = None
    body: Any = None


# -- the two clients ------------------------------------------------------------------


def rest_call(url: str, case: Case) -> Answer:
    path = f"{url}/v2/models/{case.model}" + (f"/versions/{case.version}" if case.version else "")
    if case.kind == "infer":
        body: dict[str, Any] = {"inputs": [dataclasses.asdict(t) for t in case.inputs]}
        if case.outputs:
            body["outputs"] = [{"name": name} for name in case.outputs]
        if case.id:
            body["id"] = case.id
        # json.dumps writes NaN as the literal the server reads (requests' json= won't).
        response = requests.post(f"{path}/infer", data=json.dumps(body), timeout=TIMEOUT)
    elif case.kind.startswith("server"):
        suffix = "/health/ready" if case.kind == "server_ready" else ""
        response = requests.get(f"{url}/v2{suffix}", timeout=TIMEOUT)
    else:
        response = requests.get(path + ("/ready" if case.kind == "model_ready" else ""),
                                timeout=TIMEOUT)
    answer = response.json()
    if "error" in answer:
        return Answer(response.status_code, answer["error"])
    if case.kind.endswith("ready"):  # REST says "not ready" with its status too
        assert response.status_code == (200 if answer["ready"] else 503)
        return Answer(200, body=answer)
    assert response.status_code == 200
    return Answer(200, body=answer)


def grpc_call(channel: grpc.Channel, case: Case) -> Answer:
    kind = "model_infer" if case.kind == "infer" else case.kind
    method = "".join(part.capitalize() for part in kind.split("_"))
    call = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message(f"{method}Response").FromString,
    )
    request = message(f"{method}Request")()
    if case.kind == "infer":
        request.model_name, request.model_version = case.model, case.version or ""
        request.id = case.id or ""
        for tensor in case.inputs:
            item = request.inputs.add(name=tensor.name, datatype=tensor.datatype)
            item.shape.extend(tensor.shape)
            if tensor.datatype in CONTENTS:
                getattr(item.contents, CONTENTS[tensor.datatype]).extend(tensor.data)
        for name in case.outputs:
            request.outputs.add(name=name)
    elif case.kind.startswith("model"):
        request.name, request.version = case.model, case.version or ""
    try:
        answer = call(request, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return Answer(HTTP_STATUS[exc.code()], exc.details())
    return Answer(200, body=as_rest(case, answer))


def as_rest(case: Case, answer: Any) -> Any:
    """A gRPC answer in the shape of the REST one, decoded from its own fields."""
    if case.kind.endswith("ready"):
        return {"ready": answer.ready}
    if case.kind == "server_metadata":
        return {"name": answer.name, "version": answer.version,
                "extensions": list(answer.extensions)}
    if case.kind == "model_metadata":
        specs = [
            [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]
            for specs in (answer.inputs, answer.outputs)
        ]
        return {"name": answer.name, "versions": list(answer.versions),
                "platform": answer.platform, "inputs": specs[0], "outputs": specs[1]}
    outputs = []
    for tensor, raw in zip(answer.outputs, answer.raw_output_contents, strict=True):
        values = np.frombuffer(raw, dtype=binary.OUTPUT_TYPES[tensor.datatype])
        outputs.append({"name": tensor.name, "datatype": tensor.datatype,
                        "shape": list(tensor.shape), "data": values.tolist()})
    rest = {"model_name": answer.model_name, "model_version": answer.model_version,
            "outputs": outputs}
    return rest | ({"id": answer.id} if answer.id else {})


@contextmanager
def both_front_ends(plane: DataPlane) -> Iterator[tuple[str, grpc.Channel]]:
    """REST and gRPC on one data plane, on an event loop in a background thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    grpc_port = free_port()

    async def up() -> tuple[Any, Any]:
        return await start(plane, "127.0.0.1", 0), await start_grpc(plane, "127.0.0.1", grpc_port)

    runner, grpc_server = asyncio.run_coroutine_threadsafe(up(), loop).result(TIMEOUT)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        yield base_url(runner.addresses[0]), channel
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(grpc_server.stop(1), loop).result(TIMEOUT)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)


def answers(plane: DataPlane, cases: list[Case]) -> list[tuple[Case, Answer, Answer]]:
    with both_front_ends(plane) as (url, channel):
        return [(case, rest_call(url, case), grpc_call(channel, case)) for case in cases]


# -- the cases ------------------------------------------------------------------------


def test_good_requests_get_the_same_answers(model: LoadedModel) -> None:  # noqa: F811
    plane = DataPlane(model.metadata)
    plane.set_model(model)
    version = model.metadata.version
    versioned = [c for c in GOOD if not c.kind.startswith("server")]
    cases = GOOD + [dataclasses.replace(c, version=version) for c in versioned]
    for case, rest, grpc_answer in answers(plane, cases):
        assert rest.status == grpc_answer.status == 200, (case, rest, grpc_answer)
        assert rest.body == grpc_answer.body, case
    # And they are the model's own: every class, the version, the id.
    first = answers(plane, GOOD[:1])[0][1].body
    assert first["model_version"] == version and first["id"] == "r-1"
    assert first["outputs"][0]["data"] == model.estimator.predict(np.array(ROWS)).tolist()


def test_refused_requests_get_the_same_status_and_words(model: LoadedModel) -> None:  # noqa: F811
    plane = DataPlane(model.metadata)
    plane.set_model(model)
    for case, rest, grpc_answer in answers(plane, REFUSED):
        assert rest.status in (400, 404) and rest.error, (case, rest)
        assert (grpc_answer.status, grpc_answer.error) == (rest.status, rest.error), case
    words = {c.model + (c.version or ""): rest.error for c, rest, _ in answers(plane, REFUSED[:2])}
    assert words == {
        "nope": "model 'nope' not found: this server serves 'iris'",
        "iris0": f"model 'iris' has no version '0': it serves {model.metadata.version!r}",
    }


def test_a_model_still_loading_and_a_failing_model_are_answered_alike(
    model: LoadedModel,  # noqa: F811
) -> None:
    loading = DataPlane(model.metadata)
    cases = [GOOD[0], Case("server_ready"), Case("model_ready"), Case("model_metadata")]
    for case, rest, grpc_answer in answers(loading, cases):
        assert (rest.status, rest.error, rest.body) == (
            grpc_answer.status, grpc_answer.error, grpc_answer.body), case
    got = answers(loading, cases[:3])
    assert got[0][1] == Answer(503, "model 'iris' is still loading")
    assert got[1][1].body == got[2][1].body == {"ready": False}

    class Exploding:
        classes_ = np.array([0, 1, 2])

        def predict(self, rows: np.ndarray) -> np.ndarray:
            raise RuntimeError("boom")

    failing = DataPlane(model.metadata, max_batch_size=1)
    failing.set_model(dataclasses.replace(model, estimator=Exploding()))
    ((_, rest, grpc_answer),) = answers(failing, [Case("infer", inputs=matrix(ROWS))])
    assert rest == grpc_answer == Answer(500, "internal error while predicting; see server log")


@pytest.mark.parametrize("kind", ["infer", "model_metadata", "model_ready"])
def test_the_version_is_optional_and_checked_on_both(
    model: LoadedModel, kind: str  # noqa: F811
) -> None:
    plane = DataPlane(model.metadata)
    plane.set_model(model)
    inputs = matrix(ROWS) if kind == "infer" else []
    cases = [Case(kind, inputs=inputs, version=v) for v in (None, model.metadata.version, "x")]
    statuses = [(rest.status, grpc_answer.status) for _, rest, grpc_answer in answers(plane, cases)]
    assert statuses == [(200, 200), (200, 200), (404, 404)]
