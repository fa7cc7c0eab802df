"""The Open Inference Protocol v2, transport-free: its errors, the request checks shared
by the REST and the gRPC front ends, and JSON encoding and decoding.

A front end turns its transport's request into the protocol's payload (the decoded REST
JSON body; a gRPC request is brought to the same shape) and :func:`parse_infer_request`
checks it and builds the row matrix, so both refuse the same requests with the same
words. Hand-written checks instead of pydantic, numpy for every per-row operation: this
is the hot path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeloop.modeldir import LoadedModel
from kubeloop.serving import binary

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
DATATYPES = ("FP32", "FP64", "INT64")


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP status (the gRPC front end
    maps it to its status code) and ``message`` the words both front ends answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> RequestError:
    return RequestError(400, message)


# -- JSON -----------------------------------------------------------------------------

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(payload: Any) -> bytes:
    # Bytes, not str: aiohttp wraps a str body in a slower payload object.
    return _encoder.encode(payload).encode()


# -- requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class InferRequest:
    rows: np.ndarray
    """Shape (N, F), float64, columns in the model's feature order."""
    request_id: str | None
    outputs: tuple[str, ...]


def unsupported_datatype(name: str, datatype: Any) -> RequestError:
    return bad(
        f"input {name!r}: datatype {datatype!r} not supported; use one of " + ", ".join(DATATYPES)
    )


def check_shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"input {name!r}: 'shape' must be a list of non-negative integers")
    return shape


def _size_mismatch(name: str, shape: list[int], size: int) -> RequestError:
    return bad(f"input {name!r}: shape {shape} needs {math.prod(shape)} values, got {size}")


def _tensor_values(tensor: Any, index: int) -> tuple[str, np.ndarray]:
    """Name and values of one v2 input tensor, reshaped to its declared shape."""
    if not isinstance(tensor, dict):
        raise bad(f"inputs[{index}] must be an object")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise bad(f"inputs[{index}]: 'name' must be a string")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise unsupported_datatype(name, datatype)
    shape = check_shape(tensor.get("shape"), name)
    raw = tensor.get(binary.VALUES)
    if isinstance(raw, np.ndarray):  # values decoded by the front end already
        if raw.size != math.prod(shape):
            raise _size_mismatch(name, shape, raw.size)
        return name, raw.astype(np.float64).reshape(shape)
    if "data" not in tensor:
        raise bad(f"input {name!r}: 'data' is missing")
    try:
        values = np.asarray(tensor["data"])
    except ValueError as exc:  # ragged nesting
        raise bad(f"input {name!r}: 'data' is not a regular array") from exc
    # Inferring first, then casting, refuses strings, booleans and nulls, which a direct
    # cast would parse or turn into NaN.
    allowed_kinds = "iu" if datatype == "INT64" else "iuf"
    if values.dtype.kind not in allowed_kinds:
        kind = "integers" if datatype == "INT64" else "numbers"
        raise bad(f"input {name!r}: 'data' must hold only {kind} for datatype {datatype}")
    if values.size != math.prod(shape):
        raise _size_mismatch(name, shape, values.size)
    if datatype == "FP32":
        # Out-of-range values become inf, which the finiteness check then refuses.
        with np.errstate(over="ignore"):
            values = values.astype(np.float32)
    values = values.astype(np.float64, copy=False)
    return name, values.reshape(shape)


def parse_infer_request(payload: Any, model: LoadedModel) -> InferRequest:
    """Turn a decoded v2 inference request into a row matrix for the model.

    Accepts either one tensor of shape [N, F] or one tensor per feature, each of shape
    [N] or [N, 1]: when every input is named like a feature, the request is read as
    columns, otherwise its single input as the row matrix.
    """
    if not isinstance(payload, dict):
        raise bad("the request body must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad("'inputs' must be a non-empty list of tensors")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad("'id' must be a string")
    outputs = _requested_outputs(payload, model)

    features = model.feature_names
    tensors = dict(_tensor_values(t, i) for i, t in enumerate(inputs))
    if len(tensors) != len(inputs):
        raise bad("input names must be unique")
    if all(name in features for name in tensors):
        rows = _rows_from_columns(tensors, features)
    elif len(tensors) == 1:
        ((name, rows),) = tensors.items()
        if rows.ndim != 2 or rows.shape[1] != len(features):
            raise bad(
                f"input {name!r}: shape must be [N, {len(features)}] "
                f"(features: {', '.join(features)}), got {list(rows.shape)}"
            )
    else:
        raise bad(
            f"expected one [N, {len(features)}] tensor or one tensor per feature "
            f"({', '.join(features)}), got {', '.join(tensors)}"
        )
    if rows.shape[0] == 0:
        raise bad("the batch is empty")
    if not np.isfinite(rows).all():
        if not model.allow_nan:
            raise bad("inputs must be finite numbers; this model does not accept NaN")
        if np.isinf(rows).any():
            raise bad("inputs must be finite numbers or NaN")
    return InferRequest(rows=rows, request_id=request_id, outputs=outputs)


def _rows_from_columns(tensors: dict[str, np.ndarray], features: list[str]) -> np.ndarray:
    missing = [f for f in features if f not in tensors]
    if missing:
        raise bad(f"missing inputs for features: {', '.join(missing)}")
    columns = []
    for name in features:
        column = tensors[name]
        if column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise bad(f"input {name!r}: shape must be [N] or [N, 1], got {list(column.shape)}")
        columns.append(column)
    if len({len(c) for c in columns}) != 1:
        raise bad("all feature inputs must have the same number of rows")
    return np.column_stack(columns)


def _requested_outputs(payload: dict[str, Any], model: LoadedModel) -> tuple[str, ...]:
    """Outputs named in the v2 ``outputs`` field, else ``predict`` (plus
    ``predict_proba`` when ``parameters: {"probabilities": true}``)."""
    available = (PREDICT, PREDICT_PROBA) if model.has_proba else (PREDICT,)
    requested = payload.get("outputs")
    if requested is None:
        parameters = payload.get("parameters")
        if parameters is None:
            return (PREDICT,)
        if not isinstance(parameters, dict):
            raise bad("'parameters' must be an object")
        if parameters.get("probabilities") is True:
            if not model.has_proba:
                raise bad("this model does not give probabilities")
            return (PREDICT, PREDICT_PROBA)
        return (PREDICT,)
    if not isinstance(requested, list) or not requested:
        raise bad("'outputs' must be a non-empty list of {\"name\": ...}")
    names: list[str] = []
    for entry in requested:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name not in available:
            raise bad(f"unknown output {name!r}; available: {', '.join(available)}")
        names.append(name)
    return tuple(names)


# -- answers --------------------------------------------------------------------------


def datatype_of(values: np.ndarray) -> str:
    kind = values.dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"


def output_tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    """One output as a JSON tensor, its values as a flat list."""
    datatype = datatype_of(values)
    data = values.ravel().tolist()
    if datatype == "BYTES":
        data = [str(v) for v in data]
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data}
