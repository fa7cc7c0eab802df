"""The binary tensor data extension of the Open Inference Protocol's REST side.

What tritonclient sends by default: the body starts with a JSON header of
`Inference-Header-Content-Length` bytes; the raw tensors follow, in the order of the
inputs that carry `parameters.binary_data_size`, little-endian, row-major. Outputs are
answered the same way when the request asks for it (`parameters.binary_data_output`,
or `parameters.binary_data` on one requested output). Raw tensors skip the parsing of
numbers from text, the largest cost of a JSON request of many rows.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

HEADER = "Inference-Header-Content-Length"
# Where a decoded binary input's values wait for the request parser (a JSON body can
# only ever put lists under this key, never an ndarray).
VALUES = "__binary_values__"
# Datatypes the server reads, as little-endian numpy types.
INPUT_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}
OUTPUT_TYPES = {"FP64": "<f8", "INT64": "<i8", "BOOL": "|b1"}

Bad = Callable[[str], Exception]


def split(body: bytes, header_length: str | None, bad: Bad) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it (empty without the header field)."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise bad(f"{HEADER} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise bad(f"{HEADER} {length} is outside the body of {len(body)} bytes")
    return body[:length], body[length:]


def _binary_size(tensor: dict[str, Any], bad: Bad) -> int | None:
    parameters = tensor.get("parameters")
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise bad(f"input {tensor.get('name')!r}: binary_data_size must be a non-negative integer")
    return size


def attach_inputs(payload: Any, blob: bytes, bad: Bad) -> None:
    """Decode each binary input from `blob` into its tensor (under VALUES), checking that
    the sizes match the shapes and use the blob exactly."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    offset = 0
    for tensor in inputs if isinstance(inputs, list) else []:
        if not isinstance(tensor, dict):
            continue
        size = _binary_size(tensor, bad)
        if size is None:
            continue
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if datatype not in INPUT_TYPES:
            raise bad(
                f"input {name!r}: binary datatype {datatype!r} not supported; use one of "
                + ", ".join(INPUT_TYPES)
            )
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"input {name!r}: 'shape' must be a list of non-negative integers")
        dtype = np.dtype(INPUT_TYPES[datatype])
        if size != math.prod(shape) * dtype.itemsize:
            raise bad(
                f"input {name!r}: binary_data_size {size} does not match shape {shape} of "
                f"{datatype} ({math.prod(shape) * dtype.itemsize} bytes)"
            )
        if "data" in tensor:
            raise bad(f"input {name!r}: both 'data' and binary data given")
        if offset + size > len(blob):
            raise bad(f"input {name!r}: the body ends before its {size} bytes of binary data")
        tensor[VALUES] = np.frombuffer(blob, dtype=dtype, count=math.prod(shape), offset=offset)
        offset += size
    if offset != len(blob):
        raise bad(f"{len(blob) - offset} bytes of binary data after the last binary input")


def wanted(payload: Any, requested: Sequence[str]) -> set[str]:
    """The outputs to answer as binary data."""
    if not isinstance(payload, dict):
        return set()
    parameters = payload.get("parameters")
    everything = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    chosen = set(requested) if everything else set()
    for entry in payload.get("outputs") or []:
        if not isinstance(entry, dict):
            continue
        own, name = entry.get("parameters"), entry.get("name")
        if (
            isinstance(name, str)
            and isinstance(own, dict)
            and isinstance(own.get("binary_data"), bool)
        ):
            if own["binary_data"]:
                chosen.add(name)
            else:
                chosen.discard(name)
    return chosen


def encode(values: np.ndarray, datatype: str) -> bytes:
    """One output tensor's raw bytes: little-endian numbers, or BYTES elements each
    prefixed with its length (4 bytes, little-endian)."""
    if datatype == "BYTES":
        parts = []
        for item in values.ravel().tolist():
            data = str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=OUTPUT_TYPES[datatype]).tobytes()
